"""How stable the memorization ranking is across thresholds, and each score as a canary detector (numpy/scipy).

Shape letter S: the sweep's threshold values (as in ``m_SxN``). paper.md §9.2 found that the sign of the
correlation between m and self-influence flips with eps, so eps is swept, not chosen.
"""

import warnings
from collections.abc import Sequence

import numpy as np
import scipy.stats
from sklearn.metrics import roc_auc_score

from gdc.scoring.cartography import (
    FAST_MIN_SIZE,
    forget_events,
    memorization,
    resolve_eps,
    resolve_pair,
    top_fraction,
    upward_variation,
)


def _spearman_matrix(x_SxN: np.ndarray) -> np.ndarray:
    """Spearman correlations between rows (NaN where a row is constant)."""
    k = x_SxN.shape[0]
    if k == 1:
        return np.ones((1, 1))
    ranks_SxN = scipy.stats.rankdata(x_SxN, axis=1)
    with warnings.catch_warnings(), np.errstate(all="ignore"):  # constant rows (every m = 0): NaN, as documented.
        warnings.simplefilter("ignore")
        rho = np.corrcoef(ranks_SxN)
    return np.asarray(rho, np.float64).reshape(k, k)


def _jaccard(a: np.ndarray, b: np.ndarray) -> float:
    union = np.union1d(a, b).size
    return float(np.intersect1d(a, b).size / union) if union else 1.0


def eps_sweep(
    loss_ExN: np.ndarray,
    eps_values: Sequence[float | tuple[float, float]],
    kind: str = "absolute",
    *,
    top: float = 0.05,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """m at each threshold and how much the resulting rankings agree.

    Args:
      loss_ExN: loss matrix.
      eps_values: S thresholds of ``kind``: a value (single threshold) or a (low, high) pair (hysteresis).
      kind: "absolute", "percentile" or "relative" (see ``resolve_eps``).
      top: fraction for the top-k sets compared between adjacent thresholds.
      seed: tie-breaking seed of those top-k sets (secondary key: the upward variation).

    Returns:
      eps_low_S, eps_high_S (the values as given), m_SxN, forget_SxN, frac_m_pos_S (share of examples with
      m > 0), spearman_SxS (between the m rankings; NaN for a constant ranking), spearman_uv_S and
      spearman_uv_norm_S (each m ranking vs the eps-free upward variation, raw and normalised),
      jaccard_adjacent_S (top-k overlap with the next threshold; S - 1 values), top_tie_size_S (tie size at each
      top-k cut), uv_N, uv_norm_N.
    """
    loss_ExN = np.asarray(loss_ExN)
    s, n = len(eps_values), loss_ExN.shape[1]
    if s == 0:
        raise ValueError("eps_values is empty.")
    m_SxN = np.zeros((s, n))
    forget_SxN = np.zeros((s, n), np.int32)
    top_ids, tie_S = [], np.zeros(s, np.int64)
    uv_N, uv_norm_N = upward_variation(loss_ExN)
    single = kind != "relative" and all(np.isscalar(v) for v in eps_values)
    if single and loss_ExN.size >= FAST_MIN_SIZE:  # every threshold in one pass (gdc/scoring/fast.py)
        from gdc.scoring import fast

        eps_S = np.array([resolve_eps(loss_ExN, kind, v) for v in eps_values])
        sw = fast.sweep(loss_ExN, eps_S)
        counts = [(sw["forget_SxN"][i], sw["ever_learned_SxN"][i]) for i in range(s)]
    else:
        counts = []
        for value in eps_values:
            ev = forget_events(loss_ExN, *resolve_pair(loss_ExN, kind, value))
            counts.append((ev["forget_N"], ev["ever_learned_N"]))
    for i, (forget_N, ever_N) in enumerate(counts):
        m_SxN[i] = memorization(forget_N, max(loss_ExN.shape[0] - 1, 0), ever_N)["m_N"]
        forget_SxN[i] = forget_N
        ids, info = top_fraction(m_SxN[i], top, tie_break_N=uv_N, seed=seed)
        top_ids.append(ids)
        tie_S[i] = info["tie_size"]
    rho = _spearman_matrix(np.concatenate([m_SxN, uv_N[None], uv_norm_N[None]]))
    return {
        "eps_low_S": np.array([v if np.isscalar(v) else v[0] for v in eps_values], np.float64),
        "eps_high_S": np.array([v if np.isscalar(v) else v[1] for v in eps_values], np.float64),
        "m_SxN": m_SxN,
        "forget_SxN": forget_SxN,
        "frac_m_pos_S": (m_SxN > 0).mean(axis=1),
        "spearman_SxS": rho[:s, :s],
        "spearman_uv_S": rho[:s, s],
        "spearman_uv_norm_S": rho[:s, s + 1],
        "jaccard_adjacent_S": np.array([_jaccard(a, b) for a, b in zip(top_ids, top_ids[1:], strict=False)]),
        "top_tie_size_S": tie_S,
        "uv_N": uv_N,
        "uv_norm_N": uv_norm_N,
    }


def detector_auroc(score_N: np.ndarray, positive_N: np.ndarray) -> float:
    """AUROC of ``score_N`` (higher = more likely positive) for ``positive_N`` (e.g. canary copy vs ordinary).

    Non-finite scores are mapped below (-inf, NaN) or above (+inf) every finite one, so the -inf never-learned
    sentinel of ``m_rank_N`` ranks last. Returns NaN when only one class is present.
    """
    positive_N = np.asarray(positive_N, bool)
    if positive_N.all() or not positive_N.any():
        return float("nan")
    score_N = np.asarray(score_N, np.float64)
    finite_N = np.isfinite(score_N)
    lo, hi = (score_N[finite_N].min(), score_N[finite_N].max()) if finite_N.any() else (0.0, 0.0)
    score_N = np.where(np.isposinf(score_N), hi + 1.0, np.where(finite_N, score_N, lo - 1.0))
    return float(roc_auc_score(positive_N, score_N))


def detector_table(
    scores: dict[str, np.ndarray], positive_N: np.ndarray, fractions: Sequence[float] = (0.05, 0.1), seed: int = 0
) -> dict[str, dict]:
    """For each named score: its AUROC and how many positives each top-p% set holds (what pruning it can remove).

    Returns:
      {name: {"auroc": float, "top": {fraction: {"k", "positives", "tie_size"}}}}; ties at each cut are broken by
      a seeded permutation.
    """
    positive_N = np.asarray(positive_N, bool)
    table = {}
    for name, score_N in scores.items():
        top = {}
        for f in fractions:
            ids, info = top_fraction(score_N, f, seed=seed)
            top[f] = {"k": info["k"], "positives": int(positive_N[ids].sum()), "tie_size": info["tie_size"]}
        table[name] = {"auroc": detector_auroc(score_N, positive_N), "top": top}
    return table
