"""Typed settings of the ICL-kinetics study: the ``icl`` section of ``configs/icl_kinetics.py``.

``from_mapping`` builds the frozen ``ICLConfig`` once and validates it before any compute; a bad field raises
``ConfigError`` naming ``icl.<field>`` and the fix.
"""

import dataclasses
import numbers
from collections.abc import Mapping
from typing import Any, NoReturn

from gdc import config as parse


@dataclasses.dataclass(frozen=True)
class ICLConfig:
    num_seeds: int = 3  # seeds seed, seed + 1, ...; vmapped together with the K values
    dim: int = 32  # item dimension D
    contexts: tuple[int, ...] = (4, 8, 16)  # context lengths N
    k_values: tuple[int, ...] = (8, 16, 32, 64, 128, 256, 512, 1024)  # task diversities K
    copies: int = 1  # copies of the query's pair in a bursty context
    p_bursty: float = 1.0  # share of training sequences with a bursty context
    width: int = 64
    lr: float = 1e-3
    batch_size: int = 32
    checkpoints: int = 20
    steps_per_checkpoint: int = 50
    eval_size: int = 512  # IWL and ICL probes per checkpoint
    track_items: int = 64  # items whose IWL loss is tracked per checkpoint (forget events)
    threshold: float = 0.75  # ICL accuracy that counts as acquired (chance 0.5)
    final_checkpoints: int = 2  # final accuracy = mean over this many last checkpoints
    fast_compile: bool = False  # XLA backend optimisation off: 3x faster compiles, slower steps (smoke tests)

    def validate(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(f.default, bool):
                if not isinstance(value, bool):
                    _fail(f.name, value, "must be True or False")
            elif isinstance(f.default, tuple):
                if not value or any(isinstance(v, bool) or not isinstance(v, int) for v in value):
                    _fail(f.name, value, "must be a non-empty tuple of integers")
            elif isinstance(value, bool) or not isinstance(value, numbers.Real):
                _fail(f.name, value, "must be a number")
        for name in ("num_seeds", "dim", "width", "batch_size", "checkpoints", "steps_per_checkpoint", "eval_size"):
            _at_least(self, name, 1)
        for name in ("copies", "track_items", "final_checkpoints"):
            _at_least(self, name, 1)
        if min(self.contexts) < self.copies:
            _fail("contexts", self.contexts, f"must all be >= icl.copies={self.copies}")
        if min(self.k_values) < 2 or list(self.k_values) != sorted(set(self.k_values)):
            _fail("k_values", self.k_values, "must be increasing, distinct and >= 2")
        if len(set(self.contexts)) != len(self.contexts):
            _fail("contexts", self.contexts, "must be distinct")
        if self.final_checkpoints > self.checkpoints:
            _fail("final_checkpoints", self.final_checkpoints, f"must be <= icl.checkpoints={self.checkpoints}")
        if not 0.0 <= self.p_bursty <= 1.0:
            _fail("p_bursty", self.p_bursty, "must be in [0, 1]")
        if not 0.5 < self.threshold < 1.0:
            _fail("threshold", self.threshold, "must be in (0.5, 1) (chance is 0.5)")
        if not self.lr > 0:
            _fail("lr", self.lr, "must be > 0")


def _fail(field: str, value: object, allowed: str) -> NoReturn:
    parse.fail("icl", field, value, allowed)


def _at_least(cfg: ICLConfig, name: str, minimum: int) -> None:
    parse.int_at_least("icl", name, getattr(cfg, name), minimum)


def from_mapping(config: Mapping[str, Any]) -> tuple[int, ICLConfig]:
    """(seed, ICLConfig) from a ConfigDict or dict with ``seed`` and ``icl``; raises ConfigError."""
    seed, values = parse.seed_and_values(config, "icl")
    return seed, parse.build(ICLConfig, "icl", values)
