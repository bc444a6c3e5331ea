"""Typed settings of the SSL localization study: the ``ssl`` section of ``configs/unitmem_digits.py``.

``from_mapping`` builds the frozen ``SSLConfig`` once and validates it before any compute; a bad field raises
``ConfigError`` naming ``ssl.<field>`` and the fix.
"""

import dataclasses
import numbers
from collections.abc import Mapping
from typing import Any, NoReturn

from gdc import config as parse
from gdc.studies.ssl.metrics import REST

DIGITS = 1797  # scikit-learn's load_digits


@dataclasses.dataclass(frozen=True)
class SSLConfig:
    num_seeds: int = 3  # seeds seed, seed + 1, ...: each draws its own split and inits
    num_shared: int = 500  # S_S: both encoders train on it
    num_candidates: int = 250  # S_C: only the candidate encoder f trains on it
    num_independent: int = 250  # S_I: only the independent encoder g trains on it
    # Independent initialisations per seed of f, g and each control (untrained, supervised): LayerMem pairs f_r with
    # g_r, UnitMem / ClassMem are averaged over the encoders; the enrichment test and d / m use f_0.
    encoders: int = 3
    # Encoder and SimCLR training (gdc.studies.ssl.model.EncoderSpec).
    width: int = 256
    depth: int = 3
    proj_dim: int = 64
    shift: int = 1
    noise: float = 0.1
    brightness: float = 0.2
    temperature: float = 0.5
    lr: float = 1e-3
    epochs: int = 80
    batch_size: int = 250
    # GenDataCarto scores on the per-epoch score-pass loss matrix of f.
    early_epochs: int = 5
    eps_percentile: float = 50.0  # eps = this percentile of the final losses (single threshold)
    q_d: float = 50.0
    q_m: float = 50.0
    # Localization.
    unit_augs: int = 10  # augmentations averaged per example for UnitMem (public code: 10)
    layer_augs: int = 5  # augmentations compared with the original for LayerMem (public code: 5)
    rest: str = "median"  # how UnitMem pools the non-argmax examples (public code: median)
    top_units: float = 0.1  # the enrichment test uses the argmax examples of this top fraction of units by UnitMem
    permutations: int = 10000
    fast_compile: bool = False  # XLA backend optimisation off: 3x faster compiles, slower steps (smoke tests)

    def validate(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(f.default, bool):
                if not isinstance(value, bool):
                    _fail(f.name, value, "must be True or False")
            elif isinstance(f.default, int | float) and (
                isinstance(value, bool) or not isinstance(value, numbers.Real)
            ):
                _fail(f.name, value, "must be a number")
        names = ("num_seeds", "num_shared", "num_candidates", "num_independent", "encoders", "width", "depth")
        for name in names + ("proj_dim",):
            _at_least(self, name, 1)
        for name in ("epochs", "batch_size", "early_epochs", "unit_augs", "layer_augs", "permutations"):
            _at_least(self, name, 1)
        _at_least(self, "shift", 0)
        if self.num_candidates != self.num_independent:
            _fail("num_independent", self.num_independent, f"must equal ssl.num_candidates={self.num_candidates}")
        total = self.num_shared + self.num_candidates + self.num_independent
        if total > DIGITS:
            _fail("num_shared", self.num_shared, f"+ candidates + independent = {total} must be <= {DIGITS} digits")
        if (self.num_shared + self.num_candidates) % self.batch_size:
            _fail("batch_size", self.batch_size, "must divide ssl.num_shared + ssl.num_candidates")
        if self.early_epochs > self.epochs:
            _fail("early_epochs", self.early_epochs, f"must be <= ssl.epochs={self.epochs}")
        for name in ("noise", "brightness"):
            if not 0.0 <= getattr(self, name) < 1.0:
                _fail(name, getattr(self, name), "must be in [0, 1)")
        for name in ("temperature", "lr"):
            if not getattr(self, name) > 0:
                _fail(name, getattr(self, name), "must be > 0")
        for name in ("eps_percentile", "q_d", "q_m"):
            if not 0.0 <= getattr(self, name) <= 100.0:
                _fail(name, getattr(self, name), "must be a percentile in 0..100")
        if not 0.0 < self.top_units <= 1.0:
            _fail("top_units", self.top_units, "must be in (0, 1]")
        if self.rest not in REST:
            _fail("rest", self.rest, f"must be one of {REST}")


def _fail(field: str, value: object, allowed: str) -> NoReturn:
    parse.fail("ssl", field, value, allowed)


def _at_least(cfg: SSLConfig, name: str, minimum: int) -> None:
    parse.int_at_least("ssl", name, getattr(cfg, name), minimum)


def from_mapping(config: Mapping[str, Any]) -> tuple[int, SSLConfig]:
    """(seed, SSLConfig) from a ConfigDict or dict with ``seed`` and ``ssl``; raises ConfigError."""
    seed, values = parse.seed_and_values(config, "ssl")
    return seed, parse.build(SSLConfig, "ssl", values)
