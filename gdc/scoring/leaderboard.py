"""How well a per-example score finds what a model memorizes: metrics against a ground truth, with intervals.

The ground truth is ``truth_N`` (a graded memorization measure, e.g. leave-one-out or counterfactual memorization;
higher = more memorized) and/or ``positive_N`` (bool, e.g. canary copies). Every score is oriented so that higher
means "more memorized": negate a score where low is the signal (AUM) before passing it.

Choices:
  * NaN pairs (score or truth NaN) are dropped and counted (``dropped``); ``±inf`` scores are kept (they rank
    first or last, as ``m_rank_N``'s -inf sentinel should).
  * Intervals are percentile bootstrap intervals over examples resampled with replacement, ``n_boot`` draws from
    ``np.random.default_rng(seed)``. AUROC's bootstrap is stratified (positives and negatives resampled separately),
    so every draw keeps the class counts and a rare positive class (a few canaries) never vanishes from a draw.
  * Top-k sets use one order: score descending, ties broken by the seeded permutation
    ``np.random.default_rng(seed).permutation(N)``, the same order as ``cartography.top_fraction`` (so the sets
    agree with it); NaN scores rank last. k = round(fraction x N), halves rounded up.
  * ``pool`` combines per-seed tables with a t-interval over seeds (mean +- t_{S-1} sd / sqrt(S)): the spread between
    training seeds, which a per-seed bootstrap over examples does not see.
"""

from collections.abc import Callable, Sequence

import numpy as np
import scipy.stats
from sklearn.metrics import roc_auc_score

FRACTIONS = (0.01, 0.05, 0.10)


def _interval(values: np.ndarray, level: float) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(values, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def _finite_scores(score_N: np.ndarray) -> np.ndarray:
    """±inf mapped just outside the finite range (rank-preserving), for functions that refuse inf."""
    finite_N = np.isfinite(score_N)
    lo, hi = (score_N[finite_N].min(), score_N[finite_N].max()) if finite_N.any() else (0.0, 0.0)
    return np.where(np.isposinf(score_N), hi + 1.0, np.where(np.isneginf(score_N), lo - 1.0, score_N))


def _spearman_rows(score_BxN: np.ndarray, truth_BxN: np.ndarray) -> np.ndarray:
    """Spearman rho per row (average ranks for ties; NaN for a constant row)."""
    rs = scipy.stats.rankdata(score_BxN, axis=1)
    rt = scipy.stats.rankdata(truth_BxN, axis=1)
    rs -= rs.mean(axis=1, keepdims=True)
    rt -= rt.mean(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (rs * rt).sum(1) / np.sqrt((rs * rs).sum(1) * (rt * rt).sum(1))


def spearman(
    score_N: np.ndarray, truth_N: np.ndarray, *, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> dict:
    """Spearman correlation of a score with the truth, and its bootstrap interval.

    Returns:
      {"value", "lo", "hi", "n" (pairs used), "dropped" (pairs with a NaN)}; value NaN if a side is constant.
    """
    score_N, truth_N = np.asarray(score_N, np.float64), np.asarray(truth_N, np.float64)
    keep_N = ~(np.isnan(score_N) | np.isnan(truth_N))
    s_N, t_N = score_N[keep_N], truth_N[keep_N]
    n = s_N.size
    value = float(_spearman_rows(s_N[None], t_N[None])[0]) if n >= 2 else float("nan")
    boots = []
    rng = np.random.default_rng(seed)
    chunk = max(1, min(n_boot, (1 << 22) // max(n, 1)))  # draws per vectorised block, bounded memory
    for start in range(0, n_boot if n >= 2 else 0, chunk):
        idx_BxN = rng.integers(0, n, (min(chunk, n_boot - start), n))
        boots.append(_spearman_rows(s_N[idx_BxN], t_N[idx_BxN]))
    lo, hi = _interval(np.concatenate(boots), level) if boots else (float("nan"), float("nan"))
    return {"value": value, "lo": lo, "hi": hi, "n": int(n), "dropped": int((~keep_N).sum())}


def _auroc_ranks(score_N: np.ndarray, positive_N: np.ndarray) -> float:
    """Mann-Whitney AUROC from average ranks (equal to sklearn's roc_auc_score, ties counted half)."""
    p = positive_N.sum()
    q = positive_N.size - p
    r_N = scipy.stats.rankdata(score_N)
    return float((r_N[positive_N].sum() - p * (p + 1) / 2.0) / (p * q))


def auroc(
    score_N: np.ndarray, positive_N: np.ndarray, *, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> dict:
    """AUROC of the score for the positives (sklearn), with a stratified bootstrap interval.

    Returns:
      {"value", "lo", "hi", "n", "dropped" (NaN scores), "positives"}; value NaN when only one class remains.
    """
    score_N = np.asarray(score_N, np.float64)
    positive_N = np.asarray(positive_N, bool)
    keep_N = ~np.isnan(score_N)
    s_N, y_N = _finite_scores(score_N[keep_N]), positive_N[keep_N]
    out = {"n": int(s_N.size), "dropped": int((~keep_N).sum()), "positives": int(y_N.sum())}
    if y_N.all() or not y_N.any():
        return {"value": float("nan"), "lo": float("nan"), "hi": float("nan"), **out}
    value = float(roc_auc_score(y_N, s_N))
    pos, neg = s_N[y_N], s_N[~y_N]
    rng = np.random.default_rng(seed)
    labels = np.concatenate([np.ones(pos.size, bool), np.zeros(neg.size, bool)])
    boots = np.array(
        [
            _auroc_ranks(np.concatenate([rng.choice(pos, pos.size), rng.choice(neg, neg.size)]), labels)
            for _ in range(n_boot)
        ]
    )
    lo, hi = _interval(boots, level)
    return {"value": value, "lo": lo, "hi": hi, **out}


def _rank_positions(score_N: np.ndarray, seed: int) -> np.ndarray:
    """Each example's position (0 = best) in the order score descending, seeded random order on ties, NaN last."""
    n = score_N.shape[0]
    key_N = np.nan_to_num(np.asarray(score_N, np.float64), nan=-np.inf)
    order = np.lexsort((np.random.default_rng(seed).permutation(n), -key_N))
    pos_N = np.empty(n, np.int64)
    pos_N[order] = np.arange(n)
    return pos_N


def _k(fraction: float, n: int) -> int:
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction={fraction}: need (0, 1].")
    return max(1, int(np.floor(fraction * n + 0.5)))


def _hits_curve(
    score_N: np.ndarray, positive_N: np.ndarray | None, truth_N: np.ndarray | None, seed: int
) -> np.ndarray:
    """hits_K for k = 1..N: positives among the top k by score, or the overlap of the score's and truth's top k."""
    if (positive_N is None) == (truth_N is None):
        raise ValueError("give exactly one of positive_N (positives variant) and truth_N (top-set variant).")
    n = np.asarray(score_N).shape[0]
    rank_N = _rank_positions(score_N, seed)
    if positive_N is not None:
        inside_N = np.zeros(n, np.int64)
        inside_N[rank_N] = np.asarray(positive_N, bool)
        return np.cumsum(inside_N)
    # Both top-k sets hold example i iff max(its two positions) < k: count those per k. The truth's ties use a
    # different seeded order (seed + 1), so a tied truth is not silently matched by the score's own tie order.
    both_N = np.maximum(rank_N, _rank_positions(truth_N, seed + 1))
    return np.cumsum(np.bincount(both_N, minlength=n))


def precision_at(
    score_N: np.ndarray,
    *,
    positive_N: np.ndarray | None = None,
    truth_N: np.ndarray | None = None,
    fractions: Sequence[float] = FRACTIONS,
    seed: int = 0,
) -> dict[float, dict]:
    """Precision of the score's top k = round(fraction x N), in one of two variants (give exactly one):

      * positives (``positive_N``): the share of the top k that are positives. Its ceiling is min(P, k) / k for P
        positives (reported as ``ceiling``); a random score gets about P / N.
      * top set (``truth_N``): the share of the score's top k that is also in the truth's top k (the overlap of the
        two top-k sets over k). A perfect score gets 1, a reversed one 0 (while k <= N / 2), a random one about k / N.

    Ties in the score are broken by the seeded permutation of ``seed``, ties in the truth by that of ``seed + 1``;
    NaN ranks last (so keep the NaNs of a score out first, or accept them as "not flagged").

    Returns:
      {fraction: {"k", "hits", "precision", "ceiling"}}.
    """
    hits_K = _hits_curve(score_N, positive_N, truth_N, seed)
    n = hits_K.shape[0]
    p = int(np.asarray(positive_N, bool).sum()) if positive_N is not None else n
    out = {}
    for f in fractions:
        k = _k(f, n)
        out[f] = {"k": k, "hits": int(hits_K[k - 1]), "precision": hits_K[k - 1] / k, "ceiling": min(p, k) / k}
    return out


def precision_curve(
    score_N: np.ndarray,
    *,
    positive_N: np.ndarray | None = None,
    truth_N: np.ndarray | None = None,
    ks: Sequence[int] | None = None,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Precision at every k (or the given ``ks``), as ``precision_at`` defines it, for a plot.

    Returns:
      {"k_K": int64, "precision_K": float64, "random_K": a random score's expected precision (P / N for the
      positives variant, k / N for the top-set variant)}.
    """
    hits_K = _hits_curve(score_N, positive_N, truth_N, seed)
    n = hits_K.shape[0]
    k_K = np.arange(1, n + 1) if ks is None else np.asarray(ks, np.int64)
    if k_K.size and (k_K.min() < 1 or k_K.max() > n):
        raise ValueError(f"ks must lie in 1..{n}.")
    random_K = np.full(k_K.shape, np.asarray(positive_N, bool).mean()) if positive_N is not None else k_K / n
    return {"k_K": k_K, "precision_K": hits_K[k_K - 1] / k_K, "random_K": random_K}


def _bootstrap(stat: Callable[[np.ndarray], np.ndarray], n: int, n_boot: int, seed: int, level: float):
    """Percentile intervals of a vector statistic of the resampled example ids (``stat(idx) -> [M]``)."""
    rng = np.random.default_rng(seed)
    draws = np.array([stat(rng.integers(0, n, n)) for _ in range(n_boot)], np.float64)
    return [_interval(draws[:, j], level) for j in range(draws.shape[1])]


def _precision_row(row, prefix, score_N, ref_name, ref_N, fractions, n_boot, seed, level) -> None:
    """Adds precision@f and its bootstrap interval for each fraction to ``row`` (one variant of ``precision_at``)."""
    point = precision_at(score_N, fractions=fractions, seed=seed, **{ref_name: ref_N})

    def stat(idx):
        got = precision_at(score_N[idx], fractions=fractions, seed=seed, **{ref_name: ref_N[idx]})
        return np.array([got[f]["precision"] for f in fractions])

    for f, (lo, hi) in zip(fractions, _bootstrap(stat, score_N.shape[0], n_boot, seed, level), strict=True):
        key = f"{prefix}@{f:g}"
        row.update({key: point[f]["precision"], f"{key}_lo": lo, f"{key}_hi": hi})


def table(
    scores: dict[str, np.ndarray],
    truth_N: np.ndarray | None,
    positive_N: np.ndarray | None = None,
    cost: dict[str, float] | None = None,
    *,
    train_cost: float = 1.0,
    fractions: Sequence[float] = FRACTIONS,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> list[dict]:
    """One row per score with every metric and its bootstrap interval, best first.

    Args:
      scores: {name: score_N}, each oriented higher = more memorized.
      truth_N: graded ground truth (None: positives only).
      positive_N: bool positives (canary copies), or None.
      cost: {name: cost of computing that score} in the unit of ``train_cost`` (e.g. seconds or FLOPs); a row's
        ``cost`` is cost / train_cost, i.e. in training runs. Names without a cost get NaN.
      train_cost: the cost of one training run, in that unit.
      fractions: top fractions for precision@k.

    Returns:
      Rows, flat dicts: "name", then per metric M its value "M" and interval "M_lo", "M_hi": M = "spearman"
      (vs truth), "auroc" (vs positives), "precision@f" (top-set variant, vs truth) and "precision_pos@f"
      (positives variant) for each fraction f (``f"{f:g}"``); "n", "dropped" (NaN pairs for Spearman, or NaN
      scores for AUROC without a truth), "cost". Sorted by Spearman descending (AUROC without a truth), NaN last.
      Precision@k uses the pairs Spearman uses (top-set variant) or the non-NaN scores (positives variant); its
      intervals resample examples (a duplicate counts as a separate example, its ties in the seeded random order).
    """
    if truth_N is None and positive_N is None:
        raise ValueError("need truth_N, positive_N or both.")
    truth = None if truth_N is None else np.asarray(truth_N, np.float64)
    pos = None if positive_N is None else np.asarray(positive_N, bool)
    rows = []
    for name, score_N in scores.items():
        score_N = np.asarray(score_N, np.float64)
        row = {"name": name}
        if truth is not None:
            sp = spearman(score_N, truth, n_boot=n_boot, seed=seed, level=level)
            row.update(spearman=sp["value"], spearman_lo=sp["lo"], spearman_hi=sp["hi"])
            row.update(n=sp["n"], dropped=sp["dropped"])
        if pos is not None:
            au = auroc(score_N, pos, n_boot=n_boot, seed=seed, level=level)
            row.update(auroc=au["value"], auroc_lo=au["lo"], auroc_hi=au["hi"])
            if truth is None:
                row.update(n=au["n"], dropped=au["dropped"])
        if truth is not None:
            keep_N = ~(np.isnan(score_N) | np.isnan(truth))
            _precision_row(row, "precision", score_N[keep_N], "truth_N", truth[keep_N], fractions, n_boot, seed, level)
        if pos is not None:
            keep_N = ~np.isnan(score_N)
            _precision_row(
                row, "precision_pos", score_N[keep_N], "positive_N", pos[keep_N], fractions, n_boot, seed, level
            )
        row["cost"] = cost[name] / train_cost if cost is not None and name in cost else float("nan")
        rows.append(row)
    key = "spearman" if truth is not None else "auroc"
    return sorted(rows, key=lambda r: (np.isnan(r[key]), -np.nan_to_num(r[key])))


def metrics(row: dict) -> list[str]:
    """The metric names of a row (keys with ``_lo`` / ``_hi`` siblings)."""
    return [k for k in row if f"{k}_lo" in row and f"{k}_hi" in row]


def pool(tables: Sequence[list[dict]], level: float = 0.95) -> list[dict]:
    """Per-seed tables (same scores, one table per training seed) -> the mean over seeds and a t-interval.

    For each score and metric: mean of the S per-seed values, interval mean +- t_{(1+level)/2, S-1} sd / sqrt(S)
    (sd with ddof = 1; seeds where the metric is NaN are left out; fewer than 2 left: NaN interval). "seeds": the
    number of tables holding the score. "cost" is averaged over the seeds that give one. Sorted as ``table`` sorts.
    """
    if not tables:
        raise ValueError("no tables to pool.")
    by_name: dict[str, list[dict]] = {}
    for rows in tables:
        for row in rows:
            by_name.setdefault(row["name"], []).append(row)
    out = []
    for name, rows in by_name.items():
        pooled = {"name": name}
        for m in metrics(rows[0]):
            v = np.array([r[m] for r in rows], np.float64)
            v = v[np.isfinite(v)]
            mean = float(v.mean()) if v.size else float("nan")
            if v.size >= 2:
                half = scipy.stats.t.ppf((1.0 + level) / 2.0, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size)
            else:
                half = float("nan")
            pooled.update({m: mean, f"{m}_lo": mean - half, f"{m}_hi": mean + half})
        pooled["seeds"] = len(rows)
        costs = np.array([r.get("cost", np.nan) for r in rows], np.float64)
        pooled["cost"] = float(costs[np.isfinite(costs)].mean()) if np.isfinite(costs).any() else float("nan")
        out.append(pooled)
    key = "spearman" if "spearman" in out[0] else "auroc"
    return sorted(out, key=lambda r: (np.isnan(r[key]), -np.nan_to_num(r[key])))
