"""Generation-side memorization of tabular generators: the distance-ratio replica test (TabCutMix, Sec. 3.1).

A generated row x is a replica iff ``d(x, NN1) < tau * d(x, NN2)`` (tau = 1/3), with the reference code's mixed-type
distance ``d(x, x') = (1/M) [minmax(||x_num - x'_num||_2) + sum_j 1(x_cat_j != x'_cat_j)]``: the numeric Euclidean
distances (raw units) are min-max rescaled over all training rows *for each query*, and M counts the numeric and
categorical columns (the label is one of the categoricals). Nearest neighbours run on device in fixed-size query
chunks (one compile per table shape); ``ratio = d1 / d2`` is NaN when both are 0 (not a replica, as in the reference).

The per-query min-max (``scale="per_query"``, the published metric) sets every query's nearest numeric distance to
0, however far the query lies from all training rows: a generated row far outside the data whose categories match
one training row gets ratio 0 and is flagged. ``scale="fixed"`` scales the numeric columns once by the training
table's ranges (``(x - min) / range / sqrt(F_num)``, so rows inside the training box are at most 1 apart, one
categorical mismatch's weight) and keeps the raw scaled distance: a far row stays far from every training row.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from gdc.studies.tabular.data import Table

TAU = 1.0 / 3.0
AUC_THRESHOLDS = np.linspace(0.0, 1.0, 10)


SCALES = ("per_query", "fixed")


def fixed_scale(train: Table) -> np.ndarray:
    """``[F_num]`` factors of the fixed-scale variant: 1 / (the training range x sqrt(F_num)); range 0 -> 1."""
    f = train.num_NxF.shape[1]
    rng_F = train.num_NxF.max(axis=0) - train.num_NxF.min(axis=0) if len(train) else np.ones(f)
    return 1.0 / (np.where(rng_F > 0, rng_F, 1.0) * np.sqrt(max(f, 1)))


def _scaled(query: Table, train: Table, scale: str) -> tuple[np.ndarray, np.ndarray]:
    if scale not in SCALES:
        raise ValueError(f"scale={scale!r} is not one of {SCALES}")
    s_F = fixed_scale(train) if scale == "fixed" else np.ones(train.num_NxF.shape[1])
    return query.num_NxF * s_F, train.num_NxF * s_F


@functools.partial(jax.jit, static_argnames=("num_columns", "per_query"))
def _top2(qnum_BxF, qcat_BxFc, tnum_NxF, tcat_NxFc, num_columns: int, per_query: bool = True):
    diff_BxNxF = qnum_BxF[:, None, :] - tnum_NxF[None, :, :]
    e_BxN = jnp.sqrt(jnp.sum(diff_BxNxF * diff_BxNxF, axis=-1))
    lo_B, hi_B = e_BxN.min(axis=1, keepdims=True), e_BxN.max(axis=1, keepdims=True)
    norm_BxN = jnp.where(hi_B > lo_B, (e_BxN - lo_B) / jnp.where(hi_B > lo_B, hi_B - lo_B, 1.0), 0.0)
    if not per_query:
        norm_BxN = e_BxN
    if qnum_BxF.shape[1] == 0:
        norm_BxN = jnp.zeros_like(norm_BxN)
    mismatch_BxN = jnp.sum(qcat_BxFc[:, None, :] != tcat_NxFc[None, :, :], axis=-1).astype(jnp.float32)
    d_BxN = (norm_BxN + mismatch_BxN) / num_columns
    neg_Bx2, idx_Bx2 = jax.lax.top_k(-d_BxN, 2)
    return -neg_Bx2, idx_Bx2


def mixed_distances(query: Table, train: Table, scale: str = "per_query") -> np.ndarray:
    """The full ``[Q, N]`` distance matrix in numpy (small inputs only: tests and plots)."""
    qnum, tnum = _scaled(query, train, scale)
    e = np.sqrt(((qnum[:, None, :] - tnum[None]) ** 2).sum(-1))
    lo, hi = e.min(1, keepdims=True), e.max(1, keepdims=True)
    norm = np.where(hi > lo, (e - lo) / np.where(hi > lo, hi - lo, 1.0), 0.0) if scale == "per_query" else e
    mismatch = (query.cat_with_label()[:, None, :] != train.cat_with_label()[None]).sum(-1)
    return (norm + mismatch) / train.num_columns


def nearest_two(
    query: Table, train: Table, chunk: int = 128, scale: str = "per_query"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(d1_Q, d2_Q, nn1_Q): distances to the nearest and second-nearest training row and the nearest's index."""
    if len(train) < 2:
        raise ValueError(f"need >= 2 training rows for a second neighbour, got {len(train)}.")
    qnum, tnum = _scaled(query, train, scale)
    tnum = jnp.asarray(tnum, jnp.float32)
    tcat = jnp.asarray(train.cat_with_label())
    qnum, qcat = qnum.astype(np.float32), query.cat_with_label()
    q = len(query)
    pad = (-q) % chunk
    qnum = np.concatenate([qnum, np.zeros((pad, qnum.shape[1]), np.float32)])
    qcat = np.concatenate([qcat, np.zeros((pad, qcat.shape[1]), np.int32)])
    d_parts, i_parts = [], []
    for s in range(0, q + pad, chunk):
        q_num, q_cat = jnp.asarray(qnum[s : s + chunk]), jnp.asarray(qcat[s : s + chunk])
        d, i = _top2(q_num, q_cat, tnum, tcat, train.num_columns, scale == "per_query")
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


def numeric_gaps(query: Table, train: Table, nn1_Q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(to_nn1_Q, nearest_Q): numeric Euclidean distance, in training standard deviations, from each query to its
    metric-nearest row ``nn1_Q`` and to its numerically nearest training row."""
    std_F = train.num_NxF.std(axis=0)
    std_F = np.where(std_F > 0, std_F, 1.0)
    q_QxF, t_NxF = query.num_NxF / std_F, train.num_NxF / std_F
    to_nn1 = np.sqrt(((q_QxF - t_NxF[nn1_Q]) ** 2).sum(-1))
    nearest = np.array([np.sqrt(((t_NxF - q) ** 2).sum(-1)).min() for q in q_QxF]) if len(train) else to_nn1
    return to_nn1, nearest


def memorization(generated: Table, train: Table, tau: float = TAU, scale: str = "per_query") -> dict:
    """Mem. Ratio, Mem-AUC, per-generated-row flags and the per-training-row replica counts.

    Returns:
      {"mem_ratio", "mem_auc": floats; "ratio_Q", "replica_Q" (bool), "nn1_Q"; "counts_N": int [N] how many
      generated rows are replicas of training row i (flagged, and i is their nearest row); "gap_nn1_Q",
      "gap_nearest_Q": ``numeric_gaps``}.
    """
    d1, d2, nn1 = nearest_two(generated, train, scale=scale)
    ratio = ratios(d1, d2)
    replica = ratio < tau
    gap_nn1, gap_nearest = numeric_gaps(generated, train, nn1)
    return {
        "mem_ratio": float(replica.mean()),
        "mem_auc": mem_auc(ratio),
        "ratio_Q": ratio,
        "replica_Q": replica,
        "nn1_Q": nn1,
        "counts_N": np.bincount(nn1[replica], minlength=len(train)),
        "gap_nn1_Q": gap_nn1,
        "gap_nearest_Q": gap_nearest,
    }


def dedupe(table: Table) -> tuple[Table, np.ndarray]:
    """(distinct rows, inverse): row i of ``table`` is row ``inverse[i]`` of the distinct table."""
    rows = np.concatenate([table.num_NxF, table.cat_with_label().astype(np.float64)], axis=1)
    _, first, inverse = np.unique(rows, axis=0, return_index=True, return_inverse=True)
    return table.take(first), inverse.reshape(-1)


def measure(generated: Table, train: Table, dedupe_train: bool, scale: str = "per_query") -> dict:
    """``memorization`` against the distinct training rows (copies share their counts) or all of them."""
    if not dedupe_train:
        return memorization(generated, train, scale=scale)
    distinct, inverse = dedupe(train)
    out = memorization(generated, distinct, scale=scale)
    out["counts_N"] = out["counts_N"][inverse]
    return out


def gap_summary(gap_Q: np.ndarray, flagged_Q: np.ndarray, typical: float) -> dict:
    """Quantiles of the numeric distance (training sds) from flagged rows to their nearest training row, and the
    share of flagged rows farther than ``typical`` (the 95th percentile of fresh real rows' nearest-row distance)."""
    g = np.asarray(gap_Q)[np.asarray(flagged_Q, bool)]
    if g.size == 0:
        return {"flagged": 0, "q50": None, "q90": None, "max": None, "share_far": None}
    return {
        "flagged": int(g.size),
        "q50": float(np.quantile(g, 0.5)),
        "q90": float(np.quantile(g, 0.9)),
        "max": float(g.max()),
        "share_far": float(np.mean(g > typical)),
    }
