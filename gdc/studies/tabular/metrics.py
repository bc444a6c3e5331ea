"""Generation-side memorization of tabular generators: the distance-ratio replica test (TabCutMix, Sec. 3.1).

A generated row x is a replica iff ``d(x, NN1) < tau * d(x, NN2)`` (tau = 1/3), with the reference code's mixed-type
distance ``d(x, x') = (1/M) [minmax(||x_num - x'_num||_2) + sum_j 1(x_cat_j != x'_cat_j)]``: the numeric Euclidean
distances (raw units) are min-max rescaled over all training rows *for each query*, and M counts the numeric and
categorical columns (the label is one of the categoricals). Nearest neighbours run on device in fixed-size query
chunks (one compile per table shape); ``ratio = d1 / d2`` is NaN when both are 0 (not a replica, as in the reference).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from gdc.studies.tabular.data import Table

TAU = 1.0 / 3.0
AUC_THRESHOLDS = np.linspace(0.0, 1.0, 10)


@functools.partial(jax.jit, static_argnames=("num_columns",))
def _top2(qnum_BxF, qcat_BxFc, tnum_NxF, tcat_NxFc, num_columns: int):
    diff_BxNxF = qnum_BxF[:, None, :] - tnum_NxF[None, :, :]
    e_BxN = jnp.sqrt(jnp.sum(diff_BxNxF * diff_BxNxF, axis=-1))
    lo_B, hi_B = e_BxN.min(axis=1, keepdims=True), e_BxN.max(axis=1, keepdims=True)
    norm_BxN = jnp.where(hi_B > lo_B, (e_BxN - lo_B) / jnp.where(hi_B > lo_B, hi_B - lo_B, 1.0), 0.0)
    if qnum_BxF.shape[1] == 0:
        norm_BxN = jnp.zeros_like(norm_BxN)
    mismatch_BxN = jnp.sum(qcat_BxFc[:, None, :] != tcat_NxFc[None, :, :], axis=-1).astype(jnp.float32)
    d_BxN = (norm_BxN + mismatch_BxN) / num_columns
    neg_Bx2, idx_Bx2 = jax.lax.top_k(-d_BxN, 2)
    return -neg_Bx2, idx_Bx2


def mixed_distances(query: Table, train: Table) -> np.ndarray:
    """The full ``[Q, N]`` distance matrix in numpy (small inputs only: tests and plots)."""
    e = np.sqrt(((query.num_NxF[:, None, :] - train.num_NxF[None]) ** 2).sum(-1))
    lo, hi = e.min(1, keepdims=True), e.max(1, keepdims=True)
    norm = np.where(hi > lo, (e - lo) / np.where(hi > lo, hi - lo, 1.0), 0.0)
    mismatch = (query.cat_with_label()[:, None, :] != train.cat_with_label()[None]).sum(-1)
    return (norm + mismatch) / train.num_columns


def nearest_two(query: Table, train: Table, chunk: int = 128) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(d1_Q, d2_Q, nn1_Q): distances to the nearest and second-nearest training row and the nearest's index."""
    if len(train) < 2:
        raise ValueError(f"need >= 2 training rows for a second neighbour, got {len(train)}.")
    tnum = jnp.asarray(train.num_NxF, jnp.float32)
    tcat = jnp.asarray(train.cat_with_label())
    qnum, qcat = query.num_NxF.astype(np.float32), query.cat_with_label()
    q = len(query)
    pad = (-q) % chunk
    qnum = np.concatenate([qnum, np.zeros((pad, qnum.shape[1]), np.float32)])
    qcat = np.concatenate([qcat, np.zeros((pad, qcat.shape[1]), np.int32)])
    d_parts, i_parts = [], []
    for s in range(0, q + pad, chunk):
        d, i = _top2(jnp.asarray(qnum[s : s + chunk]), jnp.asarray(qcat[s : s + chunk]), tnum, tcat, train.num_columns)
        d_parts.append(d)
        i_parts.append(i)
    d_Qx2 = np.concatenate(jax.device_get(d_parts))[:q].astype(np.float64)
    i_Qx2 = np.concatenate(jax.device_get(i_parts))[:q]
    return d_Qx2[:, 0], d_Qx2[:, 1], i_Qx2[:, 0]


def ratios(d1_Q: np.ndarray, d2_Q: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return d1_Q / d2_Q


def mem_auc(ratio_Q: np.ndarray, thresholds: np.ndarray = AUC_THRESHOLDS) -> float:
    """Replica fraction ``mean(ratio < thr)`` integrated over ``thresholds`` by the trapezoid rule."""
    frac = np.array([np.mean(ratio_Q < thr) for thr in thresholds])
    return float(np.trapezoid(frac, thresholds))


def memorization(generated: Table, train: Table, tau: float = TAU) -> dict:
    """Mem. Ratio, Mem-AUC, per-generated-row flags and the per-training-row replica counts.

    Returns:
      {"mem_ratio", "mem_auc": floats; "ratio_Q", "replica_Q" (bool), "nn1_Q"; "counts_N": int [N] how many
      generated rows are replicas of training row i (flagged, and i is their nearest row)}.
    """
    d1, d2, nn1 = nearest_two(generated, train)
    ratio = ratios(d1, d2)
    replica = ratio < tau
    return {
        "mem_ratio": float(replica.mean()),
        "mem_auc": mem_auc(ratio),
        "ratio_Q": ratio,
        "replica_Q": replica,
        "nn1_Q": nn1,
        "counts_N": np.bincount(nn1[replica], minlength=len(train)),
    }
