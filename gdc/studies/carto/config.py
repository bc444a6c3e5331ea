"""The GenDataCarto study's config: a training run (``gdc/train/config.py``) plus the ``study`` section.

``study`` says which seeds to run, which arms to build from the probe's scores (``METHODS``), how the scores are
thresholded and which evaluators score every arm.
"""

import dataclasses
from collections.abc import Mapping
from typing import Any

from gdc import evaluation
from gdc.errors import ConfigError
from gdc.train import config as run_config

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
# The default evaluators; ``evaluation.EVALUATORS`` has every evaluator a study may name (``exposure_inserted``:
# the exposure of the inserted canaries only).
EVALUATORS = ("perplexity", "extraction", "exposure", "mia")


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
            if e not in evaluation.EVALUATORS:
                raise ConfigError(f"study.evaluators: {e!r} is not one of {tuple(evaluation.EVALUATORS)}.")
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


@dataclasses.dataclass(frozen=True)
class CartoConfig(run_config.RunConfig):
    """A training run plus the study that probes, scores, intervenes, retrains and evaluates it."""

    study: StudyConfig = StudyConfig()


SECTIONS = run_config.sections(CartoConfig)


def from_mapping(config: Mapping[str, Any], *, device_count: int | None = None) -> CartoConfig:
    """A validated CartoConfig (see ``run_config.from_mapping``); the ``study`` section is optional."""
    return run_config.from_mapping(config, device_count=device_count, cls=CartoConfig)
