"""TabCutMix, TabCutMixPlus (feature clusters) and DynamicCut, as pure functions of tables and scores.

TabCutMix (reference ``cutmix_tabular``): a new row copies row A, then takes ``int(lam * F)`` of its F features
(lam ~ U(0, 1), chosen without replacement) from a row B of the same class; the label stays. TabCutMixPlus
(``cutmix_tabular_cluster``) swaps ``int(lam * #clusters)`` whole feature clusters instead; clusters come from
average-linkage clustering of the distance ``1 - |assoc|`` cut at 0.3, with assoc = |Pearson| (numeric-numeric),
bias-corrected Cramer's V (categorical-categorical) and sqrt(eta^2) (numeric-categorical). Features are numbered
numeric first, then categorical; the label is never a feature. DynamicCut ranks training rows by their epoch-wise
replica counts summed over checkpoints and prunes the top fraction.
"""

import numpy as np
from scipy.cluster import hierarchy
from scipy.spatial.distance import squareform

from gdc.scoring import cartography
from gdc.studies.tabular.data import Table

CLUSTER_CUT = 0.3


def cramers_v(a_N: np.ndarray, b_N: np.ndarray) -> float:
    """Bias-corrected Cramer's V (Bergsma 2013) of two categorical columns."""
    _, a = np.unique(a_N, return_inverse=True)
    _, b = np.unique(b_N, return_inverse=True)
    r, k = a.max() + 1, b.max() + 1
    counts = np.zeros((r, k))
    np.add.at(counts, (a, b), 1.0)
    n = counts.sum()
    expected = counts.sum(1, keepdims=True) * counts.sum(0, keepdims=True) / n
    chi2 = np.sum((counts - expected) ** 2 / np.where(expected > 0, expected, 1.0))
    phi2 = max(0.0, chi2 / n - (k - 1) * (r - 1) / (n - 1))
    r_c, k_c = r - (r - 1) ** 2 / (n - 1), k - (k - 1) ** 2 / (n - 1)
    denom = min(k_c - 1, r_c - 1)
    return float(np.sqrt(phi2 / denom)) if denom > 0 else 0.0


def correlation_ratio(cat_N: np.ndarray, num_N: np.ndarray) -> float:
    """sqrt(eta^2): sqrt(between-category sum of squares / total sum of squares)."""
    total = np.sum((num_N - num_N.mean()) ** 2)
    if total == 0:
        return 0.0
    between = sum(np.sum(cat_N == c) * (num_N[cat_N == c].mean() - num_N.mean()) ** 2 for c in np.unique(cat_N))
    return float(np.sqrt(between / total))


def association(table: Table) -> np.ndarray:
    """``[F, F]`` feature-feature association in [0, 1] (1 on the diagonal)."""
    f_num, f_cat = table.num_NxF.shape[1], table.cat_NxFc.shape[1]
    cols = [table.num_NxF[:, j] for j in range(f_num)] + [table.cat_NxFc[:, j] for j in range(f_cat)]
    f = f_num + f_cat
    a = np.eye(f)
    for i in range(f):
        for j in range(i + 1, f):
            if i < f_num and j < f_num:
                sd = cols[i].std() * cols[j].std()
                v = abs(np.corrcoef(cols[i], cols[j])[0, 1]) if sd > 0 else 0.0
            elif i >= f_num and j >= f_num:
                v = cramers_v(cols[i], cols[j])
            else:
                v = correlation_ratio(cols[j], cols[i])  # i numeric, j categorical (numeric come first)
            a[i, j] = a[j, i] = min(1.0, abs(v))
    return a


def feature_clusters(table: Table, cut: float = CLUSTER_CUT) -> list[np.ndarray]:
    """Average-linkage clusters of ``1 - |assoc|`` cut at distance ``cut``: a list of feature-index arrays."""
    f = table.num_NxF.shape[1] + table.cat_NxFc.shape[1]
    if f == 1:
        return [np.array([0])]
    dist = np.clip(1.0 - association(table), 0.0, 1.0)
    np.fill_diagonal(dist, 0.0)
    labels = hierarchy.fcluster(hierarchy.linkage(squareform(dist, checks=False), "average"), cut, "distance")
    return [np.flatnonzero(labels == c) for c in np.unique(labels)]


def _partners(table: Table, rng: np.random.Generator, num_new: int) -> tuple[np.ndarray, np.ndarray]:
    a = rng.integers(0, len(table), num_new)
    b = np.empty_like(a)
    for i, ai in enumerate(a):
        same = np.flatnonzero(table.y_N == table.y_N[ai])
        b[i] = rng.choice(same)
    return a, b


def _mix(table: Table, a: np.ndarray, b: np.ndarray, swap_NxF: np.ndarray) -> Table:
    f_num = table.num_NxF.shape[1]
    num = np.where(swap_NxF[:, :f_num], table.num_NxF[b], table.num_NxF[a])
    cat = np.where(swap_NxF[:, f_num:], table.cat_NxFc[b], table.cat_NxFc[a])
    return Table(num, cat.astype(np.int32), table.y_N[a].copy(), table.cards, table.num_classes)


def tabcutmix(table: Table, num_new: int, seed: int) -> tuple[Table, np.ndarray, np.ndarray]:
    """``num_new`` TabCutMix rows. Returns (new rows, parent A ids, parent B ids); labels are A's (= B's)."""
    rng = np.random.default_rng([seed, 31])
    f = table.num_NxF.shape[1] + table.cat_NxFc.shape[1]
    a, b = _partners(table, rng, num_new)
    swap = np.zeros((num_new, f), bool)
    for i in range(num_new):
        swap[i, rng.choice(f, int(rng.uniform() * f), replace=False)] = True
    return _mix(table, a, b, swap), a, b


def tabcutmix_plus(
    table: Table, num_new: int, seed: int, clusters: list[np.ndarray] | None = None
) -> tuple[Table, np.ndarray, np.ndarray]:
    """``num_new`` TabCutMixPlus rows: whole feature clusters come from B. Returns (rows, A ids, B ids)."""
    rng = np.random.default_rng([seed, 37])
    clusters = feature_clusters(table) if clusters is None else clusters
    f = table.num_NxF.shape[1] + table.cat_NxFc.shape[1]
    a, b = _partners(table, rng, num_new)
    swap = np.zeros((num_new, f), bool)
    for i in range(num_new):
        for c in rng.choice(len(clusters), int(rng.uniform() * len(clusters)), replace=False):
            swap[i, clusters[c]] = True
    return _mix(table, a, b, swap), a, b


def dynamic_cut(counts_ExN: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, dict]:
    """DynamicCut: the kept ids after pruning the top ``fraction`` by epoch-wise replica counts summed over E.

    Ties (rows never replicated) are broken at random with ``seed``, as ``gdc.scoring.cartography.top_fraction``
    records. Returns (keep_idx sorted, info).
    """
    score_N = np.asarray(counts_ExN, np.float64).sum(axis=0)
    removed, tie = cartography.top_fraction(score_N, fraction, None, seed=seed)
    keep = np.setdiff1d(np.arange(len(score_N)), removed)
    return keep, {"removed": int(len(removed)), "tie": tie, "rows_with_counts": int((score_N > 0).sum())}
