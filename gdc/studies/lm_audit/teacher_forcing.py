"""Teacher-forced passes of the audit (not decoding: every position reads the true tokens before it), one jitted
call per chunk: per-token NLL, whether the greedy argmax reproduces each token, and every layer's hidden states
(for the probes), all under an optional ``ablate = (layer, u_D, alpha)`` (see ``gdc.models.char_lm``).

Rows are processed in chunks of exactly ``batch_size`` (zero-padded) so each (model, length) compiles once
whatever the number of rows. Greedy continuation is the engine's ``gdc.evaluation.extraction.greedy_decode``.
"""

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gdc.evaluation import extraction
from gdc.models.char_lm import Ablation


def _chunks(x_Nx: np.ndarray, batch_size: int):
    """Chunks of exactly ``batch_size`` rows (the last zero-padded), so every call has the same shape."""
    for start in range(0, len(x_Nx), batch_size):
        part = x_Nx[start : start + batch_size]
        pad = np.zeros((batch_size - len(part), *part.shape[1:]), part.dtype)
        yield np.concatenate([part, pad]), len(part)


@functools.cache
def _hidden_fn(graphdef: nnx.GraphDef, layer: int | None) -> Callable:
    def run(params, tokens_BxT, direction):
        model = nnx.merge(graphdef, params)
        ablate = extraction.with_layer(layer, direction)
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
        ``with_hidden``, ``hidden_LyxNxLxD`` f32 (Ly = depth + 1 layers; position t has read tokens 0..t and predicts
        token t + 1).
    """
    tokens_NxT = np.asarray(tokens_NxT, np.int32)
    layer, direction = extraction.ablation_args(ablate)
    fn = _hidden_fn(graphdef, layer)
    nll, correct, hidden = [], [], []
    for x, n in _chunks(tokens_NxT, batch_size):
        out = jax.device_get(fn(params, jnp.asarray(x), direction))
        nll.append(out[0][:n])
        correct.append(out[1][:n])
        if with_hidden:
            hidden.append(out[2][:, :n])
    res = {"nll_NxL": np.concatenate(nll), "correct_NxL": np.concatenate(correct)}
    if with_hidden:
        res["hidden_LyxNxLxD"] = np.concatenate(hidden, axis=1)
    return res
