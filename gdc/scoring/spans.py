"""Span scores (``tracker.spans``): difficulty and memorization of each marked span from its loss matrix, by the same
rule and code as the per-example scores, and their max and mean per example. ``gdc.scoring.workdir`` loads the
``[E, N, Sp]`` matrix (``load_span_loss_matrix``) and adds these to a run's ``scores.npz``.
"""

from typing import Any

import numpy as np

from gdc.scoring import cartography as carto


def compute_span_scores(
    loss_ExNxSp: np.ndarray,
    meta: dict[str, Any],
    *,
    eps: float | None = None,
    kind: str = "absolute",
    hysteresis: float | None = None,
    early: int | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Span difficulty and memorization (pure): the per-example scores of ``compute_scores`` with each span's row
    of the ``[E, N x Sp]`` matrix as an example (same rule, thresholds and early window), then per example the max
    and mean over its observed spans.

    Returns:
      (arrays, summary): ``span_d_NxSp``, ``span_m_NxSp``, ``span_forget_NxSp``, ``span_learn_NxSp``,
      ``span_observed_NxSp`` (d and m NaN for a span never observed), ``span_d_N`` / ``span_m_N`` (the max over the
      example's spans, NaN without any), ``span_d_mean_N`` / ``span_m_mean_N``.
    """
    e, n, sp = loss_ExNxSp.shape
    loss_ExR = np.asarray(loss_ExNxSp, np.float32).reshape(e, n * sp)
    if eps is None:
        value = (float(meta["eps_low"]), float(meta["eps_high"]))
        kind = "absolute"
    else:
        value = eps if hysteresis is None else (eps, hysteresis)
    eps_low, eps_high = carto.resolve_pair(loss_ExR, kind, value)
    ev = carto.forget_events(loss_ExR, eps_low, eps_high)
    d_R = carto.difficulty(loss_ExR, int(early or meta.get("early_checkpoints") or 1))
    mem = carto.memorization(ev["forget_N"], ev["transitions"], ev["ever_learned_N"], observed_N=ev["observed_N"])
    seen_R = ev["observed_N"] > 0
    m_R = np.where(seen_R, mem["m_N"], np.nan)
    shape = (n, sp)
    arrays = {
        "span_d_NxSp": d_R.reshape(shape),
        "span_m_NxSp": m_R.reshape(shape),
        "span_forget_NxSp": ev["forget_N"].reshape(shape),
        "span_learn_NxSp": ev["learn_N"].reshape(shape),
        "span_observed_NxSp": ev["observed_N"].reshape(shape),
    }
    for name in ("d", "m"):
        x_NxSp = arrays[f"span_{name}_NxSp"]
        arrays[f"span_{name}_N"] = carto._nan_reduce(np.nanmax, x_NxSp, axis=1)
        arrays[f"span_{name}_mean_N"] = carto._nan_reduce(np.nanmean, x_NxSp, axis=1)
    summary = {
        "spans_per_example": sp,
        "observed_spans": int(seen_R.sum()),
        "examples_with_spans": int(seen_R.reshape(shape).any(axis=1).sum()),
        "frac_m_pos": float(np.mean(m_R[seen_R] > 0)) if seen_R.any() else None,
    }
    return arrays, summary
