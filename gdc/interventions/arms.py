"""The study's arms: every intervention and control built from one probe run's scores.

Arm names are ``<method>@<percent>[#<replicate>][+tm]``; ``+tm`` is the token-matched variant (the retrain runs as
many optimizer steps as the probe, since pruning removes steps too).
"""

import dataclasses

import numpy as np

from gdc import interventions as iv
from gdc.errors import ConfigError

METHODS = (
    "prune_m",  # top-p% by m (never-learned last; ties by upward variation, then seeded random)
    "prune_m_sweep",  # top-p% by m averaged over the eps sweep (no single threshold; ties as prune_m)
    "prune_upward",  # control: top-p% by upward variation (the eps-free sum of loss increases)
    "prune_random",  # control: random p%, `random_controls` independent subsets
    "prune_d",  # control: top-p% by difficulty d
    "prune_low_final_loss",  # control: the p% with the lowest final loss (the loss-based memorization score)
    "drop_noisy",  # remove the Noisy-Outlier quadrant
    "downweight_hotspot",  # loss weight alpha on Hotspot-Memorized
    "downweight_random",  # control: alpha on a random set of the same size
    "upsample_hard",  # sampling multiplicity gamma on Ambiguous-Hard
)
EVALUATORS = ("perplexity", "extraction", "exposure", "mia")
KNOWN_EVALUATORS = (*EVALUATORS, "exposure_inserted")  # exposure of the inserted canaries only


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    seeds: tuple = (0, 1, 2)  # each seed: probe, score, every arm, retrain, evaluate
    methods: tuple = METHODS
    prune_fractions: tuple = (0.05, 0.10)
    random_controls: int = 3
    alpha: float = 0.5
    gamma: float = 2.0
    token_matched: bool = True  # add "+tm" retrains (as many steps as the probe) of prune_m and prune_random#0
    eps: float = -1.0  # learn threshold for scoring; < 0: the tracker's own eps_low/eps_high
    eps_kind: str = "absolute"
    hysteresis: float = -1.0  # forget threshold (same kind); < 0: single threshold (or the tracker's eps_high)
    eps_sweep: tuple = ()  # absolute thresholds for the ranking-stability sweep; () picks quantiles of final losses
    q_d: float = 50.0
    q_m: float = 50.0
    evaluators: tuple = EVALUATORS
    reference: bool = True  # canary data: also train a canary-free reference model for the calibrated MIA

    def validate(self) -> None:
        if not self.seeds or not all(isinstance(s, int) for s in self.seeds):
            raise ConfigError(f"study.seeds={self.seeds!r}: need a non-empty tuple of ints.")
        for m in self.methods:
            if m not in METHODS:
                raise ConfigError(f"study.methods: {m!r} is not one of {METHODS}.")
        for e in self.evaluators:
            if e not in KNOWN_EVALUATORS:
                raise ConfigError(f"study.evaluators: {e!r} is not one of {KNOWN_EVALUATORS}.")
        if {"exposure", "exposure_inserted"} <= set(self.evaluators):
            raise ConfigError("study.evaluators has both 'exposure' and 'exposure_inserted' (a part of it): keep one.")
        if not all(0.0 < f < 1.0 for f in self.prune_fractions):
            raise ConfigError(f"study.prune_fractions={self.prune_fractions}: each must be in (0, 1).")
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"study.alpha={self.alpha}: must be in [0, 1] (a down-weight).")
        if self.gamma < 1.0:
            raise ConfigError(f"study.gamma={self.gamma}: must be >= 1 (an up-sampling factor).")
        if self.random_controls < 1:
            raise ConfigError(f"study.random_controls={self.random_controls}: must be >= 1.")
        if self.eps_kind not in ("absolute", "percentile", "relative"):
            raise ConfigError(f"study.eps_kind={self.eps_kind!r} is not one of ('absolute', 'percentile', 'relative').")


def build_arms(scores: dict[str, np.ndarray], cfg: StudyConfig, seed: int) -> list[tuple[iv.Artefact, dict]]:
    """Every arm for one seed: (artefact, train-config overrides). Pure: same scores and seed, same arms."""
    n = len(scores["m_N"])
    quadrant_N = scores["quadrant_N"]
    arms: list[tuple[iv.Artefact, dict]] = []
    for f in cfg.prune_fractions:
        pct = f"{round(100 * f)}"
        prunes = []
        m_scores = {"prune_m": ("m_rank_N", "m (never-learned ranked last)")}
        m_scores["prune_m_sweep"] = ("m_sweep_N", "m averaged over the eps sweep")
        for method, (key, label) in m_scores.items():
            if method not in cfg.methods:
                continue
            if key not in scores:
                raise ConfigError(
                    f"study.methods has {method!r} but the scores have no {key} (scored before it existed): "
                    "delete seed_S/probe/scores and rerun --mode=score."
                )
            prunes.append(
                iv.prune_top(
                    scores[key],
                    f,
                    f"{method}@{pct}",
                    tie_break_N=scores["uv_N"],
                    seed=seed,
                    score=label,
                    tie_break="upward variation, then seeded",
                )
            )
        if "prune_upward" in cfg.methods:
            prunes.append(iv.prune_top(scores["uv_N"], f, f"prune_upward@{pct}", seed=seed, score="upward variation"))
        if "prune_d" in cfg.methods:
            prunes.append(iv.prune_top(scores["d_N"], f, f"prune_d@{pct}", seed=seed, score="d"))
        if "prune_low_final_loss" in cfg.methods:
            prunes.append(
                iv.prune_top(-scores["final_loss_N"], f, f"prune_low_final_loss@{pct}", seed=seed, score="-final loss")
            )
        if "prune_random" in cfg.methods:
            prunes += [
                iv.prune_random(n, f, f"prune_random@{pct}#{r}", seed=seed * 1000 + r)
                for r in range(cfg.random_controls)
            ]
        arms += [(a, {}) for a in prunes]
        if cfg.token_matched:
            arms += [
                (dataclasses.replace(a, name=a.name + "+tm"), {"token_matched": True})
                for a in prunes
                if a.name.startswith("prune_m@") or a.name.startswith("prune_random@") and a.name.endswith("#0")
            ]
    if "drop_noisy" in cfg.methods:
        arms.append((iv.remove(np.flatnonzero(quadrant_N == iv.NOISY), n, "drop_noisy", quadrant="Noisy-Outlier"), {}))
    hot = np.flatnonzero(quadrant_N == iv.HOTSPOT)
    if "downweight_hotspot" in cfg.methods:
        arms.append((iv.downweight(hot, cfg.alpha, n, "downweight_hotspot", quadrant="Hotspot-Memorized"), {}))
    if "downweight_random" in cfg.methods:
        for r in range(cfg.random_controls):
            ids = np.random.default_rng([seed, 13, r]).choice(n, len(hot), replace=False)
            arms.append(
                (iv.downweight(ids, cfg.alpha, n, f"downweight_random#{r}", control="random, size of hotspots"), {})
            )
    if "upsample_hard" in cfg.methods:
        hard = np.flatnonzero(quadrant_N == iv.HARD)
        arms.append((iv.upsample(hard, cfg.gamma, n, "upsample_hard", seed=seed, quadrant="Ambiguous-Hard"), {}))
    return arms
