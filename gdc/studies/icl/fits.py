"""Estimators of the ICL-kinetics study (numpy): K*, acquisition times, power-law exponents and their intervals.

* ``k_star``: where a final-accuracy-vs-K curve crosses a threshold for good (log-linear interpolation).
* ``acquisition_time``: the first step at which an accuracy-through-training curve reaches a threshold (linear
  interpolation between the two checkpoints around it).
* ``power_law``: the exponent of y ~ x^a from log-log least squares, fitted per seed, with the 95% t interval over
  seeds (the seeds are the independent replicates), beside the pooled fit and a bootstrap over seeds.
* ``difference``: Welch's 95% interval for the difference of two means (e.g. the K* slope minus 1/nu).
"""

import math
import warnings

import numpy as np
from scipy import stats


def k_star(k_values, acc_S, threshold: float) -> tuple[float, str]:
    """(K*, status): the K where ``acc_S`` crosses ``threshold`` for good, log-linearly interpolated.

    status is "ok", "below_grid" (already >= threshold at the smallest K) or "above_grid" (the largest K is below
    it); K* is NaN unless "ok".
    """
    logk_S = np.log(np.asarray(k_values, np.float64))
    acc_S = np.asarray(acc_S, np.float64)
    above_S = acc_S >= threshold
    if not above_S[-1]:
        return math.nan, "above_grid"
    j = len(acc_S) - 1
    while j > 0 and above_S[j - 1]:
        j -= 1
    if j == 0:
        return math.nan, "below_grid"
    a0, a1 = acc_S[j - 1], acc_S[j]
    t = (threshold - a0) / (a1 - a0)
    return float(np.exp(logk_S[j - 1] + t * (logk_S[j] - logk_S[j - 1]))), "ok"


def acquisition_time(steps_E, acc_E, threshold: float) -> tuple[float, str]:
    """(step, status): the first step where ``acc_E`` reaches ``threshold``, linearly interpolated from the
    checkpoint before it. status "ok", "never" (no checkpoint reaches it) or "at_first" (the first checkpoint
    already does, so the time is only bounded above); the step is NaN unless "ok"."""
    steps_E, acc_E = np.asarray(steps_E, np.float64), np.asarray(acc_E, np.float64)
    hit_E = acc_E >= threshold
    if not hit_E.any():
        return math.nan, "never"
    j = int(hit_E.argmax())
    if j == 0:
        return math.nan, "at_first"
    t = (threshold - acc_E[j - 1]) / (acc_E[j] - acc_E[j - 1])
    return float(steps_E[j - 1] + t * (steps_E[j] - steps_E[j - 1])), "ok"


def fit_slope(x_S, y_S) -> dict:
    """Least-squares slope of log y on log x over the finite, positive points, with its 95% t interval."""
    x_S, y_S = np.asarray(x_S, np.float64), np.asarray(y_S, np.float64)
    ok_S = np.isfinite(y_S) & (y_S > 0)
    x, y = np.log(x_S[ok_S]), np.log(y_S[ok_S])
    if np.unique(x).size < 2:
        return {"slope": math.nan, "ci95": [math.nan, math.nan], "points": int(ok_S.sum())}
    fit = stats.linregress(x, y)
    dof = x.size - 2
    half = stats.t.ppf(0.975, dof) * fit.stderr if dof > 0 else math.nan
    return {
        "slope": float(fit.slope),
        "intercept": float(fit.intercept),
        "stderr": float(fit.stderr) if dof > 0 else math.nan,
        "ci95": [float(fit.slope - half), float(fit.slope + half)],
        "r": float(fit.rvalue),
        "points": int(ok_S.sum()),
    }


def t_interval(values) -> dict:
    """Mean of the finite ``values`` with its 95% t interval (NaN interval with fewer than 2)."""
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {"mean": math.nan, "ci95": [math.nan, math.nan], "sd": math.nan, "n": 0}
    if v.size < 2:
        return {"mean": float(v[0]), "ci95": [math.nan, math.nan], "sd": math.nan, "n": 1}
    half = stats.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size)
    return {
        "mean": float(v.mean()),
        "ci95": [float(v.mean() - half), float(v.mean() + half)],
        "sd": float(v.std(ddof=1)),
        "n": int(v.size),
    }


def bootstrap_slope(x_X, y_SxX, reps: int = 2000, seed: int = 0) -> list[float]:
    """95% percentile interval of the slope fitted to seed-mean log y, resampling seeds per x with replacement."""
    rng = np.random.default_rng(seed)
    y_SxX = np.asarray(y_SxX, np.float64)
    logy_SxX = np.log(np.where(y_SxX > 0, y_SxX, np.nan))
    s, n = logy_SxX.shape
    x = np.log(np.asarray(x_X, np.float64))
    slopes = []
    for _ in range(reps):
        with warnings.catch_warnings():  # a resample with only censored values gives NaN at that x, then skipped
            warnings.simplefilter("ignore", RuntimeWarning)
            y = np.array([np.nanmean(logy_SxX[rng.integers(0, s, s), j]) for j in range(n)])
        ok = np.isfinite(y)
        if np.unique(x[ok]).size >= 2:
            slopes.append(np.polyfit(x[ok], y[ok], 1)[0])
    if not slopes:
        return [math.nan, math.nan]
    return [float(np.percentile(slopes, 2.5)), float(np.percentile(slopes, 97.5))]


def power_law(x_X, y_SxX, seed: int = 0) -> dict:
    """Exponent a of y ~ x^a from ``y_SxX`` (seeds x grid; NaN = censored): per-seed log-log fits, their mean with
    the 95% t interval over seeds (``exponent``, ``ci95``), the pooled fit over all points and a bootstrap."""
    y_SxX = np.asarray(y_SxX, np.float64)
    per_seed = [fit_slope(x_X, row) for row in y_SxX]
    over_seeds = t_interval([p["slope"] for p in per_seed])
    return {
        "exponent": over_seeds["mean"],
        "ci95": over_seeds["ci95"],
        "sd": over_seeds["sd"],
        "seeds_fitted": over_seeds["n"],
        "per_seed": [p["slope"] for p in per_seed],
        "pooled": fit_slope(np.tile(np.asarray(x_X), y_SxX.shape[0]), y_SxX.reshape(-1)),
        "bootstrap_ci95": bootstrap_slope(x_X, y_SxX, seed=seed),
    }


def local_slopes(x_X, y_SxX) -> list[dict]:
    """Slope of log y on log x between consecutive grid points, per seed, with the 95% t interval over seeds: a
    power law has the same slope everywhere, so a trend across the pairs is curvature on the log-log plot."""
    x = np.log(np.asarray(x_X, np.float64))
    with np.errstate(divide="ignore", invalid="ignore"):
        logy_SxX = np.log(np.asarray(y_SxX, np.float64))
    out = []
    for j in range(x.size - 1):
        t = t_interval((logy_SxX[:, j + 1] - logy_SxX[:, j]) / (x[j + 1] - x[j]))
        out.append({"from": float(np.exp(x[j])), "to": float(np.exp(x[j + 1])), **t})
    return out


def inverse_interval(ci) -> list[float]:
    """The interval of 1/a for a in ``ci`` (NaN unless it excludes 0)."""
    lo, hi = ci
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo <= 0 <= hi:
        return [math.nan, math.nan]
    return sorted([1.0 / hi, 1.0 / lo])


def difference(a, b) -> dict:
    """mean(a) - mean(b) over the finite values with Welch's 95% interval."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if a.size < 2 or b.size < 2:
        return {"diff": math.nan, "ci95": [math.nan, math.nan]}
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se = math.sqrt(va + vb)
    dof = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1)) if se > 0 else 1.0
    half = stats.t.ppf(0.975, dof) * se
    d = float(a.mean() - b.mean())
    return {"diff": d, "ci95": [d - half, d + half], "dof": float(dof)}


def contains(ci, value: float) -> bool:
    return bool(ci[0] <= value <= ci[1])
