"""Statistics shared by the checks: bound constants, violation fractions, eps sweeps and verdicts (numpy/scipy).

The lower-bound claim is ``score_i <= C |I_i|`` for every example (paper.md §5.2). For one score vector:
  * ``c_min`` is the smallest C that makes it hold: ``max_i score_i / |I_i|`` over score_i > 0 (inf if some example
    with a positive score has zero influence; 0 if every score is 0).
  * The violation fraction uses a scale-free C: both sides are divided by their dataset mean, so
    ``score_i / mean(score) > C |I_i| / mean(|I|)`` is a violation ("an example's share of memorization may exceed its
    share of influence at most C-fold"). The same C then applies to m at any eps, to the upward variation, and to
    any influence estimate, whatever their units.
  * A setting "holds" when the violation fraction is at most ``max_violation`` and the Spearman correlation is
    positive at significance ``alpha`` (paper.md §11 item 7 asks for both).
"""

import warnings

import numpy as np
import scipy.stats

from gdc import scoring

VERDICTS = ("holds", "holds only for some eps", "holds only in part", "fails")


def spearman(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(rho, two-sided p); (nan, nan) if either side is constant."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan"), float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = scipy.stats.spearmanr(a, b)
    return float(r.statistic), float(r.pvalue)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(scipy.stats.pearsonr(a, b).statistic)


def bound_stats(
    score_N: np.ndarray, infl_N: np.ndarray, *, bound_c: float, max_violation: float, alpha: float = 0.01
) -> dict:
    """How well ``score_i <= C |I_i|`` holds (see the module docstring).

    Returns:
      spearman, p, c_min (raw units), c_min_scaled (scale-free), violation (fraction of examples violating the
      scale-free bound at ``bound_c``), frac_pos (share of score > 0), holds (bool).
    """
    score_N = np.asarray(score_N, np.float64)
    abs_N = np.abs(np.asarray(infl_N, np.float64))
    rho, p = spearman(score_N, abs_N)
    pos_N = score_N > 0
    out = {"spearman": rho, "p": p, "frac_pos": float(pos_N.mean())}
    if not pos_N.any():
        out.update(c_min=0.0, c_min_scaled=0.0, violation=0.0, holds=False)
        return out
    with np.errstate(divide="ignore"):
        ratio_N = np.where(pos_N, score_N / abs_N, 0.0)
        scaled_N = np.where(pos_N, (score_N / score_N.mean()) / (abs_N / abs_N.mean()), 0.0)
    violation = float((scaled_N > bound_c).mean())
    holds = bool(violation <= max_violation and rho > 0 and p < alpha)
    out.update(c_min=float(ratio_N.max()), c_min_scaled=float(scaled_N.max()), violation=violation, holds=holds)
    return out


def memorization_at(loss_ExN: np.ndarray, kind: str, value: float, hysteresis: float) -> dict:
    """m (forget events / (C - 1)) at one threshold; hysteresis h > 1 uses the band (eps / h, eps * h).

    Returns:
      m_N, eps_low, eps_high (mean over examples for per-example thresholds), never_learned (count).
    """
    eps = scoring.resolve_eps(loss_ExN, kind, value)
    low, high = (eps, eps) if hysteresis == 1.0 else (eps / hysteresis, eps * hysteresis)
    ev = scoring.forget_events(loss_ExN, low, high)
    m = scoring.memorization(ev["forget_N"], ev["transitions"], ev["ever_learned_N"])
    return {
        "m_N": m["m_N"],
        "eps_low": float(np.mean(low)),
        "eps_high": float(np.mean(high)),
        "never_learned": int((~ev["ever_learned_N"]).sum()),
    }


def sweep(
    loss_ExN: np.ndarray,
    influences: dict[str, np.ndarray],
    settings: list[tuple[str, float, float]],
    *,
    bound_c: float,
    max_violation: float,
    flags_N: np.ndarray | None = None,
    top: float = 0.05,
) -> list[dict]:
    """One row per (kind, value, hysteresis) setting: m's bound statistics against each influence estimate.

    Args:
      loss_ExN: checkpoint losses.
      influences: name -> ``[N]`` influence values (e.g. exact self-influence, LOO loss change).
      settings: (kind, value, hysteresis) triples; hysteresis 1.0 is the single-threshold rule.
      flags_N: optional bool marks (e.g. flipped labels): each row reports their share of the top ``top`` by m.
    """
    rows = []
    for kind, value, h in settings:
        mem = memorization_at(loss_ExN, kind, value, h)
        row = {k: v for k, v in mem.items() if k != "m_N"}
        row.update(kind=kind, value=float(value), hysteresis=float(h), frac_m_pos=float((mem["m_N"] > 0).mean()))
        for name, infl_N in influences.items():
            row[name] = bound_stats(mem["m_N"], infl_N, bound_c=bound_c, max_violation=max_violation)
        if flags_N is not None:
            ids, _ = scoring.top_fraction(mem["m_N"], top, tie_break_N=scoring.upward_variation(loss_ExN)[0])
            row["flagged_in_top"] = float(np.asarray(flags_N)[ids].mean()) if len(ids) else float("nan")
        rows.append(row)
    return rows


def settings_for(eps_absolute, eps_percentile, hysteresis: float) -> list[tuple[str, float, float]]:
    """Every (kind, value) with the single-threshold rule and with the hysteresis band."""
    out = []
    for h in (1.0, hysteresis):
        out += [("absolute", float(v), h) for v in eps_absolute]
        out += [("percentile", float(v), h) for v in eps_percentile]
    return out


def sweep_verdict(rows: list[dict], name: str) -> str:
    """holds (every setting), holds only for some eps (some), fails (none) for influence estimate ``name``."""
    held = [r[name]["holds"] for r in rows]
    if all(held):
        return "holds"
    return "holds only for some eps" if any(held) else "fails"


def combine(verdicts: list[str]) -> str:
    """One verdict from several runs: holds if all hold, fails if all fail, otherwise holds only for some eps."""
    if all(v == "holds" for v in verdicts):
        return "holds"
    if all(v == "fails" for v in verdicts):
        return "fails"
    return "holds only for some eps"
