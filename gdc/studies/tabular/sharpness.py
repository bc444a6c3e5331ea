"""Sharpness of the learned log-density (Jeon et al., ICML 2025): eigenvalues of the Jacobian of the score.

At a point x and a small step t, ``H_t(x) = d s_theta(x, t) / dx`` approximates the Hessian of log p_t. Memorized
points sit at isolated sharp peaks: many large negative eigenvalues. The rows here are low-dimensional (D <= ~64), so
the Jacobian is exact (``jax.jacfwd``). A learned score is not exactly a gradient field, so its Jacobian is not exactly
symmetric; we take the eigenvalues of the symmetric part (J + J^T) / 2, which are real and equal the Hessian's when
the score is conservative. The trace is the same for J and its symmetric part.

For the hybrid model (``tabddpm``) the density is continuous in the numeric columns only: the Jacobian is taken over
those F columns with the row's categories held as the model's categorical input, the sharpness of the conditional
log-density log p_t(x_num | categories) (``[N, F]`` eigenvalues).
"""

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gdc.models import ddpm, tabddpm


def spectrum(score_one: Callable[[jax.Array], jax.Array], x_BxD: jax.Array, num_vars: int) -> jax.Array:
    """``[B, num_vars]`` ascending eigenvalues of the symmetrised Jacobian of ``score_one`` (a row ``[D]`` -> its
    score ``[num_vars]``) with respect to the row's first ``num_vars`` coordinates, the rest held fixed."""

    def one(x_D):
        rest = x_D[num_vars:]
        jac = jax.jacfwd(lambda v: score_one(jnp.concatenate([v, rest])))(x_D[:num_vars])
        return jnp.linalg.eigvalsh(0.5 * (jac + jac.T))

    return jax.vmap(one)(x_BxD)


@functools.partial(jax.jit, static_argnames=("graphdef", "t"))
def _eigs(graphdef, params, x_BxD: jax.Array, t: int) -> jax.Array:
    model = nnx.merge(graphdef, params)
    if isinstance(model, tabddpm.TabDDPM):
        return spectrum(lambda x_D: tabddpm.score(model, x_D[None], t)[0], x_BxD, model.num_numeric)
    return spectrum(lambda x_D: ddpm.score(model, x_D[None], t)[0], x_BxD, x_BxD.shape[1])


def eigenvalues(graphdef, params, x_NxD: np.ndarray, t: int = 1, chunk: int = 128) -> np.ndarray:
    """``[N, D]`` ascending eigenvalues of the symmetrised score Jacobian at each row, step index ``t`` (``[N, F]``,
    the numeric columns, for the hybrid model)."""
    x_NxD = np.asarray(x_NxD, np.float32)
    # One device: the Jacobians are small, and an 8-way replicated program around LAPACK's eigensolver on forced CPU
    # devices hung intermittently in the test suite (every device thread waiting in the same program).
    params = jax.device_put(params, jax.local_devices()[0])
    n = len(x_NxD)
    pad = (-n) % chunk
    x_pad = np.concatenate([x_NxD, np.zeros((pad, x_NxD.shape[1]), np.float32)])
    parts = [_eigs(graphdef, params, jnp.asarray(x_pad[s : s + chunk]), t) for s in range(0, n + pad, chunk)]
    return np.concatenate(jax.device_get(parts))[:n]


def summary(eigs_NxD: np.ndarray, kappa: float) -> dict[str, np.ndarray]:
    """Per row: eigenvalues below -kappa (count), sum of the negative eigenvalues, trace."""
    return {
        "count_below": (eigs_NxD < -kappa).sum(axis=1),
        "neg_sum": np.where(eigs_NxD < 0, eigs_NxD, 0.0).sum(axis=1),
        "trace": eigs_NxD.sum(axis=1),
    }
