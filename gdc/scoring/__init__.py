"""Data-cartography scores computed offline, in numpy, from the tracker snapshots a run writes (no model needed).

``cartography``: per-example scores on a ``[E, N]`` loss matrix (difficulty, forget events, memorization, upward
variation, quadrants, top-p% selection). ``sweep``: how stable the rankings are across thresholds, and scores as
canary detectors. ``workdir``: loading ``trackers/`` and writing ``scores/``.
"""

from gdc.scoring.cartography import (
    QUADRANT_NAMES,
    STATE_NAMES,
    cartography_axes,
    difficulty,
    final_loss,
    forget_events,
    memorization,
    play_operator,
    probability_from_loss,
    quadrants,
    resolve_eps,
    resolve_pair,
    top_fraction,
    upward_crossings,
    upward_variation,
)
from gdc.scoring.sweep import detector_auroc, detector_table, eps_sweep
from gdc.scoring.workdir import compute_scores, load_loss_matrix, load_tracker, score_run, write_scores

__all__ = [
    "QUADRANT_NAMES",
    "STATE_NAMES",
    "cartography_axes",
    "compute_scores",
    "detector_auroc",
    "detector_table",
    "difficulty",
    "eps_sweep",
    "final_loss",
    "forget_events",
    "load_loss_matrix",
    "load_tracker",
    "memorization",
    "play_operator",
    "probability_from_loss",
    "quadrants",
    "resolve_eps",
    "resolve_pair",
    "score_run",
    "top_fraction",
    "upward_crossings",
    "upward_variation",
    "write_scores",
]
