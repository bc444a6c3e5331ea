"""Typed settings of the ``demem_robust`` part: DeMem's penalty inside adversarial training, on scikit-learn digits.

``RobustConfig.validate`` runs before any compute; a bad field raises ConfigError naming ``classify.<field>``.
"""

import dataclasses
import numbers
from typing import NoReturn

from gdc import config as parse

DIGITS = 1797  # rows of scikit-learn's load_digits
BASELINES = ("erm", "fgsm_at", "trades")  # arms beside PGD-AT and its penalty arms
PENALTY_SETS = ("hotspot", "top_loss", "random", "all")  # the rows the penalty is applied to, one arm each


@dataclasses.dataclass(frozen=True)
class RobustConfig:
    """PGD-AT (+ FGSM-AT, TRADES, ERM) with the loss-floor penalty on hotspot / top-loss / random / all rows."""

    seeds: tuple[int, ...] = (0, 1, 2)
    pool: int = 1000  # digits rows the models may train on (each model: a random half); the other 797 are the test
    width: int = 128
    depth: int = 2
    lr: float = 0.2
    epochs: int = 60
    batch_size: int = 25
    models: int = 16  # per arm, trained in one vmap; each is LiRA's target once with the others as shadows
    attack_eps: float = 0.1  # L-infinity training radius in [0, 1] pixel units (FGSM, PGD, TRADES)
    attack_steps: int = 5  # PGD / TRADES steps while training; step size 2.5 eps / steps
    eval_eps: tuple[float, ...] = (0.1, 0.2)  # robust accuracy radii (attack_eps is always added)
    eval_steps: int = 20  # PGD steps of the robust-accuracy attack; step size 2.5 eps / steps
    trades_beta: float = 6.0
    probe_epochs: int = 40  # the GenDataCarto probe: one PGD-AT run on the whole pool with the tracker
    early_epochs: int = 3
    forget_eps: float = 0.5  # the probe tracker's loss threshold (on the adversarial loss)
    floor: float = 1.0  # b of the penalty lambda max(0, b - loss_i) on the flagged rows' adversarial loss
    penalty: float = 2.0  # lambda (2: per-example flooding, |loss - b| + b)
    baselines: tuple[str, ...] = BASELINES
    penalty_sets: tuple[str, ...] = PENALTY_SETS

    def validate(self) -> None:
        if not self.seeds or any(
            isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 0 for s in self.seeds
        ):
            _fail("seeds", self.seeds, "must be a non-empty tuple of integers >= 0")
        if len(set(self.seeds)) != len(self.seeds):
            _fail("seeds", self.seeds, "must not repeat a seed")
        for name, lo in (
            ("pool", 8),
            ("width", 1),
            ("depth", 1),
            ("epochs", 1),
            ("batch_size", 1),
            ("models", 3),
            ("attack_steps", 1),
            ("eval_steps", 1),
            ("probe_epochs", 2),
            ("early_epochs", 1),
        ):
            parse.int_at_least("classify", name, getattr(self, name), lo)
        if self.pool > DIGITS - 100:
            _fail("pool", self.pool, f"must leave >= 100 of the {DIGITS} digits rows for the test split")
        if self.pool % 2 or (self.pool // 2) % self.batch_size or self.pool % self.batch_size:
            _fail("batch_size", self.batch_size, f"must divide pool={self.pool} and pool / 2 (pool must be even)")
        if self.early_epochs >= self.probe_epochs:
            _fail("early_epochs", self.early_epochs, f"must be < probe_epochs={self.probe_epochs}")
        for name in ("lr", "trades_beta", "forget_eps", "floor", "penalty"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
                _fail(name, value, "must be a number > 0")
        if not 0.0 < self.attack_eps <= 1.0:
            _fail("attack_eps", self.attack_eps, "must be in (0, 1] (pixels are scaled to [0, 1])")
        if not self.eval_eps or any(not 0.0 < e <= 1.0 for e in self.eval_eps):
            _fail("eval_eps", self.eval_eps, "must be a non-empty tuple of radii in (0, 1]")
        if any(b not in BASELINES for b in self.baselines) or len(set(self.baselines)) != len(self.baselines):
            _fail("baselines", self.baselines, f"must be distinct names from {BASELINES} (may be empty)")
        if any(p not in PENALTY_SETS for p in self.penalty_sets) or len(set(self.penalty_sets)) != len(
            self.penalty_sets
        ):
            _fail("penalty_sets", self.penalty_sets, f"must be distinct names from {PENALTY_SETS} (may be empty)")


def _fail(field: str, value: object, allowed: str) -> NoReturn:
    parse.fail("classify", field, value, allowed)
