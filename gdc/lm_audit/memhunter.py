"""Dataset-level membership test (MemHunter's test, without its prompt inducer).

H0: the candidate set S is not memorized, i.e. its per-sample scores (ROUGE-L precision of the greedy continuation
of each sample's true prefix) come from the same distribution as those of a matched never-trained control set.
H1 (one-sided): S scores higher. Two tests from scipy.stats: Mann-Whitney U (rank-based; ties handled by the
normal approximation with tie correction) and Welch's t (unequal variances). A p-value that is NaN (e.g. both
samples constant for Welch) counts as "not rejected".

Power and false-positive rate are rejection rates over random draws: each repetition draws |S| samples from the
candidate pool and |S| from the control pool without replacement; for the false-positive rate both come from one
never-trained pool, disjoint within each draw, so p-values should be uniform and the rate close to alpha.
"""

from collections.abc import Sequence

import numpy as np
from scipy import stats

TESTS = ("mannwhitney", "welch")


def dataset_test(scores_S: np.ndarray, scores_C: np.ndarray) -> dict[str, float]:
    """One-sided p-values that S scores higher than the control C."""
    scores_S, scores_C = np.asarray(scores_S, np.float64), np.asarray(scores_C, np.float64)
    if len(scores_S) < 2 or len(scores_C) < 2:
        raise ValueError(f"need >= 2 samples per set, got |S|={len(scores_S)}, |C|={len(scores_C)}.")
    mw = stats.mannwhitneyu(scores_S, scores_C, alternative="greater", method="asymptotic")
    with np.errstate(all="ignore"):
        welch = stats.ttest_ind(scores_S, scores_C, equal_var=False, alternative="greater")
    return {
        "mannwhitney": float(mw.pvalue),
        "welch": float(welch.pvalue),
        "mean_S": float(scores_S.mean()),
        "mean_C": float(scores_C.mean()),
    }


def rejection_rate(
    pool_S: np.ndarray,
    pool_C: np.ndarray | None,
    size: int,
    *,
    reps: int,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict[str, float]:
    """Fraction of ``reps`` random draws in which each test rejects H0 at ``alpha``.

    Args:
        pool_S: candidate-set scores (the sets S are drawn from it).
        pool_C: control scores; None draws S and the control disjointly from ``pool_S`` (a never-trained pool: the
            rate is then the false-positive rate).
        size: |S| = |control| per draw.
        reps: draws.
        alpha: significance level.
        seed: draw seed.

    Returns:
        test name -> rejection rate, plus ``<test>_p`` (all p-values, as a list) for uniformity checks.
    """
    pool_S = np.asarray(pool_S, np.float64)
    need_S = 2 * size if pool_C is None else size
    if len(pool_S) < need_S or (pool_C is not None and len(pool_C) < size):
        raise ValueError(f"size={size} needs {need_S} candidate and {size} control samples in the pools.")
    rng = np.random.default_rng(seed)
    p = {name: np.empty(reps) for name in TESTS}
    for r in range(reps):
        if pool_C is None:
            perm = rng.permutation(len(pool_S))
            s, c = pool_S[perm[:size]], pool_S[perm[size : 2 * size]]
        else:
            s = pool_S[rng.choice(len(pool_S), size, replace=False)]
            c = np.asarray(pool_C)[rng.choice(len(pool_C), size, replace=False)]
        res = dataset_test(s, c)
        for name in TESTS:
            p[name][r] = res[name]
    out: dict[str, float] = {name: float(np.mean(np.nan_to_num(p[name], nan=1.0) < alpha)) for name in TESTS}
    out.update({f"{name}_p": p[name].tolist() for name in TESTS})
    return out


def power_curve(
    pool_S: np.ndarray,
    pool_C: np.ndarray | None,
    sizes: Sequence[int],
    *,
    reps: int,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict[str, list[float]]:
    """``rejection_rate`` at every |S| in ``sizes`` (sizes too big for the pools are skipped)."""
    n_S = len(pool_S) // 2 if pool_C is None else len(pool_S)
    n_C = n_S if pool_C is None else len(pool_C)
    ok = [s for s in sizes if 2 <= s <= min(n_S, n_C)]
    out: dict[str, list[float]] = {"sizes": [float(s) for s in ok], **{name: [] for name in TESTS}}
    for i, s in enumerate(ok):
        res = rejection_rate(pool_S, pool_C, s, reps=reps, alpha=alpha, seed=seed + 1000 * i)
        for name in TESTS:
            out[name].append(res[name])
    return out


def min_significant_size(curve: dict[str, list[float]], test: str = "mannwhitney", power: float = 0.8) -> float:
    """Smallest |S| whose rejection rate reaches ``power``; inf when none does ("earlier significance")."""
    for size, rate in zip(curve["sizes"], curve[test], strict=True):
        if rate >= power:
            return float(size)
    return float("inf")
