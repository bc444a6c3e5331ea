"""Typed settings of the LM audit: the ``lm_audit`` section of ``configs/lm_audit.py``.

``from_mapping`` turns the config into a frozen ``AuditConfig`` once; a bad field raises ``ConfigError`` naming
``lm_audit.<field>`` and the fix, before any model is trained.
"""

import dataclasses
import numbers
from collections.abc import Mapping
from typing import Any, NoReturn

from gdc import config as parse
from gdc.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class AuditConfig:
    seeds: tuple[int, ...] = (0, 1, 2)
    # Data: pydoc chunks of seq_len characters; train truncated to num_train rows; the held-out split is the
    # never-trained control pool (num_control rows of it are evaluated).
    num_train: int = 256
    seq_len: int = 64
    heldout_fraction: float = 0.05
    dup_counts: tuple[int, ...] = (1, 4, 16)  # one candidate group of group_size train rows per count
    group_size: int = 16
    num_control: int = 256
    # Extraction protocol.
    prefix_lengths: tuple[int, ...] = (8, 16, 24, 32, 40)
    continuation: int = 24
    test_prefix: int = 32  # prefix of the dataset-level test, the size sweep, the ablation and the hotspot checks
    # Target model (trained through the engine) and the model-size sweep ("WIDTHxDEPTH" extra models).
    model: str = "lstm"
    width: int = 64
    depth: int = 2
    num_heads: int = 4
    sizes: tuple[str, ...] = ("32x1", "64x1")
    epochs: int = 24
    batch_size: int = 16
    learning_rate: float = 1e-2
    warmup_steps: int = 20
    # Dataset-level test.
    power_sizes: tuple[int, ...] = (2, 4, 8, 16)
    power_reps: int = 200
    fpr_size: int = 16
    fpr_reps: int = 1000
    alpha: float = 0.05
    # Probes and ablation.
    probe_folds: int = 4
    probe_c: float = 1.0
    ablation_alphas: tuple[float, ...] = (1.0, 2.0, 4.0)
    random_directions: int = 3
    # GenDataCarto scores of the target run (m at the percentile-eps of its final losses, as in exp A).
    eps_percentile: float = 50.0
    num_boot: int = 2000

    @property
    def max_prefix(self) -> int:
        return max(max(self.prefix_lengths), self.test_prefix)

    def validate(self) -> None:
        for name in ("num_train", "seq_len", "group_size", "num_control", "continuation", "test_prefix", "width"):
            _check_int(self, name, 1)
        for name in ("depth", "epochs", "batch_size", "power_reps", "fpr_reps", "num_heads", "num_boot"):
            _check_int(self, name, 1)
        _check_int(self, "warmup_steps", 0)
        _check_int(self, "random_directions", 0)
        _check_int(self, "probe_folds", 2)
        _check_int(self, "fpr_size", 2)
        if not self.seeds or not all(isinstance(s, int) and s >= 0 for s in self.seeds):
            _fail("seeds", self.seeds, "must be a non-empty tuple of ints >= 0, e.g. (0, 1, 2)")
        if self.model not in ("lstm", "transformer"):
            _fail("model", self.model, "must be 'lstm' or 'transformer'")
        if not self.dup_counts or not all(isinstance(k, int) and k >= 1 for k in self.dup_counts):
            _fail("dup_counts", self.dup_counts, "must be a non-empty tuple of ints >= 1, e.g. (1, 3, 10)")
        if len(self.dup_counts) * self.group_size >= self.num_train:
            _fail("group_size", self.group_size, f"times {len(self.dup_counts)} groups must leave ordinary train rows")
        if not self.prefix_lengths or min(self.prefix_lengths) < 1:
            _fail("prefix_lengths", self.prefix_lengths, "must be a non-empty tuple of ints >= 1")
        if self.max_prefix + self.continuation > self.seq_len + 1:
            _fail(
                "continuation",
                self.continuation,
                f"plus the longest prefix {self.max_prefix} must fit in a row of seq_len + 1 = {self.seq_len + 1} "
                "tokens; shorten the prefixes or the continuation",
            )
        for size in self.sizes:
            parts = size.split("x")
            if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
                _fail("sizes", self.sizes, "entries must look like 'WIDTHxDEPTH', e.g. ('64x1', '128x1')")
        if self.model == "transformer" and any(int(s.split("x")[0]) % self.num_heads for s in self.sizes):
            _fail("num_heads", self.num_heads, "must divide every width in lm_audit.sizes")
        if not 0.0 < self.alpha < 1.0:
            _fail("alpha", self.alpha, "must lie in (0, 1), e.g. 0.05")
        if not 0.0 < self.heldout_fraction < 1.0:
            _fail("heldout_fraction", self.heldout_fraction, "must lie in (0, 1)")
        if not 0.0 <= self.eps_percentile <= 100.0:
            _fail("eps_percentile", self.eps_percentile, "must lie in [0, 100]")
        if not self.power_sizes or min(self.power_sizes) < 2:
            _fail("power_sizes", self.power_sizes, "must be ints >= 2")
        if 2 * self.fpr_size > self.num_control:
            _fail("fpr_size", self.fpr_size, f"needs 2 x fpr_size <= num_control={self.num_control}")
        if not self.ablation_alphas or min(self.ablation_alphas) <= 0:
            _fail("ablation_alphas", self.ablation_alphas, "must be positive scales (1 = project out)")


def from_mapping(config: Mapping[str, Any]) -> AuditConfig:
    """AuditConfig from a ConfigDict (or dict) holding an ``lm_audit`` section; validated."""
    config = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    values = dict(config.get("lm_audit", {}))
    allowed = [f.name for f in dataclasses.fields(AuditConfig)]
    for name in values:
        if name not in allowed:
            raise ConfigError(f"lm_audit.{name} is not a known field; allowed: {allowed}.")
    for f in dataclasses.fields(AuditConfig):
        if f.name in values and isinstance(values[f.name], list):
            values[f.name] = tuple(values[f.name])
    cfg = AuditConfig(**values)
    cfg.validate()
    return cfg


def _fail(field: str, value: object, allowed: str) -> NoReturn:
    parse.fail("lm_audit", field, value, allowed)


def _check_int(cfg: AuditConfig, field: str, minimum: int) -> None:
    value = getattr(cfg, field)
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < minimum:
        _fail(field, value, f"must be an integer >= {minimum}")
