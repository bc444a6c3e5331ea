"""Verdict statistics (gdc/studies/carto/verdicts.py) against hand computations, brute force and scipy."""

import numpy as np
import pytest
from scipy import stats

from gdc.studies.carto import verdicts

Z = 1.96


def _wilson_roots(k: int, n: int, z: float = Z) -> tuple[float, float]:
    """The Wilson bounds as the two p solving (k/n - p)^2 = z^2 p (1 - p) / n, a quadratic in p."""
    phat = k / n
    roots = np.roots([1 + z * z / n, -(2 * phat + z * z / n), phat * phat])
    return float(roots.real.min()), float(roots.real.max())


def test_wilson_against_the_quadratic_and_scipy():
    for k, n in ((9, 10), (3, 7), (15, 30), (1, 1)):
        np.testing.assert_allclose(verdicts.wilson(k, n), _wilson_roots(k, n), rtol=1e-10, atol=1e-12)
        z = stats.norm.ppf(0.975)
        ci = stats.binomtest(k, n).proportion_ci(0.95, method="wilson")
        np.testing.assert_allclose(verdicts.wilson(k, n, z=z), (ci.low, ci.high), rtol=1e-10, atol=1e-12)
    # k = 9, n = 10 by hand: centre (0.9 + 1.96^2 / 20) / (1 + 1.96^2 / 10), half-width
    # 1.96 sqrt(0.9 * 0.1 / 10 + 1.96^2 / 400) / (1 + 1.96^2 / 10).
    den = 1 + Z * Z / 10
    mid, half = (0.9 + Z * Z / 20) / den, Z * np.sqrt(0.009 + Z * Z / 400) / den
    assert verdicts.wilson(9, 10) == pytest.approx((mid - half, mid + half), rel=1e-12)
    assert verdicts.wilson(9, 10) == pytest.approx((0.5958, 0.9821), abs=1e-4)
    # k = 0: the lower bound is 0 and the upper one z^2 / (n + z^2).
    assert verdicts.wilson(0, 30) == pytest.approx((0.0, Z * Z / (30 + Z * Z)), abs=1e-12)
    assert verdicts.wilson(30, 30) == pytest.approx((30 / (30 + Z * Z), 1.0), abs=1e-12)
    assert np.isnan(verdicts.wilson(0, 0)).all()


def _permutation_brute_force(arm_S, controls_SxR) -> tuple[float, float, int]:
    """(statistic, p, relabellings): every choice of which label in each seed is "the arm", by enumeration."""
    groups = [np.r_[a, np.asarray(c, np.float64)] for a, c in zip(arm_S, controls_SxR, strict=True)]

    def statistic(choice):
        return sum(g[i] - np.delete(g, i).mean() for g, i in zip(groups, choice, strict=True))

    choices = np.indices([len(g) for g in groups]).reshape(len(groups), -1).T
    all_stats = np.array([statistic(c) for c in choices])
    observed = statistic([0] * len(groups))
    return observed, float(np.mean(all_stats <= observed + 1e-9)), len(choices)


def test_within_seed_permutation_against_brute_force():
    rng = np.random.default_rng(0)
    for trial in range(30):
        seeds = rng.integers(1, 4)
        reps = rng.integers(1, 4, seeds)  # replicates may differ between seeds
        ties = trial % 2 == 1  # small integers (many tied statistics) or continuous values

        def draw(size, ties=ties):
            return rng.integers(0, 4, size).astype(float) if ties else rng.normal(size=size)

        arm_S = draw(seeds)
        controls_SxR = [draw(r) for r in reps]
        got = verdicts.within_seed_permutation(arm_S, controls_SxR)
        want_stat, want_p, count = _permutation_brute_force(arm_S, controls_SxR)
        assert got["relabellings"] == count == np.prod(reps + 1)
        assert got["statistic"] == pytest.approx(want_stat, abs=1e-9)
        assert got["p_value"] == pytest.approx(want_p, abs=1e-12), (arm_S, controls_SxR)


def test_within_seed_permutation_hand_cases():
    # Below every replicate in each of 3 seeds, 3 replicates each: only the observed labelling is as low.
    got = verdicts.within_seed_permutation([0.0, 1.0, 2.0], [[5.0, 6.0, 7.0]] * 3)
    assert got["p_value"] == 1 / 64 and got["relabellings"] == 64
    assert got["statistic"] == pytest.approx((0 - 6) + (1 - 6) + (2 - 6))
    # Equal to its replicates: every relabelling ties.
    got = verdicts.within_seed_permutation([4.0] * 3, [[4.0] * 3] * 3)
    assert got["p_value"] == 1.0 and got["statistic"] == 0.0
    # Above them: nothing is lower, so p = 1 too (one-sided).
    assert verdicts.within_seed_permutation([9.0] * 3, [[1.0, 2.0, 3.0]] * 3)["p_value"] == 1.0
    # Lowest in one seed of one with 3 replicates: 1/4; lowest in two seeds, equal in a third: 4 of 64 tie.
    assert verdicts.within_seed_permutation([0.0], [[1.0, 2.0, 3.0]])["p_value"] == 0.25
    got = verdicts.within_seed_permutation([0.0, 0.0, 1.0], [[1.0] * 3, [1.0] * 3, [1.0] * 3])
    assert got["p_value"] == 4 / 64
    for empty in (([], []), ([1.0, 2.0], [[3.0], []])):
        got = verdicts.within_seed_permutation(*empty)
        assert np.isnan(got["p_value"]) and got["relabellings"] == 0.0


def test_mean_interval_against_scipy():
    rng = np.random.default_rng(1)
    for size, level in ((2, 0.95), (3, 0.95), (5, 0.9)):
        v = rng.normal(size=size)
        mean, lo, hi = verdicts.mean_interval(v, level)
        want = stats.t.interval(level, size - 1, loc=v.mean(), scale=stats.sem(v))
        assert mean == pytest.approx(v.mean()) and (lo, hi) == pytest.approx(want, rel=1e-10)
    assert verdicts.mean_interval([0.5])[0] == 0.5 and np.isnan(verdicts.mean_interval([0.5])[1:]).all()
    assert np.isnan(verdicts.mean_interval([])).all()


@pytest.mark.parametrize(
    "base_rate, rate, interval, p, want",
    [
        (0.2, 0.0, (0.0, 0.1), 1 / 64, "not testable"),  # the baseline extracts under half its canaries
        (float("nan"), 0.0, (0.0, 0.1), 1 / 64, "not testable"),
        (1.0, 0.3, (0.15, 0.5), 1 / 64, "reproduced"),
        (1.0, 0.4, (0.25, 0.6), 0.049, "reproduced"),  # at the claimed level exactly
        (1.0, 0.3, (0.15, 0.5), 0.05, "not reproduced"),  # reached, but not below random (p is not < 0.05)
        (1.0, 0.3, (0.15, 0.5), float("nan"), "not reproduced"),  # no random control
        (1.0, 0.5, (0.33, 0.67), 1 / 64, "not reproduced"),  # missed, but the interval holds the claimed level
        (1.0, 0.9, (0.75, 0.97), 1 / 64, "contradicted"),  # the interval excludes it
        (0.5, 0.9, (0.75, 0.97), 1.0, "contradicted"),
    ],
)
def test_reduction_verdict(base_rate, rate, interval, p, want):
    got = verdicts.reduction_verdict(base_rate=base_rate, rate=rate, interval=interval, claimed_rate=0.4, p_vs_random=p)
    assert got == want
