"""The study's arms: every intervention and control built from one probe run's scores.

Arm names are ``<method>@<percent>[#<replicate>][+tm]``; ``+tm`` is the token-matched variant (the retrain runs as
many optimizer steps as the probe, since pruning removes steps too).
"""

import dataclasses

import numpy as np

from gdc import interventions as iv
from gdc.errors import ConfigError
from gdc.studies.carto.config import StudyConfig


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
