"""Per-example gradients on a flat parameter vector, reduced inside chunks.

Invariants:
  * ``loss_fn(theta_P, batch) -> loss_B`` is per-example (gdc.losses); an example's gradient is the gradient of its
    own loss computed with a batch of one, so it cannot depend on its batch-mates.
  * ``map_examples`` runs ``vmap(grad)`` over chunks of ``batch_size`` examples inside ``jax.lax.map``: only a
    ``[batch_size, P]`` block of gradients exists at a time, and ``reduce_fn`` turns each gradient into something
    small (a norm, M dot products, a self-influence) before the chunk ends. Only ``per_example_grads``, meant for
    tests and tiny problems, returns ``[N, P]``.
  * No sharding constraints inside the vmapped function (STYLE §8.5).
"""

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from gdc.types import Batch, PyTree

LossFn = Callable[[jax.Array, Batch], jax.Array]


def flatten(params: PyTree) -> tuple[jax.Array, Callable[[jax.Array], PyTree]]:
    """(theta_P, unravel): the parameters as one flat vector and the map back to the pytree."""
    return ravel_pytree(params)


def example_grad(loss_fn: LossFn, theta_P: jax.Array, example: Batch) -> jax.Array:
    """Gradient ``[P]`` of one example's loss (``example`` holds arrays without the batch axis)."""
    batch = jax.tree.map(lambda a: a[None], example)
    return jax.grad(lambda t: loss_fn(t, batch)[0])(theta_P)


def _num_examples(batch: Batch) -> int:
    return jax.tree.leaves(batch)[0].shape[0]


@functools.partial(jax.jit, static_argnames=("loss_fn", "reduce_fn", "batch_size"))
def map_examples(
    loss_fn: LossFn, theta_P: jax.Array, batch: Batch, reduce_fn: Callable[[jax.Array], PyTree], batch_size: int = 64
) -> PyTree:
    """``reduce_fn(g_i)`` for every example i, gradients computed ``batch_size`` at a time.

    Args:
      loss_fn: per-example loss ``(theta_P, batch) -> loss_B``.
      theta_P: flat parameters.
      batch: arrays with a leading example axis N.
      reduce_fn: maps one gradient ``[P]`` to a small pytree (vmapped over the chunk).
      batch_size: examples per chunk (the last chunk may be smaller).

    Returns:
      ``reduce_fn``'s outputs stacked along a leading N axis.
    """
    size = max(1, min(batch_size, _num_examples(batch)))
    return jax.lax.map(lambda ex: reduce_fn(example_grad(loss_fn, theta_P, ex)), batch, batch_size=size)


def per_example_grads(loss_fn: LossFn, theta_P: jax.Array, batch: Batch, batch_size: int = 64) -> jax.Array:
    """``[N, P]`` gradients: for tests and tiny problems only (everything else reduces inside the chunk)."""
    return map_examples(loss_fn, theta_P, batch, _identity, batch_size)


def _identity(g_P: jax.Array) -> jax.Array:
    return g_P


def _sq_norm(g_P: jax.Array) -> jax.Array:
    return g_P @ g_P


def grad_sq_norms(loss_fn: LossFn, theta_P: jax.Array, batch: Batch, batch_size: int = 64) -> jax.Array:
    """``[N]`` squared gradient norms ``||g_i||^2``."""
    return map_examples(loss_fn, theta_P, batch, _sq_norm, batch_size)


def grad_dots(loss_fn: LossFn, theta_P: jax.Array, batch: Batch, v_MxP: jax.Array, batch_size: int = 64) -> jax.Array:
    """``[N, M]`` dot products ``g_i . v_m`` with M fixed vectors (e.g. inverse-HVPs of test gradients)."""
    return _grad_dots(loss_fn, theta_P, batch, v_MxP, batch_size)


@functools.partial(jax.jit, static_argnames=("loss_fn", "batch_size"))
def _grad_dots(loss_fn, theta_P, batch, v_MxP, batch_size):
    size = max(1, min(batch_size, _num_examples(batch)))
    return jax.lax.map(lambda ex: v_MxP @ example_grad(loss_fn, theta_P, ex), batch, batch_size=size)


def self_influence(
    loss_fn: LossFn,
    theta_P: jax.Array,
    batch: Batch,
    inverse: Callable[[jax.Array], jax.Array],
    batch_size: int = 64,
) -> jax.Array:
    """``[N]`` self-influence ``g_i^T H^-1 g_i``.

    Args:
      inverse: ``v -> H^-1 v`` for one vector (an explicit inverse, or a CG/LiSSA solve, which then runs vmapped
        over the chunk).
    """
    return map_examples(loss_fn, theta_P, batch, lambda g: g @ inverse(g), batch_size)


def tracin(
    loss_fn: LossFn,
    thetas_ExP: jax.Array,
    lrs_E: jax.Array,
    batch: Batch,
    test_batch: Batch | None = None,
    batch_size: int = 64,
) -> jax.Array:
    """TracIn (Pruthi et al. 2020) over C saved checkpoints: ``sum_c lr_c g_i(theta_c) . g_t(theta_c)``.

    Args:
      thetas_ExP: checkpoint parameters.
      lrs_E: learning rate in effect at each checkpoint.
      batch: the N training examples.
      test_batch: M test examples; None gives self-TracIn ``sum_c lr_c ||g_i(theta_c)||^2``.

    Returns:
      ``[N, M]`` scores, or ``[N]`` for self-TracIn. The M test gradients per checkpoint are materialised (M small).
    """

    def one(theta_P, lr):
        if test_batch is None:
            return lr * grad_sq_norms(loss_fn, theta_P, batch, batch_size)
        g_MxP = per_example_grads(loss_fn, theta_P, test_batch, batch_size)
        return lr * grad_dots(loss_fn, theta_P, batch, g_MxP, batch_size)

    def body(total, xs):
        return total + one(*xs), None

    shape = (_num_examples(batch),) if test_batch is None else (_num_examples(batch), _num_examples(test_batch))
    total, _ = jax.lax.scan(body, jnp.zeros(shape, thetas_ExP.dtype), (thetas_ExP, lrs_E.astype(thetas_ExP.dtype)))
    return total
