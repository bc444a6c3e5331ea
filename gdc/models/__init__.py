"""Model zoo, used functionally: ``build`` splits once, ``per_example_loss`` is a pure function of params.

Outside this package models are ``(graphdef, params)``: a static graph definition and a pytree of arrays.
"""

import dataclasses

import jax
from flax import nnx

from gdc import losses
from gdc.errors import ConfigError
from gdc.models import ddpm, tabddpm
from gdc.models.char_lm import CharGRU, CharLSTM, CharTransformer
from gdc.models.decode import DECODABLE, branch_step, can_decode, decode_init, decode_step, prefill  # noqa: F401
from gdc.models.mlp import MLP

MODELS = ("mlp", "lstm", "gru", "transformer", "ddpm", "tabddpm")
KIND = {
    "mlp": "classification",
    "lstm": "lm",
    "gru": "lm",
    "transformer": "lm",
    "ddpm": "tabular",
    "tabddpm": "tabular",
}
DIFFUSION = (ddpm.DDPM, tabddpm.TabDDPM)  # no logits: a denoising loss, sampled by their own modules
RECURRENT = (CharLSTM, CharGRU)  # models with ``initial_carry`` and ``step``: decoded one token at a time
# DECODABLE: the character LMs, all with the incremental-decoding API of gdc/models/decode.py (re-exported above).


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    name: str = "lstm"
    width: int = 128
    depth: int = 1
    num_heads: int = 4  # transformer only
    dropout: float = 0.0
    diffusion_steps: int = 100  # ddpm / tabddpm only: T of the cosine noise schedule
    score_draws: int = 8  # ddpm / tabddpm only: fixed (t, noise) draws per example averaged in scoring/eval passes

    @property
    def kind(self) -> str:
        return KIND[self.name]

    def validate(self) -> None:
        if self.name not in MODELS:
            raise ConfigError(f"model.name={self.name!r} is not one of {MODELS}.")
        if self.width < 1 or self.depth < 1:
            raise ConfigError(f"model.width={self.width}, model.depth={self.depth}: both must be >= 1.")
        if self.name == "transformer" and self.width % self.num_heads:
            raise ConfigError(
                f"model.num_heads={self.num_heads} must divide model.width={self.width} for the transformer."
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout={self.dropout}: must be in [0, 1).")
        if self.diffusion_steps < 2 or self.score_draws < 1:
            raise ConfigError(
                f"model.diffusion_steps={self.diffusion_steps}, model.score_draws={self.score_draws}: need >= 2 "
                "diffusion steps and >= 1 scoring draw."
            )


def build(
    cfg: ModelConfig,
    *,
    seed: int,
    vocab_size: int = 256,
    seq_len: int = 0,
    num_features: int = 0,
    num_classes: int = 0,
    num_numeric: int = 0,
    cards: tuple[int, ...] = (),
) -> tuple[nnx.GraphDef, nnx.State]:
    """Initialises the model and splits it into (graphdef, params).

    ``num_numeric`` and ``cards`` (tabddpm only): the table's column layout, numeric columns then one one-hot block
    per categorical column; they must add up to ``num_features``.
    """
    rngs = nnx.Rngs(seed)
    if cfg.name == "tabddpm":
        if num_numeric < 0 or any(c < 1 for c in cards) or num_numeric + sum(cards) != num_features or not num_features:
            raise ConfigError(
                f"model.name='tabddpm' needs the table's column layout: {num_numeric} numeric columns + one-hot blocks "
                f"{tuple(cards)} must fill the {num_features} encoded columns; write the table with "
                "gdc.studies.tabular.data.save(..., layout=encoder.layout), or use model.name='ddpm'."
            )
        model = tabddpm.TabDDPM(
            num_numeric, tuple(cards), cfg.width, cfg.depth, cfg.diffusion_steps, cfg.score_draws, rngs=rngs
        )
    elif cfg.name == "ddpm":
        model = ddpm.DDPM(num_features, cfg.width, cfg.depth, cfg.diffusion_steps, cfg.score_draws, rngs=rngs)
    elif cfg.name == "mlp":
        model = MLP(num_features, num_classes, cfg.width, cfg.depth, cfg.dropout, rngs=rngs)
    elif cfg.name == "lstm":
        model = CharLSTM(vocab_size, cfg.width, cfg.depth, cfg.dropout, rngs=rngs)
    elif cfg.name == "gru":
        model = CharGRU(vocab_size, cfg.width, cfg.depth, cfg.dropout, rngs=rngs)
    else:
        model = CharTransformer(vocab_size, seq_len, cfg.width, cfg.depth, cfg.num_heads, cfg.dropout, rngs=rngs)
    graphdef, params = nnx.split(model, nnx.Param)
    return graphdef, params


def forward(graphdef: nnx.GraphDef, params: nnx.State, batch: dict, keys_B: jax.Array | None = None) -> jax.Array:
    """Logits: ``[B, L, V]`` for language models (predicting ``tokens[:, 1:]``), ``[B, K]`` for classifiers."""
    model = nnx.merge(graphdef, params)
    if isinstance(model, DIFFUSION):
        raise TypeError("a ddpm has no logits: use per_example_loss, or the sample / score of its module.")
    if isinstance(model, MLP):
        return model(batch["x"], keys_B)
    return model(batch["tokens"][:, :-1], keys_B)


def per_example_loss(
    graphdef: nnx.GraphDef, params: nnx.State, batch: dict, keys_B: jax.Array | None = None
) -> tuple[jax.Array, jax.Array]:
    """Returns (loss_B, acc_B): each example's mean loss and accuracy over its own valid tokens (f32).

    For the ddpm / tabddpm: the denoising loss (noise and step from ``keys_B``, or fixed per-id draws when None) and
    zeros.
    """
    model = nnx.merge(graphdef, params)
    if isinstance(model, ddpm.DDPM):
        return ddpm.per_example_loss(model, batch, keys_B)
    if isinstance(model, tabddpm.TabDDPM):
        return tabddpm.per_example_loss(model, batch, keys_B)
    logits = forward(graphdef, params, batch, keys_B)
    if "y" in batch:
        return losses.classification_nll(logits, batch["y"])
    return losses.sequence_nll(logits, batch["tokens"][:, 1:], batch["token_mask"])


def per_example_span_loss(
    graphdef: nnx.GraphDef, params: nnx.State, batch: dict, keys_B: jax.Array | None, num_spans: int
) -> tuple[jax.Array, jax.Array, tuple[jax.Array, jax.Array, jax.Array]]:
    """``per_example_loss`` of a language model plus its marked spans' losses from the same logits (``batch["span"]``:
    int ``[B, L]`` span ids over the targets): ``(loss_B, acc_B, (loss_BxSp, acc_BxSp, valid_BxSp))``
    (``losses.span_nll``)."""
    logits = forward(graphdef, params, batch, keys_B)
    targets_BxL, mask_BxL = batch["tokens"][:, 1:], batch["token_mask"]
    loss_B, acc_B = losses.sequence_nll(logits, targets_BxL, mask_BxL)
    return loss_B, acc_B, losses.span_nll(logits, targets_BxL, mask_BxL, batch["span"], num_spans)
