"""Typed settings of the classifier-memorization family: the ``classify`` section of its configs.

The configs are configs/mat_toy.py, configs/demem.py and configs/fairness.py. The section holds ``part`` (one of
PARTS) and the fields of that part's frozen dataclass. ``from_mapping`` builds it once, before any compute; a bad field
raises ConfigError naming ``classify.<field>`` and how to set it.
"""

import dataclasses
import math
import numbers
from collections.abc import Mapping
from typing import Any, NoReturn

from gdc import config as parse
from gdc.errors import ConfigError
from gdc.scoring import QUADRANT_NAMES
from gdc.studies.classify.robust_config import RobustConfig


@dataclasses.dataclass(frozen=True)
class MatConfig:
    """MAT (Bayat et al. 2025) on the paper's interpretable toy: ERM vs XRM + logit-shift training."""

    seeds: tuple[int, ...] = (0, 1, 2)
    num_examples: int = 1000  # per split (train, test), as in the paper's toy
    dim: int = 1800  # 1 core + 1 spurious + (dim - 2) example-specific noise dimensions
    majority_train: float = 0.9  # share of train rows whose spurious feature agrees with the label (test: 0.5)
    noise_std: float = 0.5
    lr: float = 1e-2
    epochs: int = 1000  # full-batch gradient descent steps, for each of ERM, XRM and MAT
    temperature: float = 0.1  # tau of p(y_ho | x) = softmax(f_ho(x) / tau)
    early_epochs: int = 50  # d = mean loss over the first early_epochs (the ERM run's losses)
    eps: float = math.log(2.0)  # forget-event threshold: loss < ln 2 is "argmax correct" for 2 classes

    def validate(self) -> None:
        _seeds(self.seeds)
        for name, lo in (("num_examples", 10), ("dim", 3), ("epochs", 2), ("early_epochs", 1)):
            _int_at_least(name, getattr(self, name), lo)
        if self.early_epochs > self.epochs:
            _fail("early_epochs", self.early_epochs, f"must be <= epochs={self.epochs}")
        if not 0.5 <= self.majority_train < 1.0:
            _fail("majority_train", self.majority_train, "must be in [0.5, 1) (the rest is the minority group)")
        for name in ("lr", "temperature", "eps"):
            _positive(name, getattr(self, name))
        if not self.noise_std >= 0:
            _fail("noise_std", self.noise_std, "must be >= 0")


@dataclasses.dataclass(frozen=True)
class DememConfig:
    """Selective de-memorization (DeMem-style) vs DP-SGD, judged by loss-MIA and LiRA against test accuracy."""

    seeds: tuple[int, ...] = (0, 1, 2)
    pool: int = 1000  # examples each model may train on; every model trains on a random half
    num_test: int = 2000
    num_features: int = 16
    num_classes: int = 4
    separation: float = 2.0  # distance of the class means from the origin
    label_noise: float = 0.05  # pool labels flipped to another class
    atypical: float = 0.05  # pool rows drawn far from their class mean (a long tail of singletons)
    width: int = 64
    depth: int = 2
    lr: float = 0.1
    epochs: int = 60
    batch_size: int = 50
    models: int = 16  # target + shadows per arm, trained in one vmap; LiRA uses the other models as shadows
    probe_epochs: int = 60  # the GenDataCarto probe run on the whole pool (scores d, m, quadrants)
    early_epochs: int = 3
    eps: float = 0.5  # forget-event loss threshold of the probe's tracker
    floor: float = 2.0  # b of the penalty lambda * max(0, b - loss_i) on flagged examples
    penalty: float = 2.0  # lambda; 2 makes the flagged example's objective |loss - b| + b (per-example flooding)
    clip: float = 1.0  # DP-SGD per-example gradient clip norm
    target_epsilons: tuple[float, ...] = (1.0, 4.0, 8.0)  # one DP-SGD arm each, sigma calibrated by RDP at delta
    noise_multipliers: tuple[float, ...] = (1.0,)  # one DP-SGD arm each at a given sigma (its epsilon reported)
    delta: float = 1e-5  # of the (epsilon, delta) reported for every DP-SGD arm
    loss_fractions: tuple[float, ...] = (0.1,)  # extra penalty arms on the top fraction of the pool by d

    def validate(self) -> None:
        _seeds(self.seeds)
        for name, lo in (
            ("pool", 8),
            ("num_test", 1),
            ("num_features", 1),
            ("num_classes", 2),
            ("width", 1),
            ("depth", 1),
            ("epochs", 1),
            ("batch_size", 1),
            ("models", 3),
            ("probe_epochs", 2),
            ("early_epochs", 1),
        ):
            _int_at_least(name, getattr(self, name), lo)
        if self.pool % 2 or (self.pool // 2) % self.batch_size:
            _fail("batch_size", self.batch_size, f"must divide pool / 2 = {self.pool / 2} (pool must be even)")
        if self.pool % self.batch_size:
            _fail("batch_size", self.batch_size, f"must divide pool={self.pool} (the probe trains on all of it)")
        if self.early_epochs >= self.probe_epochs:
            _fail("early_epochs", self.early_epochs, f"must be < probe_epochs={self.probe_epochs}")
        for name in ("label_noise", "atypical"):
            if not 0.0 <= getattr(self, name) < 0.5:
                _fail(name, getattr(self, name), "must be in [0, 0.5)")
        for name in ("separation", "lr", "eps", "floor", "penalty", "clip"):
            _positive(name, getattr(self, name))
        if any(not 0.0 < f < 1.0 for f in self.loss_fractions):
            _fail("loss_fractions", self.loss_fractions, "must lie in (0, 1) each (an empty tuple skips them)")
        if any(not s > 0 for s in self.noise_multipliers):
            _fail("noise_multipliers", self.noise_multipliers, "must be > 0 each (an empty tuple skips them)")
        if any(not 0.0 < e <= 100.0 for e in self.target_epsilons):
            _fail("target_epsilons", self.target_epsilons, "must lie in (0, 100] each (an empty tuple skips them)")
        if not 0.0 < self.delta < 1.0 / self.pool:
            _fail("delta", self.delta, f"must lie in (0, 1 / pool = {1.0 / self.pool:g}) (delta >= 1/n permits leaks)")


@dataclasses.dataclass(frozen=True)
class FairnessConfig:
    """Pepin et al.'s identities: memorizing / pruning a GenDataCarto quadrant of a 3-class table with a group."""

    seeds: tuple[int, ...] = (0, 1, 2)
    num_train: int = 1500
    num_features: int = 8
    minority_share: float = 0.3  # P(A = 1)
    minority_noise: float = 1.6  # feature noise std of group 1 (group 0: 1.0): the base model is worse on it
    width: int = 128
    lr: float = 0.1
    epochs: int = 30  # the probe / base model (not trained to interpolation: D is not yet memorized)
    batch_size: int = 50
    early_epochs: int = 3
    eps: float = 0.5
    quadrants: tuple[str, ...] = ("Hotspot-Memorized", "Noisy-Outlier")
    upweight: float = 20.0  # loss weight of D while fine-tuning to memorize it
    finetune_epochs: int = 10  # per round; rounds repeat until D is fit or max_rounds
    max_rounds: int = 10
    real_table_classes: tuple[int, ...] = (2, 3)  # label bins of the bundled diabetes table (empty: skip it)
    bootstrap: int = 200  # resamples of the real table's rows for its intervals

    def validate(self) -> None:
        _seeds(self.seeds)
        if any(isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 2 for k in self.real_table_classes):
            _fail("real_table_classes", self.real_table_classes, "must be a tuple of integers >= 2 (or empty)")
        for name, lo in (
            ("bootstrap", 1),
            ("num_train", 30),
            ("num_features", 2),
            ("width", 1),
            ("epochs", 2),
            ("batch_size", 1),
            ("early_epochs", 1),
            ("finetune_epochs", 1),
            ("max_rounds", 1),
        ):
            _int_at_least(name, getattr(self, name), lo)
        if self.num_train % self.batch_size:
            _fail("batch_size", self.batch_size, f"must divide num_train={self.num_train}")
        if self.early_epochs >= self.epochs:
            _fail("early_epochs", self.early_epochs, f"must be < epochs={self.epochs}")
        if not 0.0 < self.minority_share < 1.0:
            _fail("minority_share", self.minority_share, "must be in (0, 1)")
        for name in ("minority_noise", "lr", "eps", "upweight"):
            _positive(name, getattr(self, name))
        if not self.quadrants or any(q not in QUADRANT_NAMES for q in self.quadrants):
            _fail("quadrants", self.quadrants, f"must be a non-empty tuple of {QUADRANT_NAMES}")


PARTS = {"mat": MatConfig, "demem": DememConfig, "fairness": FairnessConfig}
PartConfig = MatConfig | DememConfig | FairnessConfig
PARTS["demem_robust"] = RobustConfig  # DeMem inside adversarial training (robust_config.py)
PartConfig = PartConfig | RobustConfig


def _fail(field: str, value: object, allowed: str) -> NoReturn:
    parse.fail("classify", field, value, allowed)


def _seeds(seeds: tuple) -> None:
    if not seeds or any(isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 0 for s in seeds):
        _fail("seeds", seeds, "must be a non-empty tuple of integers >= 0")
    if len(set(seeds)) != len(seeds):
        _fail("seeds", seeds, "must not repeat a seed")


def _int_at_least(name: str, value: object, minimum: int) -> None:
    parse.int_at_least("classify", name, value, minimum)


def _positive(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
        _fail(name, value, "must be a number > 0")


def from_mapping(config: Mapping[str, Any]) -> PartConfig:
    """The part's typed config from a ConfigDict or dict with ``classify`` (and ``seed``); raises ConfigError."""
    _, values = parse.seed_and_values(config, "classify")
    part = values.pop("part", None)
    if part not in PARTS:
        raise ConfigError(f"classify.part={part!r} must be one of {tuple(PARTS)}.")
    return parse.build(PARTS[part], "classify", values, what=f"part {part!r}")


def part_of(cfg: PartConfig) -> str:
    return next(name for name, cls in PARTS.items() if isinstance(cfg, cls))
