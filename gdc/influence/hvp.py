"""Hessian-vector products, Gauss-Newton products, exact Hessians and inverse-HVP solvers (CG, LiSSA).

Invariants:
  * ``hvp`` is forward-over-reverse (``jvp`` of ``grad``): one extra forward pass, no ``[P, P]`` matrix.
  * ``gnhvp`` is ``J^T H_out J v`` with J the Jacobian of the model outputs and H_out the Hessian of a loss that is
    convex in those outputs, so it is positive semi-definite even for a non-convex model.
  * Inverse HVPs solve ``(A + damping I) x = b`` for a symmetric matvec A. CG is ``jax.scipy.sparse.linalg.cg``;
    LiSSA (Agarwal et al. 2017) has no library implementation, so it is the short recursion below.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import jax.scipy.sparse.linalg

Matvec = Callable[[jax.Array], jax.Array]


def hvp(f: Callable[[jax.Array], jax.Array], theta_P: jax.Array, v_P: jax.Array) -> jax.Array:
    """``H(theta) v`` for a scalar objective ``f(theta_P)``."""
    return jax.jvp(jax.grad(f), (theta_P,), (v_P,))[1]


def gnhvp(
    out_fn: Callable[[jax.Array], jax.Array],
    out_loss_fn: Callable[[jax.Array], jax.Array],
    theta_P: jax.Array,
    v_P: jax.Array,
) -> jax.Array:
    """Gauss-Newton product ``J^T H_out J v`` for the objective ``out_loss_fn(out_fn(theta))``.

    Args:
      out_fn: parameters to model outputs (e.g. logits of the whole training set).
      out_loss_fn: outputs to the scalar objective; must be convex in the outputs (cross-entropy is).
      theta_P: where to linearise.
      v_P: the vector.
    """
    out, jv = jax.jvp(out_fn, (theta_P,), (v_P,))
    hjv = jax.jvp(jax.grad(out_loss_fn), (out,), (jv,))[1]
    _, vjp = jax.vjp(out_fn, theta_P)
    return vjp(hjv)[0]


def exact_hessian(f: Callable[[jax.Array], jax.Array], theta_P: jax.Array) -> jax.Array:
    """``[P, P]`` Hessian of a scalar objective (small models only)."""
    return jax.hessian(f)(theta_P)


def cg_solve(
    matvec: Matvec, b_P: jax.Array, *, damping: float = 0.0, tol: float = 1e-10, maxiter: int | None = None
) -> jax.Array:
    """``(A + damping I)^-1 b`` by conjugate gradients (``jax.scipy.sparse.linalg.cg``); A must be PSD."""
    x_P, _ = jax.scipy.sparse.linalg.cg(lambda v: matvec(v) + damping * v, b_P, tol=tol, maxiter=maxiter)
    return x_P


def lissa_solve(
    matvec: Matvec | Callable[[jax.Array, jax.Array], jax.Array],
    b_P: jax.Array,
    *,
    damping: float,
    scale: float,
    depth: int,
    indexed: bool = False,
) -> jax.Array:
    """``(A + damping I)^-1 b`` by the LiSSA recursion ``x <- b + x - (A + damping I) x / scale``, returning x/scale.

    The fixed point is ``scale (A + damping I)^-1 b``; the recursion converges when every eigenvalue of
    ``(A + damping I) / scale`` lies in (0, 2), at the rate ``(1 - (lambda_min + damping) / scale)^depth``.

    Args:
      matvec: ``v -> A v``; with ``indexed=True``, ``(v, t) -> A_t v`` (e.g. a minibatch HVP for iteration t, the
        stochastic LiSSA of the paper).
      b_P: right-hand side.
      damping: added to A.
      scale: must exceed the largest eigenvalue of A + damping I (over 2).
      depth: iterations.
    """
    mv = matvec if indexed else (lambda v, t: matvec(v))

    def body(t, x_P):
        return b_P + x_P - (mv(x_P, t) + damping * x_P) / scale

    return jax.lax.fori_loop(0, depth, body, b_P) / scale


def power_max_eig(matvec: Matvec, dim: int, *, iters: int = 50, seed: int = 0, dtype=jnp.float32) -> jax.Array:
    """Largest eigenvalue of a PSD matvec by power iteration (for LiSSA's ``scale``)."""
    v_P = jax.random.normal(jax.random.key(seed), (dim,), dtype)

    def body(_, v_P):
        w_P = matvec(v_P)
        return w_P / jnp.linalg.norm(w_P)

    v_P = jax.lax.fori_loop(0, iters, body, v_P / jnp.linalg.norm(v_P))
    return v_P @ matvec(v_P)
