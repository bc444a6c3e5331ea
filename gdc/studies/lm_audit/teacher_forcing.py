"""Model passes of the audit: batched greedy continuation and teacher-forced hidden states, each one jitted call.

``greedy_continue`` decodes ``num_steps`` tokens after equal-length prefixes with the whole loop on device (no
per-token host round trip). The LSTM carries its recurrent state through a ``lax.scan`` (one cell step per token);
other models (the transformer) rerun the causal forward on a fixed-shape buffer inside ``lax.fori_loop``, as
``gdc.evaluation.extraction`` does. Argmax ties go to the lowest token. An optional ``ablate = (layer, u_D, alpha)``
is applied inside the model at every step (see ``gdc.models.char_lm``).

Rows are processed in chunks of exactly ``batch_size`` (zero-padded) so each (model, prefix length, steps) compiles
once whatever the number of rows.
"""

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gdc.models.char_lm import Ablation, CharLSTM, CharTransformer, ablate_direction


def _lstm_step(model: CharLSTM, carry: tuple, token_B: jax.Array, ablate: Ablation) -> tuple[tuple, jax.Array]:
    """Feeds one token to every layer; returns (carry, next-token logits_BxV)."""
    gates0_Bx4D = model.w_in[0](ablate_direction(model.embed(token_B), 0, ablate))
    carry, x_BxD = model.step(carry, gates0_Bx4D, ablate)
    return carry, model.head(x_BxD).astype(jnp.float32)


def _lstm_decode(model: CharLSTM, prefix_BxP: jax.Array, num_steps: int, ablate: Ablation) -> jax.Array:
    b = prefix_BxP.shape[0]
    carry = model.initial_carry(b)
    logits_BxV = jnp.zeros((b, model.head.out_features), jnp.float32)

    def consume(state, token_B):
        carry, _ = state
        return _lstm_step(model, carry, token_B, ablate), None

    state, _ = jax.lax.scan(consume, (carry, logits_BxV), prefix_BxP.T)

    def generate(state, _):
        carry, logits_BxV = state
        next_B = jnp.argmax(logits_BxV, axis=-1).astype(prefix_BxP.dtype)
        return _lstm_step(model, carry, next_B, ablate), next_B

    _, out_SxB = jax.lax.scan(generate, state, None, length=num_steps)
    return out_SxB.T


def _forward_decode(model: nnx.Module, prefix_BxP: jax.Array, num_steps: int, ablate: Ablation) -> jax.Array:
    b, p = prefix_BxP.shape
    buf_BxT = jnp.zeros((b, p + num_steps), prefix_BxP.dtype).at[:, :p].set(prefix_BxP)

    def step(k, buf_BxT):
        logits_BxTxV = model(buf_BxT[:, :-1], ablate=ablate)
        next_B = jnp.argmax(logits_BxTxV[:, p - 1 + k], axis=-1).astype(buf_BxT.dtype)
        return buf_BxT.at[:, p + k].set(next_B)

    return jax.lax.fori_loop(0, num_steps, step, buf_BxT)[:, p:]


@functools.cache
def _decode_fn(graphdef: nnx.GraphDef, num_steps: int, ablate_layer: int | None) -> Callable:
    def decode(params, prefix_BxP, u_D, alpha):
        model = nnx.merge(graphdef, params)
        ablate = None if ablate_layer is None else (ablate_layer, u_D, alpha)
        if isinstance(model, CharLSTM):
            return _lstm_decode(model, prefix_BxP, num_steps, ablate)
        return _forward_decode(model, prefix_BxP, num_steps, ablate)

    return jax.jit(decode)


def _chunks(x_Nx: np.ndarray, batch_size: int):
    """Chunks of exactly ``batch_size`` rows (the last zero-padded), so every call has the same shape."""
    for start in range(0, len(x_Nx), batch_size):
        part = x_Nx[start : start + batch_size]
        pad = np.zeros((batch_size - len(part), *part.shape[1:]), part.dtype)
        yield np.concatenate([part, pad]), len(part)


def _ablation_args(ablate: Ablation, width: int) -> tuple[int | None, jax.Array, jax.Array]:
    if ablate is None:
        return None, jnp.zeros(width, jnp.float32), jnp.float32(0.0)
    layer, u_D, alpha = ablate
    return int(layer), jnp.asarray(u_D, jnp.float32), jnp.float32(alpha)


def _width(graphdef: nnx.GraphDef, params: nnx.State) -> int:
    model = nnx.merge(graphdef, params)
    return model.width if isinstance(model, CharLSTM) else model.tok.features


def greedy_continue(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    prefix_NxP: np.ndarray,
    num_steps: int,
    *,
    ablate: Ablation = None,
    batch_size: int = 128,
) -> np.ndarray:
    """Greedy continuation of equal-length prefixes.

    Args:
        graphdef, params: a causal char LM (CharLSTM or CharTransformer).
        prefix_NxP: int32 [N, P] prompt tokens, P >= 1.
        num_steps: tokens to generate.
        ablate: optional (layer, u_D, alpha) direction ablation applied at every step.
        batch_size: rows per jitted call (the last chunk is zero-padded).

    Returns:
        int32 [N, num_steps] generated tokens.
    """
    prefix_NxP = np.asarray(prefix_NxP, np.int32)
    if prefix_NxP.ndim != 2 or prefix_NxP.shape[1] < 1:
        raise ValueError(f"prefix_NxP must be [N, P] with P >= 1, got shape {prefix_NxP.shape}.")
    model = nnx.merge(graphdef, params)
    if isinstance(model, CharTransformer) and prefix_NxP.shape[1] + num_steps - 1 > model.pos.num_embeddings:
        raise ValueError(
            f"prefix {prefix_NxP.shape[1]} + {num_steps} steps needs {prefix_NxP.shape[1] + num_steps - 1} inputs; "
            f"the transformer takes at most {model.pos.num_embeddings}."
        )
    layer, u_D, alpha = _ablation_args(ablate, _width(graphdef, params))
    fn = _decode_fn(graphdef, num_steps, layer)
    parts = [(fn(params, jnp.asarray(x), u_D, alpha), n) for x, n in _chunks(prefix_NxP, batch_size)]
    return np.concatenate([np.asarray(jax.device_get(out))[:n] for out, n in parts]).reshape(-1, num_steps)


@functools.cache
def _hidden_fn(graphdef: nnx.GraphDef, ablate_layer: int | None) -> Callable:
    def run(params, tokens_BxT, u_D, alpha):
        model = nnx.merge(graphdef, params)
        ablate = None if ablate_layer is None else (ablate_layer, u_D, alpha)
        logits_BxLxV, hidden = model(tokens_BxT[:, :-1], return_hidden=True, ablate=ablate)
        targets_BxL = tokens_BxT[:, 1:]
        logp_BxLxV = jax.nn.log_softmax(logits_BxLxV, axis=-1)
        nll_BxL = -jnp.take_along_axis(logp_BxLxV, targets_BxL[..., None], axis=-1)[..., 0]
        correct_BxL = jnp.argmax(logits_BxLxV, axis=-1) == targets_BxL
        return nll_BxL, correct_BxL, jnp.stack(hidden).astype(jnp.float32)

    return jax.jit(run)


def teacher_forced(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    tokens_NxT: np.ndarray,
    *,
    ablate: Ablation = None,
    with_hidden: bool = True,
    batch_size: int = 64,
) -> dict[str, np.ndarray]:
    """One teacher-forced pass over full sequences (inputs ``tokens[:, :-1]``, targets ``tokens[:, 1:]``).

    Returns:
        ``nll_NxL`` f32 per-token NLL (nats), ``correct_NxL`` bool (greedy argmax reproduces the token) and, with
        ``with_hidden``, ``hidden_KxNxLxD`` f32 (K = depth + 1 layers; position t has read tokens 0..t and predicts
        token t + 1).
    """
    tokens_NxT = np.asarray(tokens_NxT, np.int32)
    layer, u_D, alpha = _ablation_args(ablate, _width(graphdef, params))
    fn = _hidden_fn(graphdef, layer)
    nll, correct, hidden = [], [], []
    for x, n in _chunks(tokens_NxT, batch_size):
        out = jax.device_get(fn(params, jnp.asarray(x), u_D, alpha))
        nll.append(out[0][:n])
        correct.append(out[1][:n])
        if with_hidden:
            hidden.append(out[2][:, :n])
    res = {"nll_NxL": np.concatenate(nll), "correct_NxL": np.concatenate(correct)}
    if with_hidden:
        res["hidden_KxNxLxD"] = np.concatenate(hidden, axis=1)
    return res
