"""Typed settings of the score benchmark: the ``scores`` section of ``configs/score_benchmark.py``.

Two settings, each one tracked engine run per seed plus K counterfactual models on random halves: ``lm`` (a character
model on pydoc text with keyed canaries) and ``mlp`` (an MLP on Gaussian blobs with flipped labels). ``from_mapping``
builds the frozen ``ScoresConfig`` once and validates it before any compute; a bad field raises ``ConfigError`` naming
``scores.<field>``.
"""

import dataclasses
import numbers
from collections.abc import Mapping
from typing import Any, NoReturn

from gdc import config as parse

SETTINGS = ("lm", "mlp")
LM_MODELS = ("gru", "lstm", "transformer")


@dataclasses.dataclass(frozen=True)
class ScoresConfig:
    seeds: tuple[int, ...] = (0, 1, 2)  # each seed: its own data split, canaries / flipped labels, inits and halves
    settings: tuple[str, ...] = SETTINGS
    # Ground truth: counterfactual memorization from `models` networks on random halves.
    models: int = 32
    vmap_size: int = 0  # models trained side by side per device (0: all); train_ensemble's vmap_size
    tie_copies: bool = True  # LM: every copy of a canary is in or out of a half together (the canary's own effect)
    # Cartography and the alternatives.
    eps_percentile: float = 50.0  # m: single threshold at this percentile of the final losses
    sweep: int = 10  # m over the eps sweep: thresholds at this many quantiles (5%..95%) of the final losses
    early_epoch: int = 2  # EL2N at the params after this many epochs (Paul et al.: early in training)
    spans: bool = True  # LM: the engine's span tracker on the canaries' secret digits (span_m, span_d join lm_span)
    grand_lm: bool = True  # GraNd on the LM (per-example gradients of the recurrent or attention model)
    # Variants (gdc.studies.scores.variants): each 0 turns its rows off.
    scoring_passes: int = 4  # K: the tracked run again with K fixed-parameter scoring passes per epoch (m, d from them)
    top_k: int = 6  # LM: the run again with tracker.spans='top_k_drop', this many tokens per sequence
    top_k_warmup: int = 2  # LM: top_k_drop's drop is epoch 0's token loss minus this epoch's
    tracin_checkpoints: int = 5  # self-influence: sum of lr x ||grad||^2 over this many epoch ends
    gn_damping: float = 0.01  # MLP: exact self-influence g^T (G + damping I)^-1 g, G the Gauss-Newton matrix (0: off)
    # Interventions (gdc.studies.scores.interventions): prune / down-weight the top fraction by a score and retrain.
    prune_fraction: float = 0.10  # of the training set removed (or down-weighted) per arm
    alpha: float = 0.5  # loss weight of the down-weighted examples
    n_boot: int = 1000  # bootstrap draws of every per-seed interval
    # LM setting (data.source = pydoc_canaries).
    lm_model: str = "gru"
    lm_width: int = 64
    lm_depth: int = 1
    lm_heads: int = 4
    lm_seq_len: int = 48
    lm_examples: int = 400
    lm_canaries: int = 8
    lm_repeats: int = 4
    lm_epochs: int = 30
    lm_batch_size: int = 32
    lm_learning_rate: float = 1e-2
    # MLP setting (data.source = synthetic).
    mlp_examples: int = 600  # rows before the 20% held-out split
    mlp_features: int = 8
    mlp_classes: int = 3
    mlp_label_noise: float = 0.1
    mlp_width: int = 64
    mlp_depth: int = 2
    mlp_epochs: int = 30
    mlp_batch_size: int = 32
    mlp_learning_rate: float = 1e-2

    def validate(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(f.default, bool):
                if not isinstance(value, bool):
                    _fail(f.name, value, "must be True or False")
            elif isinstance(f.default, str):
                if not isinstance(value, str):
                    _fail(f.name, value, "must be a string")
            elif isinstance(f.default, tuple):
                if not value:
                    _fail(f.name, value, "must be a non-empty tuple")
            elif isinstance(value, bool) or not isinstance(value, numbers.Real):
                _fail(f.name, value, "must be a number")
        if any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in self.seeds):
            _fail("seeds", self.seeds, "must be integers >= 0")
        if len(set(self.seeds)) != len(self.seeds):
            _fail("seeds", self.seeds, "must be distinct")
        if any(s not in SETTINGS for s in self.settings) or len(set(self.settings)) != len(self.settings):
            _fail("settings", self.settings, f"must be distinct values of {SETTINGS}")
        _at_least(self, "models", 4)  # the split-half curve needs two halves of >= 2 models
        _at_least(self, "vmap_size", 0)
        _at_least(self, "sweep", 2)
        _at_least(self, "early_epoch", 1)
        _at_least(self, "n_boot", 10)
        for name in ("scoring_passes", "top_k", "tracin_checkpoints"):
            _at_least(self, name, 0)
        _at_least(self, "top_k_warmup", 1)
        if not self.gn_damping >= 0:
            _fail("gn_damping", self.gn_damping, "must be >= 0 (0 turns self_influence_gn off)")
        if self.top_k > 127:
            _fail("top_k", self.top_k, "must be <= 127 (tracker.span_k)")
        if self.top_k and self.top_k_warmup > self.lm_epochs - 2:
            _fail("top_k_warmup", self.top_k_warmup, f"must be <= scores.lm_epochs - 2 = {self.lm_epochs - 2}")
        if not 0.0 < self.eps_percentile < 100.0:
            _fail("eps_percentile", self.eps_percentile, "must lie strictly between 0 and 100")
        if not 0.0 < self.prune_fraction < 1.0:
            _fail("prune_fraction", self.prune_fraction, "must lie strictly between 0 and 1")
        if not 0.0 <= self.alpha < 1.0:
            _fail("alpha", self.alpha, "must lie in [0, 1): a down-weight")
        if self.lm_model not in LM_MODELS:
            _fail("lm_model", self.lm_model, f"is not one of {LM_MODELS}")
        for name in ("lm_width", "lm_depth", "lm_heads", "lm_canaries", "lm_epochs", "lm_batch_size"):
            _at_least(self, name, 1)
        _at_least(self, "lm_repeats", 2)  # copies of a canary: the AUROC's positives and what tie_copies ties
        _at_least(self, "lm_seq_len", 48)  # a copy "the secret code of <key> is <6 digits>." fits in a row
        _at_least(self, "lm_examples", 8)
        if self.lm_canaries * self.lm_repeats > self.lm_examples // 2:
            _fail(
                "lm_canaries",
                self.lm_canaries,
                f"x scores.lm_repeats={self.lm_repeats} must be <= half of scores.lm_examples={self.lm_examples}",
            )
        for name in ("mlp_features", "mlp_width", "mlp_depth", "mlp_epochs", "mlp_batch_size"):
            _at_least(self, name, 1)
        _at_least(self, "mlp_examples", 20)
        _at_least(self, "mlp_classes", 2)
        if not 0.0 < self.mlp_label_noise < 0.5:
            _fail("mlp_label_noise", self.mlp_label_noise, "must lie in (0, 0.5): the flipped labels are the positives")
        for name in ("lm_learning_rate", "mlp_learning_rate"):
            if not getattr(self, name) > 0:
                _fail(name, getattr(self, name), "must be > 0")
        for name in ("lm_epochs", "mlp_epochs"):
            if self.early_epoch > getattr(self, name):
                _fail("early_epoch", self.early_epoch, f"must be <= scores.{name}={getattr(self, name)}")


def _fail(field: str, value: object, allowed: str) -> NoReturn:
    parse.fail("scores", field, value, allowed)


def _at_least(cfg: ScoresConfig, name: str, minimum: int) -> None:
    parse.int_at_least("scores", name, getattr(cfg, name), minimum)


def from_mapping(config: Mapping[str, Any]) -> ScoresConfig:
    """A validated ScoresConfig from a ConfigDict or dict with ``seed`` (unused: ``scores.seeds``) and ``scores``."""
    _, values = parse.seed_and_values(config, "scores")
    return parse.build(ScoresConfig, "scores", values)
