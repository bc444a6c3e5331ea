"""Plain SGD on a flat parameter vector with the engine's per-example tracker: the training harness of the checks.

Invariants:
  * The update is ``theta <- theta - lr * (grad(batch objective) + l2 * theta)`` with a constant learning rate, the
    setting of Hardt, Recht and Singer (2016). The batch objective is ``sum_b w_b loss_b / B`` (``normalize=False``:
    raw weights, so a weight scales that example's gradient, as the stability bound assumes) or
    ``sum_b w_b loss_b / sum_b w_b`` (``normalize=True``: gdc.losses.weighted_mean, the engine's form).
  * Each epoch visits a permutation drawn from ``fold_in(key, epoch)`` (on device, so runs vmap over keys, weights
    and datasets); ``n // batch_size`` steps per epoch, the remainder of the permutation is skipped.
  * With ``tracker_cfg`` set, ``checkpoints_per_epoch`` times per epoch the loss of every example is computed at
    fixed parameters (a scoring pass, paper.md §10 item 5) and folded into ``gdc.tracker`` with
    ``epoch = checkpoint index``; the same losses come back as ``loss_ExN`` so thresholds can be swept offline, and
    the parameters at each checkpoint as ``thetas_ExP`` (for TracIn).
"""

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from gdc import losses
from gdc import tracker as tracker_lib
from gdc.types import Batch

LossFn = Callable[[jax.Array, Batch], jax.Array]


def _num_examples(batch: Batch) -> int:
    return jax.tree.leaves(batch)[0].shape[0]


def train(
    loss_fn: LossFn,
    theta0_P: jax.Array,
    data: Batch,
    key: jax.Array,
    weights_N: jax.Array | None = None,
    *,
    lr: float,
    epochs: int,
    batch_size: int,
    l2: float = 0.0,
    normalize: bool = False,
    checkpoints_per_epoch: int = 1,
    tracker_cfg: tracker_lib.TrackerConfig | None = None,
    acc_fn: LossFn | None = None,
) -> dict:
    """Runs SGD; pure and traceable (jit it, or vmap it over keys, weights or datasets).

    Args:
      loss_fn: per-example loss ``(theta_P, batch) -> loss_B``.
      theta0_P: initial parameters.
      data: training arrays with a leading axis N.
      key: data-order key.
      weights_N: per-example loss weights (None: all 1).
      lr, epochs, batch_size, l2: constant step size, epochs, examples per step, L2 coefficient.
      normalize: divide the batch loss by the summed weights instead of B (see module docstring).
      checkpoints_per_epoch: scoring passes per epoch (must divide the steps per epoch).
      tracker_cfg: None trains without scoring passes (and returns only ``theta_P``).
      acc_fn: per-example accuracy for the tracker's accuracy criterion (None: zeros; the loss criterion ignores it).

    Returns:
      ``theta_P``; with a tracker also ``tracker`` (gdc.tracker.ExampleTracker), ``loss_ExN`` (the scoring-pass
      losses, E = epochs x checkpoints_per_epoch) and ``thetas_ExP``.
    """
    n = _num_examples(data)
    steps = n // batch_size
    k = checkpoints_per_epoch if tracker_cfg is not None else 1
    if steps < 1 or steps % k:
        raise ValueError(f"{steps} steps per epoch (n={n}, batch_size={batch_size}) must be >= 1 and divide by {k}.")
    seg = steps // k
    w_N = jnp.ones((n,), theta0_P.dtype) if weights_N is None else weights_N.astype(theta0_P.dtype)

    def batch_objective(theta_P, idx_B):
        loss_B = loss_fn(theta_P, jax.tree.map(lambda a: a[idx_B], data))
        w_B = w_N[idx_B]
        if normalize:
            return losses.weighted_mean(loss_B, jnp.ones_like(w_B, bool), w_B)
        return (w_B * loss_B).sum() / batch_size

    def step(theta_P, idx_B):
        g_P = jax.grad(batch_objective)(theta_P, idx_B)
        return theta_P - lr * (g_P + l2 * theta_P), None

    def segment(carry, c):
        theta_P, tracker = carry
        epoch, part = c // k, c % k
        perm_N = jax.random.permutation(jax.random.fold_in(key, epoch), n)
        idx_GxB = jax.lax.dynamic_slice_in_dim(perm_N, part * seg * batch_size, seg * batch_size)
        theta_P, _ = jax.lax.scan(step, theta_P, idx_GxB.reshape(seg, batch_size))
        if tracker_cfg is None:
            return (theta_P, tracker), None
        loss_N = loss_fn(theta_P, data)
        acc_N = jnp.zeros_like(loss_N) if acc_fn is None else acc_fn(theta_P, data)
        tracker = tracker_lib.update(
            tracker,
            jnp.arange(n, dtype=jnp.int32),
            loss_N,
            acc_N,
            jnp.ones((n,), bool),
            ((c + 1) * seg).astype(jnp.int32),
            c.astype(jnp.int32),
            tracker_cfg,
            unique=True,
        )
        return (theta_P, tracker), (loss_N, theta_P)

    tracker = tracker_lib.ExampleTracker.create(n) if tracker_cfg is not None else None
    (theta_P, tracker), ys = jax.lax.scan(segment, (theta0_P, tracker), jnp.arange(epochs * k))
    if tracker_cfg is None:
        return {"theta_P": theta_P}
    loss_ExN, thetas_ExP = ys
    return {"theta_P": theta_P, "tracker": tracker, "loss_ExN": loss_ExN, "thetas_ExP": thetas_ExP}


@functools.cache
def jit_train(loss_fn: LossFn, **kwargs) -> Callable:
    """``train`` with ``loss_fn`` and the keyword settings bound, jitted: ``f(theta0_P, data, key, weights_N)``.

    Cached: the same function and settings give the same compiled function.
    """
    return jax.jit(functools.partial(train, loss_fn, **kwargs))
