"""Dataset-level membership test (MemHunter's test; its prompt inducer is ``inducer`` / ``hunt``).

H0: the candidate set S is not memorized, i.e. its per-sample scores (in the study: ROUGE-L precision of the greedy
continuation of each sample's true prefix, or the longest substring of the sample that the target emits under the
inducer's prompts) come from the same distribution as those of a matched never-trained control set.
H1 (one-sided): S scores higher. Two tests from scipy.stats: Mann-Whitney U (rank-based; ties handled by the
normal approximation with tie correction) and Welch's t (unequal variances). A p-value that is NaN (e.g. both
samples constant for Welch) counts as "not rejected".

Power and false-positive rate are rejection rates over random draws: each repetition draws |S| samples from the
candidate pool and |S| from the control pool without replacement (a pool larger than |S| makes S vary); for the
false-positive rate both come from one never-trained pool, disjoint within each draw, so p-values should be uniform
and the rate close to alpha.
"""

import warnings
from collections.abc import Sequence

import numpy as np
from scipy import stats

TESTS = ("mannwhitney", "welch")


def dataset_test(scores_N: np.ndarray, scores_M: np.ndarray) -> dict[str, float | np.ndarray]:
    """One-sided p-values that the candidate set S (``scores_N``) scores higher than the control C (``scores_M``).

    Batched: ``scores_N`` [..., n] and ``scores_M`` [..., m] test every leading index at once (last axis = samples).
    """
    scores_N, scores_M = np.asarray(scores_N, np.float64), np.asarray(scores_M, np.float64)
    if scores_N.shape[-1] < 2 or scores_M.shape[-1] < 2:
        raise ValueError(f"need >= 2 samples per set, got |S|={scores_N.shape[-1]}, |C|={scores_M.shape[-1]}.")
    mw = stats.mannwhitneyu(scores_N, scores_M, alternative="greater", method="asymptotic", axis=-1)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # constant samples: Welch's p is NaN (not rejected)
        welch = stats.ttest_ind(scores_N, scores_M, equal_var=False, alternative="greater", axis=-1)
    out = {"mannwhitney": mw.pvalue, "welch": welch.pvalue}
    if scores_N.ndim == 1:
        out = {k: float(v) for k, v in out.items()}
        out.update(mean_S=float(scores_N.mean()), mean_C=float(scores_M.mean()))
    return out


def rejection_rate(
    pool_N: np.ndarray,
    pool_M: np.ndarray | None,
    size: int,
    *,
    reps: int,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict[str, float]:
    """Fraction of ``reps`` random draws in which each test rejects H0 at ``alpha``.

    Args:
        pool_N: candidate-set scores (the sets S are drawn from it).
        pool_M: control scores; None draws S and the control disjointly from ``pool_N`` (a never-trained pool: the
            rate is then the false-positive rate).
        size: |S| = |control| per draw.
        reps: draws.
        alpha: significance level.
        seed: draw seed.

    Returns:
        test name -> rejection rate, plus ``<test>_p`` (all p-values, as a list) for uniformity checks.
    """
    pool_N = np.asarray(pool_N, np.float64)
    need = 2 * size if pool_M is None else size
    if len(pool_N) < need or (pool_M is not None and len(pool_M) < size):
        raise ValueError(f"size={size} needs {need} candidate and {size} control samples in the pools.")
    rng = np.random.default_rng(seed)
    if pool_M is None:
        perm_RxN = rng.permuted(np.tile(np.arange(len(pool_N)), (reps, 1)), axis=1)
        s_RxN, c_RxM = pool_N[perm_RxN[:, :size]], pool_N[perm_RxN[:, size : 2 * size]]
    else:
        pool_M = np.asarray(pool_M, np.float64)
        s_RxN = pool_N[rng.permuted(np.tile(np.arange(len(pool_N)), (reps, 1)), axis=1)[:, :size]]
        c_RxM = pool_M[rng.permuted(np.tile(np.arange(len(pool_M)), (reps, 1)), axis=1)[:, :size]]
    p = dataset_test(s_RxN, c_RxM)
    out: dict[str, float] = {name: float(np.mean(np.nan_to_num(p[name], nan=1.0) < alpha)) for name in TESTS}
    out.update({f"{name}_p": np.asarray(p[name]).tolist() for name in TESTS})
    return out


def power_curve(
    pool_N: np.ndarray,
    pool_M: np.ndarray | None,
    sizes: Sequence[int],
    *,
    reps: int,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict[str, list[float]]:
    """``rejection_rate`` at every |S| in ``sizes`` (sizes too big for the pools are skipped)."""
    num_candidates = len(pool_N) // 2 if pool_M is None else len(pool_N)
    num_controls = num_candidates if pool_M is None else len(pool_M)
    ok = [s for s in sizes if 2 <= s <= min(num_candidates, num_controls)]
    out: dict[str, list[float]] = {"sizes": [float(s) for s in ok], **{name: [] for name in TESTS}}
    for i, s in enumerate(ok):
        res = rejection_rate(pool_N, pool_M, s, reps=reps, alpha=alpha, seed=seed + 1000 * i)
        for name in TESTS:
            out[name].append(res[name])
    return out


def min_significant_size(curve: dict[str, list[float]], test: str = "mannwhitney", power: float = 0.8) -> float:
    """Smallest |S| whose rejection rate reaches ``power``; inf when none does ("earlier significance")."""
    for size, rate in zip(curve["sizes"], curve[test], strict=True):
        if rate >= power:
            return float(size)
    return float("inf")
