"""Published per-example scores beside cartography's d and m, for the score leaderboard (``leaderboard``).

  * EL2N and GraNd (Paul et al. 2021, "Deep Learning on a Data Diet"): the error vector's L2 norm
    ``||softmax(f(x)) - onehot(y)||`` and the loss gradient's norm ``||dL/dtheta||``, both at an early epoch and
    averaged over the R models (seeds) given: the mean of the per-model norms, as the paper averages its scores.
  * AUM (Pleiss et al. 2020, "Identifying Mislabeled Data using the Area Under the Margin Ranking"): the margin
    ``z_y - max_{k != y} z_k`` averaged over epochs; low or negative AUM flags mislabeled (hard-to-fit) examples.
  * Loss-trace features (as in the work scoring per-example privacy risk from training loss traces): simple shape
    statistics of each column of ``loss_ExN``, see ``trace_features``.

Invariants: EL2N, AUM and the trace features are numpy (float64) functions of arrays a run already has (logits,
``loss_ExN``); GraNd needs the model (``gdc.influence``). NaN means "not observed", as in ``cartography``: AUM skips
NaN epochs and the trace features skip NaN checkpoints. Higher EL2N / GraNd = harder; lower AUM = harder.
"""

import warnings
from collections.abc import Callable, Sequence

import jax
import numpy as np
from flax import nnx

from gdc import models
from gdc.influence import ghost, grads
from gdc.scoring.cartography import final_loss
from gdc.types import Batch

TRACE_FEATURES = ("area", "drop_epoch", "drop", "final_minus_min", "variance")


def _nan_reduce(fn, x: np.ndarray, **kw) -> np.ndarray:
    with warnings.catch_warnings():  # all-NaN columns give NaN: "never observed".
        warnings.simplefilter("ignore", RuntimeWarning)
        return fn(x, **kw)


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, np.float64)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def _error_norm(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``||softmax(z) - onehot(y)||_2`` over the last axis; ``labels`` has the shape of ``logits`` without it."""
    p = _softmax(logits)
    p_y = np.take_along_axis(p, np.asarray(labels)[..., None].astype(np.int64), axis=-1)[..., 0]
    # ||p - e_y||^2 = ||p||^2 - 2 p_y + 1, without building the one-hot [..., V] array.
    return np.sqrt(np.maximum(np.sum(p * p, axis=-1) - 2.0 * p_y + 1.0, 0.0))


def el2n(logits: np.ndarray, labels: np.ndarray, token_mask: np.ndarray | None = None) -> np.ndarray:
    """EL2N per example, averaged over the models given.

    Args:
      logits: a classifier's ``[N, K]`` or ``[R, N, K]`` (R models or seeds, each at the same early epoch); a
        language model's ``[N, L, V]`` or ``[R, N, L, V]`` (with ``token_mask``).
      labels: ``[N]`` classes, or ``[N, L]`` target tokens.
      token_mask: ``[N, L]`` valid targets (LMs only). An LM example's EL2N is the mean over its valid tokens of the
        per-token EL2N (each token is one classification; the mean, not the sum, so it matches the per-example
        loss's normalisation and does not grow with length). An example with no valid token gets NaN.

    Returns:
      el2n_N, float64: the mean over the R models of each model's EL2N.
    """
    labels = np.asarray(labels)
    lm = token_mask is not None
    logits = np.asarray(logits)
    if logits.ndim == labels.ndim + 1:
        logits = logits[None]
    if logits.ndim != labels.ndim + 2 or logits.shape[1 : 1 + labels.ndim] != labels.shape:
        raise ValueError(f"logits {logits.shape} do not match labels {labels.shape} (need [R,] + labels + [K]).")
    norm = np.stack([_error_norm(z, labels) for z in logits])  # per model: memory of one model's probabilities
    if not lm:
        return norm.mean(axis=0)
    w_NxL = np.asarray(token_mask, np.float64)
    count_N = w_NxL.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_model_RxN = (norm * w_NxL).sum(axis=-1) / count_N
    return np.where(count_N > 0, per_model_RxN.mean(axis=0), np.nan)


def model_loss(graphdef: nnx.GraphDef, params: nnx.State, batch: Batch) -> jax.Array:
    """``gdc.models.per_example_loss``'s loss_B, deterministic (no dropout keys): GraNd's default loss."""
    return models.per_example_loss(graphdef, params, batch)[0]


def grand(
    graphdef: nnx.GraphDef,
    params: nnx.State | Sequence[nnx.State],
    batch: Batch,
    *,
    loss_fn: Callable[[nnx.GraphDef, nnx.State, Batch], jax.Array] = model_loss,
    method: str = "ghost",
    batch_size: int | None = 64,
) -> np.ndarray:
    """GraNd: each example's loss-gradient norm ``||dL_i/dparams||_2``, averaged over the models given.

    Args:
      graphdef: the model graph (``gdc.models.build``).
      params: one model's parameters, or a sequence of R models' (seeds, each at the same early epoch).
      batch: the N examples (model inputs with a leading N axis; padding rows give norm 0).
      loss_fn: per-example loss ``(graphdef, params, batch) -> loss_B``; a module-level function (it is a static
        argument of the jitted ghost pass, so a new lambda per call recompiles).
      method: "ghost" (``gdc.influence.ghost.ghost_sq_norms``: no per-example gradient formed) or "grads"
        (``gdc.influence.grads.grad_sq_norms``: vmap(grad) on the flat parameters, chunked).
      batch_size: examples per chunk.

    Returns:
      grand_N, float64: the mean over models of the per-model gradient norms.
    """
    if method not in ("ghost", "grads"):
        raise ValueError(f"method={method!r}: need 'ghost' or 'grads'.")
    many = params if isinstance(params, (list, tuple)) else [params]
    norms = []
    for p in many:
        if method == "ghost":
            sq_N = ghost.ghost_sq_norms(loss_fn, graphdef, p, batch, batch_size)
        else:
            theta_P, unravel = grads.flatten(p)
            sq_N = grads.grad_sq_norms(
                lambda t, b, unravel=unravel: loss_fn(graphdef, unravel(t), b), theta_P, batch, batch_size or 64
            )
        norms.append(np.sqrt(np.maximum(np.asarray(sq_N, np.float64), 0.0)))
    return np.mean(norms, axis=0)


def aum(logits_ExNxK: np.ndarray, labels_N: np.ndarray) -> np.ndarray:
    """AUM: the assigned-class margin ``z_y - max_{k != y} z_k``, averaged over epochs (NaN epochs skipped).

    Args:
      logits_ExNxK: a classifier's logits at each of E epochs (NaN rows: example not observed that epoch).
      labels_N: the assigned (possibly noisy) labels.

    Returns:
      aum_N, float64 (NaN if never observed). Negative: on average another class won.
    """
    z = np.asarray(logits_ExNxK, np.float64)
    if z.ndim != 3 or z.shape[2] < 2:
        raise ValueError(f"need [E, N, K] logits with K >= 2, got {z.shape}.")
    y_1xNx1 = np.asarray(labels_N, np.int64)[None, :, None]
    assigned_ExN = np.take_along_axis(z, np.broadcast_to(y_1xNx1, z.shape[:2] + (1,)), axis=-1)[..., 0]
    is_y = np.arange(z.shape[2])[None, None, :] == y_1xNx1
    other_ExN = np.where(is_y, -np.inf, z).max(axis=-1)
    return _nan_reduce(np.nanmean, assigned_ExN - other_ExN, axis=0)


def trace_features(loss_ExN: np.ndarray) -> dict[str, np.ndarray]:
    """Shape statistics of each example's loss trace (a column of ``loss_ExN``), over its observed checkpoints.

    Checkpoint t sits at x = t; NaN entries are skipped, so consecutive observed checkpoints are joined.

    Returns (all float64 ``[N]``, NaN where an example has too few observations):
      area: the trapezoidal area under the trace divided by its span (last - first observed index): the
        time-averaged loss, in loss units (one observation: that loss).
      drop_epoch: the checkpoint t whose drop from the previous observed loss, L_prev - L_t, is largest (the first
        such t on ties); NaN if the loss never drops.
      drop: that largest drop (> 0), NaN if none.
      final_minus_min: the last observed loss minus the lowest (>= 0): how far the example has come back up from
        its best fit, a forgetting signal without a threshold.
      variance: the variance of the observed losses (ddof = 0).
    """
    loss_ExN = np.asarray(loss_ExN, np.float64)
    if loss_ExN.ndim != 2:
        raise ValueError(f"need a [E, N] loss matrix, got shape {loss_ExN.shape}.")
    n = loss_ExN.shape[1]
    prev_N = np.full(n, np.nan)
    prev_t_N = np.full(n, np.nan)
    first_t_N = np.full(n, np.nan)
    area_N = np.zeros(n)
    drop_N = np.full(n, np.nan)
    drop_t_N = np.full(n, np.nan)
    for t, cur_N in enumerate(loss_ExN):
        seen_N = ~np.isnan(cur_N)
        pair_N = seen_N & ~np.isnan(prev_N)
        area_N += np.where(pair_N, (t - prev_t_N) * (prev_N + cur_N) / 2.0, 0.0)
        d_N = prev_N - cur_N
        better_N = pair_N & (d_N > 0) & ~(d_N <= drop_N)  # strictly larger than the best so far (NaN: none yet)
        drop_N = np.where(better_N, d_N, drop_N)
        drop_t_N = np.where(better_N, t, drop_t_N)
        first_t_N = np.where(seen_N & np.isnan(first_t_N), t, first_t_N)
        prev_N = np.where(seen_N, cur_N, prev_N)
        prev_t_N = np.where(seen_N, t, prev_t_N)
    span_N = prev_t_N - first_t_N
    with np.errstate(invalid="ignore", divide="ignore"):
        area_N = np.where(span_N > 0, area_N / span_N, prev_N)  # span 0: one observation; NaN: none
    return {
        "area": area_N,
        "drop_epoch": drop_t_N,
        "drop": drop_N,
        "final_minus_min": final_loss(loss_ExN) - _nan_reduce(np.nanmin, loss_ExN, axis=0),
        "variance": _nan_reduce(np.nanvar, loss_ExN, axis=0),
    }
