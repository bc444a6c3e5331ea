"""Per-example losses only: every function returns ``[B]`` values normalised within each example.

Reduction to a scalar happens in exactly one place, the train step, under ``mask`` and ``weight``. Never divide by a
batch-wide token count here: an example's loss must not depend on its batch-mates.
"""

import jax
import jax.numpy as jnp


def sequence_nll(
    logits_BxLxV: jax.Array, targets_BxL: jax.Array, token_mask_BxL: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Mean token NLL and token accuracy over each example's own valid tokens.

    Returns:
      (loss_B, acc_B), both f32. An example with no valid token gets 0 for both.
    """
    logits_BxLxV = logits_BxLxV.astype(jnp.float32)
    logp_BxLxV = jax.nn.log_softmax(logits_BxLxV, axis=-1)
    nll_BxL = -jnp.take_along_axis(logp_BxLxV, targets_BxL[..., None], axis=-1)[..., 0]
    correct_BxL = jnp.argmax(logits_BxLxV, axis=-1) == targets_BxL
    w_BxL = token_mask_BxL.astype(jnp.float32)
    count_B = jnp.maximum(w_BxL.sum(axis=-1), 1.0)
    return (nll_BxL * w_BxL).sum(-1) / count_B, (correct_BxL * w_BxL).sum(-1) / count_B


def token_nll(logits_BxLxV: jax.Array, targets_BxL: jax.Array) -> jax.Array:
    """Per-token NLL ``[B, L]`` (f32), for span-level scorers."""
    logp_BxLxV = jax.nn.log_softmax(logits_BxLxV.astype(jnp.float32), axis=-1)
    return -jnp.take_along_axis(logp_BxLxV, targets_BxL[..., None], axis=-1)[..., 0]


def span_nll(
    logits_BxLxV: jax.Array, targets_BxL: jax.Array, token_mask_BxL: jax.Array, span_BxL: jax.Array, num_spans: int
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Mean token NLL and token accuracy over each marked span's valid tokens (``span_BxL``: 0 none, s in
    1..``num_spans`` the token's span).

    Returns:
      (loss_BxSp, acc_BxSp, valid_BxSp): f32, f32 and bool (the span has a valid token in the example; the loss and
      accuracy of a span without one are 0).
    """
    logits_BxLxV = logits_BxLxV.astype(jnp.float32)
    nll_BxL = token_nll(logits_BxLxV, targets_BxL)
    correct_BxL = (jnp.argmax(logits_BxLxV, axis=-1) == targets_BxL).astype(jnp.float32)
    ids_Sp = jnp.arange(1, num_spans + 1, dtype=jnp.int32)
    w_BxLxSp = ((span_BxL.astype(jnp.int32)[..., None] == ids_Sp[None, None, :]) & token_mask_BxL[..., None]).astype(
        jnp.float32
    )
    count_BxSp = w_BxLxSp.sum(axis=1)
    denom_BxSp = jnp.maximum(count_BxSp, 1.0)
    loss_BxSp = (nll_BxL[..., None] * w_BxLxSp).sum(axis=1) / denom_BxSp
    acc_BxSp = (correct_BxL[..., None] * w_BxLxSp).sum(axis=1) / denom_BxSp
    return loss_BxSp, acc_BxSp, count_BxSp > 0


def classification_nll(logits_BxK: jax.Array, labels_B: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Cross-entropy and 0/1 accuracy per example. Returns (loss_B, acc_B), f32."""
    logits_BxK = logits_BxK.astype(jnp.float32)
    logp_BxK = jax.nn.log_softmax(logits_BxK, axis=-1)
    loss_B = -jnp.take_along_axis(logp_BxK, labels_B[:, None], axis=-1)[:, 0]
    acc_B = (jnp.argmax(logits_BxK, axis=-1) == labels_B).astype(jnp.float32)
    return loss_B, acc_B


def weighted_mean(loss_B: jax.Array, mask_B: jax.Array, weight_B: jax.Array | None = None) -> jax.Array:
    """``sum(w * mask * loss) / sum(w * mask)``: the batch objective.

    Weights are renormalised by their masked sum, so down-weighting some examples shifts the gradient towards the rest
    without changing the effective learning rate of a batch (paper §10 item 10 leaves this open; we choose the
    normalised form). A batch with zero total weight contributes zero.
    """
    w_B = mask_B.astype(jnp.float32)
    if weight_B is not None:
        w_B = w_B * weight_B.astype(jnp.float32)
    # jnp.where keeps NaN losses of padding rows (w = 0) out of the sum.
    return jnp.where(w_B > 0, w_B * loss_B, 0.0).sum() / jnp.maximum(w_B.sum(), 1e-12)
