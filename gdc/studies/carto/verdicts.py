"""Verdicts on the paper's claims, computed from the per-run numbers of a study.

Each claim is a (metric, arm, control, claimed effect) tuple checked the same way:

* **Pooled rates with Wilson intervals.** Extraction counts are pooled over seeds (and over the replicates of a
  random control) and given a Wilson 95% interval.
* **The arm against its random control, respecting seeds.** Per seed, the arm's value is compared with the random
  replicates of the same seed (same probe, same data order). Under the null "the arm is one more random draw", the
  arm's label is exchangeable with the replicates' labels within each seed; ``within_seed_permutation`` enumerates
  every relabelling (``(R + 1)^S`` of them for R replicates and S seeds) and gives an exact one-sided p-value for
  the statistic "sum over seeds of (arm - mean of the other labels)". With 3 seeds x 3 replicates the smallest
  attainable p is 1/64.
* **The verdict.** ``reproduced``: the claimed effect is reached (point estimate) and the arm beats its random
  control (p < 0.05). ``contradicted``: the claimed effect lies outside the arm's interval (the data exclude it).
  ``not reproduced``: neither (the effect is missing, or present but not credited to the score). ``not testable``:
  the baseline does not show what the claim would reduce (it extracts fewer than half of its canaries).
"""

import itertools
from collections.abc import Sequence

import numpy as np
from scipy import stats

ALPHA = 0.05


def wilson(k: float, n: float, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion ``k / n`` (NaNs when ``n == 0``)."""
    if n == 0:
        return float("nan"), float("nan")
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, float(mid - half)), min(1.0, float(mid + half))


def within_seed_permutation(arm_Sd: Sequence[float], controls_SdxR: Sequence[Sequence[float]]) -> dict[str, float]:
    """Exact one-sided test that the arm's values lie BELOW its random controls', seed by seed.

    Args:
        arm_Sd: the arm's value per seed.
        controls_SdxR: the R random replicates' values per seed (R may differ between seeds).

    Returns:
        ``statistic`` (sum over seeds of arm - mean of the replicates), ``p_value`` (share of within-seed
        relabellings whose statistic is <= the observed one, the observed labelling included), ``relabellings``.
    """
    groups = [np.concatenate([[a], np.asarray(c, np.float64)]) for a, c in zip(arm_Sd, controls_SdxR, strict=True)]
    if not groups or any(len(g) < 2 for g in groups):
        nan = float("nan")
        return {"statistic": nan, "p_value": nan, "relabellings": 0.0}

    def stat(choice: Sequence[int]) -> float:
        return float(sum(g[i] - (g.sum() - g[i]) / (len(g) - 1) for g, i in zip(groups, choice, strict=True)))

    observed = stat([0] * len(groups))
    all_stats = np.array([stat(c) for c in itertools.product(*[range(len(g)) for g in groups])])
    p = float(np.mean(all_stats <= observed + 1e-12))
    return {"statistic": observed, "p_value": p, "relabellings": float(len(all_stats))}


def mean_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean and Student-t interval over seeds (NaN interval for fewer than 2 values)."""
    v = np.asarray(values, np.float64)
    if v.size == 0:
        return float("nan"), float("nan"), float("nan")
    if v.size < 2:
        return float(v.mean()), float("nan"), float("nan")
    half = stats.t.ppf(0.5 + level / 2, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size)
    return float(v.mean()), float(v.mean() - half), float(v.mean() + half)


def reduction_verdict(
    *,
    base_rate: float,
    rate: float,
    interval: tuple[float, float],
    claimed_rate: float,
    p_vs_random: float,
    min_base_rate: float = 0.5,
) -> str:
    """The verdict on "the arm lowers a rate from ``base_rate`` to at most ``claimed_rate``".

    ``interval`` is the arm's interval of the rate; ``p_vs_random`` the one-sided p-value of the arm against
    its random control (``within_seed_permutation``).
    """
    if not np.isfinite(base_rate) or base_rate < min_base_rate:
        return "not testable"
    beats_random = np.isfinite(p_vs_random) and p_vs_random < ALPHA
    if rate <= claimed_rate and beats_random:
        return "reproduced"
    if interval[0] > claimed_rate:
        return "contradicted"
    return "not reproduced"
