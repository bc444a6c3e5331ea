"""Deterministic fits and exact leave-one-out retraining for small convex models: the influence ground truth.

Invariants:
  * The objective is ``objective(theta_P, w_N) -> scalar`` with per-example weights ``w_N``; leaving example i out
    is ``w_N[i] = 0`` (the normalisation, e.g. 1/n, stays as the caller wrote it).
  * ``fit_lbfgs`` is scipy's L-BFGS-B on a jitted ``value_and_grad``; ``lbfgs_solve`` is ``optax.lbfgs`` in a
    while loop, so LOO retrains vmap on device. Run under ``jax.enable_x64(True)`` with float64 arrays so that the
    gradient tolerance can be tight. Every fit reports its final gradient norm, so a caller can check convergence
    instead of trusting it.
  * LOO retrains are warm-started from the full-data optimum (they are one example away from it).
"""

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.tree_utils
import scipy.optimize

Objective = Callable[..., jax.Array]  # (theta_P, w_N, *args) -> scalar


@functools.cache
def _value_and_grad(objective: Objective) -> Callable:
    return jax.jit(jax.value_and_grad(objective))


def _fit(vg, theta0_P: np.ndarray, w_N, args: tuple, gtol: float, maxiter: int) -> tuple[np.ndarray, dict]:
    dtype = np.asarray(theta0_P).dtype

    def fun(t):
        v, g = vg(t.astype(dtype), w_N, *args)
        return float(v), np.asarray(g, np.float64)

    res = scipy.optimize.minimize(
        fun,
        np.asarray(theta0_P, np.float64),
        jac=True,
        method="L-BFGS-B",
        options={"gtol": gtol, "ftol": 0.0, "maxiter": maxiter, "maxcor": 30},
    )
    _, g = fun(res.x)
    return res.x.astype(dtype), {"grad_norm": float(np.linalg.norm(g)), "iters": int(res.nit), "message": res.message}


def fit_lbfgs(
    objective: Objective,
    theta0_P: np.ndarray,
    w_N: jax.Array,
    *args,
    gtol: float = 1e-10,
    maxiter: int = 10_000,
) -> tuple[np.ndarray, dict]:
    """Minimises ``objective(theta, w_N, *args)`` from ``theta0_P`` by scipy's L-BFGS-B.

    Pass data through ``args`` (not a closure) so that one compiled objective serves every call.

    Returns:
      (theta_P, info): info holds grad_norm (Euclidean norm of the final gradient), iters and scipy's message.
    """
    return _fit(_value_and_grad(objective), theta0_P, jnp.asarray(w_N), args, gtol, maxiter)


def lbfgs_solve(
    f: Callable[[jax.Array], jax.Array], theta0_P: jax.Array, *, tol: float = 1e-12, maxiter: int = 200
) -> tuple[jax.Array, jax.Array]:
    """Minimises ``f`` with ``optax.lbfgs`` (zoom line search) until ``||grad|| <= tol``; traceable, so it vmaps.

    Returns:
      (theta_P, grad_norm): the solution and the norm of the gradient there.
    """
    opt = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(f)

    def cond(carry):
        _, state, k = carry
        grad_norm = optax.tree_utils.tree_l2_norm(optax.tree_utils.tree_get(state, "grad"))
        return (k == 0) | ((k < maxiter) & (grad_norm > tol))

    def body(carry):
        theta_P, state, k = carry
        value, grad_P = value_and_grad(theta_P, state=state)
        updates, state = opt.update(grad_P, state, theta_P, value=value, grad=grad_P, value_fn=f)
        return optax.apply_updates(theta_P, updates), state, k + 1

    theta_P, _, _ = jax.lax.while_loop(cond, body, (theta0_P, opt.init(theta0_P), 0))
    return theta_P, jnp.linalg.norm(jax.grad(f)(theta_P))


def loo_retrain(
    objective: Objective,
    theta_hat_P: jax.Array,
    w_N: jax.Array,
    ids: jax.Array,
    *args,
    tol: float = 1e-12,
    maxiter: int = 200,
    batch_size: int = 512,
) -> tuple[jax.Array, jax.Array]:
    """Exact leave-one-out optima by ``optax.lbfgs``, warm-started at the full-data optimum, vmapped on device.

    Args:
      objective: ``(theta_P, w_N, *args) -> scalar``.
      theta_hat_P: the full-data optimum (e.g. from ``fit_lbfgs``).
      w_N: the full-data weights.
      ids: int ``[I]`` examples to leave out, one retrain each.
      *args: passed to ``objective`` (the data).
      tol: stop a retrain once its gradient norm is below this.
      maxiter: L-BFGS iterations at most.
      batch_size: retrains run together (``lax.map`` chunks).

    Returns:
      (thetas_IxP, grad_norms_I): the LOO optima and the gradient norm each ended at.
    """
    ids_I = jnp.asarray(ids)
    return _loo(objective, tol, maxiter, batch_size, jnp.asarray(theta_hat_P), jnp.asarray(w_N), ids_I, args)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _loo(objective, tol, maxiter, batch_size, theta_hat_P, w_N, ids_I, args):
    def one(i):
        w_loo_N = w_N.at[i].set(0)
        return lbfgs_solve(lambda t: objective(t, w_loo_N, *args), theta_hat_P, tol=tol, maxiter=maxiter)

    return jax.lax.map(one, ids_I, batch_size=max(1, min(batch_size, ids_I.shape[0])))
