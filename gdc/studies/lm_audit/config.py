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
    # Data: the first num_rows pydoc train-split chunks of seq_len + 1 characters; the target trains on num_train of
    # them (a seeded random subset), num_control others of the same range are the never-trained control (same
    # topics, so a train - control gap is not a topic shift). The held-out split is the inducer's public text.
    num_rows: int = 640
    num_train: int = 384
    seq_len: int = 64
    heldout_fraction: float = 0.05
    dup_counts: tuple[int, ...] = (1, 4, 16)  # one candidate group of group_size train rows per count
    group_size: int = 64
    num_control: int = 256
    # Extraction protocol.
    prefix_lengths: tuple[int, ...] = (8, 16, 24, 32, 41)
    continuation: int = 24
    test_prefix: int = 32  # prefix of the dataset-level test, the size sweep, the ablation and the hotspot checks
    template_cue: int = 8  # request template: the row's first characters only
    template_context: int = 16  # chat: never-trained text before the cue; roleplay: a fixed framing before the prefix
    # Target model (trained through the engine) and the model-size sweep ("WIDTHxDEPTH" extra models).
    model: str = "lstm"
    width: int = 64
    depth: int = 2
    num_heads: int = 4
    sizes: tuple[str, ...] = ("32x1", "64x1")
    epochs: int = 20
    batch_size: int = 16
    learning_rate: float = 1e-2
    warmup_steps: int = 20
    # Dataset-level test: S is drawn from a group of group_size rows (|S| < group_size, so S varies), the control
    # from the num_control rows; the false-positive rate draws both from the control rows.
    power_sizes: tuple[int, ...] = (4, 8, 16, 32, 48)
    power_reps: int = 200
    alpha: float = 0.05
    # MemHunter's inducer (gdc.studies.lm_audit.inducer): rewarded on the ordinary train rows only.
    inducer_prompt: int = 16
    inducer_width: int = 64
    inducer_rounds: int = 4
    inducer_per_round: int = 256
    inducer_threshold: float = 6.0
    inducer_fit_steps: int = 60
    inducer_pretrain_steps: int = 300
    inducer_eval: int = 1024  # prompts per inducer (tuned and control) for the extraction count and the test
    extract_chars: int = 16  # a row is extracted when a continuation holds this many of its consecutive characters
    # Probes and ablation.
    probe_folds: int = 4
    probe_c: float = 1.0
    probe_fit_fraction: float = 0.5  # canaries the ablated directions are fitted on; the rest are measured
    ablation_alphas: tuple[float, ...] = (0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0)
    random_directions: int = 5
    matched_ppl: tuple[float, ...] = (1.02, 1.05, 1.1)  # perplexity / unablated perplexity for the comparison
    # GenDataCarto scores of the target run (m at the percentile-eps of its final losses, as in exp A).
    eps_percentile: float = 50.0
    num_boot: int = 2000

    @property
    def max_prefix(self) -> int:
        return max(max(self.prefix_lengths), self.test_prefix)

    @property
    def max_allowed_prefix(self) -> int:
        """The longest prefix a row leaves room for before its continuation (the templates' prompt length)."""
        return self.seq_len + 1 - self.continuation

    def validate(self) -> None:
        for name in ("num_rows", "num_train", "seq_len", "group_size", "num_control", "continuation", "test_prefix"):
            _check_int(self, name, 1)
        for name in ("width", "depth", "epochs", "batch_size", "power_reps", "num_heads", "num_boot", "template_cue"):
            _check_int(self, name, 1)
        for name in ("inducer_prompt", "inducer_width", "inducer_rounds", "inducer_per_round", "inducer_eval"):
            _check_int(self, name, 1)
        for name in ("inducer_fit_steps", "inducer_pretrain_steps", "template_context"):
            _check_int(self, name, 0)
        _check_int(self, "extract_chars", 1)
        _check_int(self, "warmup_steps", 0)
        _check_int(self, "random_directions", 0)
        _check_int(self, "probe_folds", 2)
        if not self.seeds or not all(isinstance(s, int) and s >= 0 for s in self.seeds):
            _fail("seeds", self.seeds, "must be a non-empty tuple of ints >= 0, e.g. (0, 1, 2)")
        if self.model not in ("lstm", "transformer"):
            _fail("model", self.model, "must be 'lstm' or 'transformer'")
        if not self.dup_counts or not all(isinstance(k, int) and k >= 1 for k in self.dup_counts):
            _fail("dup_counts", self.dup_counts, "must be a non-empty tuple of ints >= 1, e.g. (1, 3, 10)")
        if len(self.dup_counts) * self.group_size >= self.num_train:
            _fail("group_size", self.group_size, f"times {len(self.dup_counts)} groups must leave ordinary train rows")
        if self.num_train + self.num_control > self.num_rows:
            _fail("num_control", self.num_control, f"plus num_train={self.num_train} must not exceed num_rows")
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
        if max(self.power_sizes) >= self.group_size:
            _fail("power_sizes", self.power_sizes, f"must stay below group_size={self.group_size}, so S varies")
        if 2 * max(self.power_sizes) > self.num_control:
            _fail("power_sizes", self.power_sizes, f"need 2 x |S| <= num_control={self.num_control} (false positives)")
        if self.template_context + self.template_cue > self.max_allowed_prefix or self.template_context >= (
            self.max_allowed_prefix
        ):
            _fail("template_context", self.template_context, "plus template_cue must fit the longest prefix")
        if not 0.0 < self.probe_fit_fraction < 1.0:
            _fail("probe_fit_fraction", self.probe_fit_fraction, "must lie in (0, 1)")
        if not self.matched_ppl or min(self.matched_ppl) <= 1.0:
            _fail("matched_ppl", self.matched_ppl, "must be perplexity ratios > 1, e.g. (1.02, 1.05)")
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
