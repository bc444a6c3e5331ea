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
    num_seeds: int = 5  # seeds seed, seed + 1, ...; vmapped together with the K values
    dim: int = 32  # item dimension D
    contexts: tuple[int, ...] = (2, 4, 8, 16, 32)  # context lengths N
    k_values: tuple[int, ...] = (8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)  # task diversities K
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
    # nu: IWL-only runs (training contexts never hold the query's pair), t_IWL = steps to iwl_threshold vs K.
    iwl_context: int = 2
    iwl_k_values: tuple[int, ...] = (32, 64, 128, 256, 512, 1024)
    iwl_checkpoints: int = 150
    iwl_steps_per_checkpoint: int = 10
    iwl_threshold: float = 0.9
    # Transience: AdamW weight decay ``wd`` against wd = 0 at a few K near K* (context length wd_context).
    wd: float = 1.0
    wd_context: int = 8
    wd_k_values: tuple[int, ...] = (128, 256, 512)
    wd_p_bursty: float = 1.0
    wd_num_seeds: int = 5
    wd_checkpoints: int = 25
    wd_steps_per_checkpoint: int = 200

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
        for name in ("copies", "track_items", "final_checkpoints", "wd_num_seeds"):
            _at_least(self, name, 1)
        for name in ("iwl_checkpoints", "iwl_steps_per_checkpoint", "wd_checkpoints", "wd_steps_per_checkpoint"):
            _at_least(self, name, 2 if name.endswith("checkpoints") else 1)
        for name in ("iwl_context", "wd_context"):
            _at_least(self, name, self.copies)  # the ICL probe places the query at `copies` context positions
        if min(self.contexts) < self.copies:
            _fail("contexts", self.contexts, f"must all be >= icl.copies={self.copies}")
        for name in ("k_values", "iwl_k_values", "wd_k_values"):
            ks = getattr(self, name)
            if min(ks) < 2 or list(ks) != sorted(set(ks)):
                _fail(name, ks, "must be increasing, distinct and >= 2")
        if len(self.iwl_k_values) < 2:
            _fail("iwl_k_values", self.iwl_k_values, "needs at least 2 values to fit t_IWL ~ K^nu")
        if len(set(self.contexts)) != len(self.contexts) or len(self.contexts) < 2:
            _fail("contexts", self.contexts, "must be at least 2 distinct lengths (to fit log K* on log N)")
        if not self.wd >= 0:
            _fail("wd", self.wd, "must be >= 0 (AdamW weight decay; the control arm runs at 0)")
        if not 0.0 <= self.wd_p_bursty <= 1.0:
            _fail("wd_p_bursty", self.wd_p_bursty, "must be in [0, 1]")
        if self.final_checkpoints > self.checkpoints:
            _fail("final_checkpoints", self.final_checkpoints, f"must be <= icl.checkpoints={self.checkpoints}")
        if not 0.0 <= self.p_bursty <= 1.0:
            _fail("p_bursty", self.p_bursty, "must be in [0, 1]")
        for name in ("threshold", "iwl_threshold"):
            if not 0.5 < getattr(self, name) < 1.0:
                _fail(name, getattr(self, name), "must be in (0.5, 1) (chance is 0.5)")
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
