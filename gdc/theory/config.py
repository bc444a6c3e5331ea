"""Typed settings of ``--mode=verify``: the ``theory`` section of ``configs/theory_*.py``.

The verify configs hold only ``seed`` and ``theory``; ``from_mapping`` turns them into a frozen ``TheoryConfig``
once, and a bad field raises ``ConfigError`` naming ``theory.<field>``. (The section is read here rather than
through ``gdc.config.SECTIONS`` so that training configs do not grow a section they never use.)
"""

import dataclasses
import numbers
from collections.abc import Mapping
from typing import Any, NoReturn

from gdc import config as parse

CLAIMS = ("lower_bound", "stability", "nonconvex")
CONVEX_MODELS = ("logistic", "softmax")
NONCONVEX_MODELS = ("mlp", "lstm")


@dataclasses.dataclass(frozen=True)
class TheoryConfig:
    """Settings of the numerical checks of paper.md §5 / §11 items 7-10."""

    claims: tuple[str, ...] = ("lower_bound", "stability")
    # Convex task: L2 logistic (K = 2) and softmax (K = softmax_classes) regression on a noisy linear teacher.
    models: tuple[str, ...] = CONVEX_MODELS
    num_train: int = 400
    num_test: int = 2000
    num_features: int = 20
    softmax_classes: int = 4
    label_noise: float = 0.05  # each model also runs with clean labels
    l2: float = 1e-2
    lr: float = 0.5
    epochs: int = 30
    batch_size: int = 1
    checkpoints_per_epoch: int = 1
    eps: float = 0.3  # the tracker's threshold during training (absolute, single)
    hysteresis: float = 1.25  # the hysteresis band is (eps / h, eps * h)
    eps_absolute: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)
    eps_percentile: tuple[float, ...] = (10.0, 25.0, 50.0, 75.0, 90.0)
    bound_c: float = 2.0  # scale-free constant of the violation fraction (gdc.theory.stats)
    max_violation: float = 0.05
    gtol: float = 1e-10  # L-BFGS gradient tolerance of the exact fits
    # Stability (weighted SGD, replace-one).
    alphas: tuple[float, ...] = (1.0, 0.75, 0.5, 0.25, 0.0)
    stability_examples: int = 10  # hotspots whose divergence is measured against alpha
    hotspot_fraction: float = 0.05
    hotspot_alpha: float = 0.5
    gap_seeds: int = 20
    # Beyond convexity.
    nonconvex_models: tuple[str, ...] = NONCONVEX_MODELS
    mlp_examples: int = 384
    mlp_width: int = 32
    mlp_classes: int = 4
    mlp_features: int = 16
    mlp_label_noise: float = 0.1
    mlp_epochs: int = 30
    mlp_lr: float = 0.1
    mlp_batch: int = 16
    mlp_eps: float = 0.1  # the tracker's threshold during the MLP probe run
    mlp_eps_absolute: tuple[float, ...] = (0.05, 0.1, 0.3, 0.7)
    lstm_examples: int = 64  # few sequences and many epochs: the LSTM memorizes (train loss ~1.3 nats/char)
    lstm_seq_len: int = 24
    lstm_width: int = 24
    lstm_epochs: int = 50
    lstm_lr: float = 8.0
    lstm_batch: int = 16
    lstm_eps: float = 1.3
    lstm_eps_absolute: tuple[float, ...] = (0.7, 1.0, 1.5, 2.0, 2.5)
    # Influence and attribution (non-convex). Per model: MLP first, LSTM second.
    damping: float = 1e-2  # added to the Gauss-Newton matrix for the non-convex inverse HVPs
    cg_maxiter: tuple[int, ...] = (100, 50)
    lissa_depth: tuple[int, ...] = (300, 100)
    hessian_examples: tuple[int, ...] = (0, 32)  # the GN matrix is averaged over this many examples (0: all)
    influence_examples: tuple[int, ...] = (384, 48)  # self-influence by CG/LiSSA for this many examples
    lds_test: tuple[int, ...] = (50, 20)  # held-out examples whose loss the LDS and LOO predict
    lds_subsets: int = 100
    loo_examples: int = 39  # LOO retrains compared with influence (+ 1 full-data retrain: 4 chunks of 10)
    nonconvex_gap_seeds: int = 10

    def validate(self) -> None:
        for name in ("claims", "models", "nonconvex_models"):
            allowed = {"claims": CLAIMS, "models": CONVEX_MODELS, "nonconvex_models": NONCONVEX_MODELS}[name]
            value = getattr(self, name)
            if not value or any(v not in allowed for v in value):
                _fail(name, value, f"must be a non-empty tuple of {allowed}")
        positive = [f.name for f in dataclasses.fields(self) if isinstance(f.default, int | float)]
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                _fail(name, value, "must be a number")
        for name in ("num_train", "num_test", "num_features", "epochs", "batch_size", "checkpoints_per_epoch"):
            _at_least(self, name, 1)
        _at_least(self, "softmax_classes", 3)
        for name in ("lr", "eps", "bound_c", "gtol", "mlp_lr", "lstm_lr", "damping", "mlp_eps", "lstm_eps"):
            if not getattr(self, name) > 0:
                _fail(name, getattr(self, name), "must be > 0")
        for name in ("l2", "label_noise", "mlp_label_noise", "max_violation", "hotspot_fraction", "hotspot_alpha"):
            if not 0.0 <= getattr(self, name) <= (1.0 if name != "l2" else float("inf")):
                _fail(name, getattr(self, name), "must be in [0, 1]" if name != "l2" else "must be >= 0")
        if self.hysteresis < 1.0:
            _fail("hysteresis", self.hysteresis, "must be >= 1 (1 disables the band)")
        if self.num_train % self.batch_size or (self.num_train // self.batch_size) % self.checkpoints_per_epoch:
            _fail("batch_size", self.batch_size, "must divide num_train, and the steps per epoch by checkpoints")
        if self.mlp_examples % self.mlp_batch:
            _fail("mlp_batch", self.mlp_batch, f"must divide mlp_examples={self.mlp_examples}")
        if self.lstm_examples % self.lstm_batch:
            _fail("lstm_batch", self.lstm_batch, f"must divide lstm_examples={self.lstm_examples}")
        if 1.0 not in self.alphas or 0.5 not in self.alphas:
            _fail("alphas", self.alphas, "must contain 1.0 (the reference) and 0.5 (the checked ratio)")
        if any(not 0.0 <= a <= 1.0 for a in self.alphas):
            _fail("alphas", self.alphas, "must lie in [0, 1]")
        if not self.eps_absolute or not self.eps_percentile or any(not 0 <= q <= 100 for q in self.eps_percentile):
            _fail("eps_percentile", self.eps_percentile, "needs values in 0..100 (and eps_absolute values)")
        for name in ("stability_examples", "gap_seeds", "mlp_examples", "mlp_width", "mlp_epochs", "lstm_examples"):
            _at_least(self, name, 1)
        for name in ("lstm_seq_len", "lstm_width", "lstm_epochs"):
            _at_least(self, name, 1)
        for name in ("lds_subsets", "loo_examples", "nonconvex_gap_seeds"):
            _at_least(self, name, 2)
        for name in ("hessian_examples", "influence_examples", "lds_test", "cg_maxiter", "lissa_depth"):
            value = getattr(self, name)
            if len(value) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in value):
                _fail(name, value, "must be two integers >= 0 (MLP, LSTM)")
        if min(self.influence_examples) < 2 or min(self.lds_test) < 2:
            _fail("influence_examples", self.influence_examples, "and theory.lds_test need >= 2 examples each")


def _fail(field: str, value: object, allowed: str) -> NoReturn:
    parse.fail("theory", field, value, allowed)


def _at_least(cfg: TheoryConfig, name: str, minimum: int) -> None:
    parse.int_at_least("theory", name, getattr(cfg, name), minimum)


def from_mapping(config: Mapping[str, Any]) -> tuple[int, TheoryConfig]:
    """(seed, TheoryConfig) from a ConfigDict or dict with ``seed`` and ``theory``; raises ConfigError."""
    seed, values = parse.seed_and_values(config, "theory")
    return seed, parse.build(TheoryConfig, "theory", values)
