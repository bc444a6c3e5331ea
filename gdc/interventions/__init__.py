"""Interventions: pure functions from scores to artefacts (``keep_idx``, ``weights_N``, ``multiplicity_N``).

Nothing here touches a model or mutates state. An ``Artefact`` is written to a folder as ``.npy`` files plus
``artefact.json`` (what was selected, how ties were broken, the config), and the retrain reads the ``.npy`` paths
through ``train.keep_idx_path`` / ``train.weights_path`` / ``train.multiplicity_path``.
"""

import dataclasses
import os
from typing import Any

import numpy as np

from gdc import jsonio
from gdc.scoring import cartography

HOTSPOT = cartography.QUADRANT_NAMES.index("Hotspot-Memorized")
NOISY = cartography.QUADRANT_NAMES.index("Noisy-Outlier")
HARD = cartography.QUADRANT_NAMES.index("Ambiguous-Hard")


@dataclasses.dataclass(frozen=True)
class Artefact:
    name: str
    num_examples: int
    keep_idx: np.ndarray | None = None
    weights_N: np.ndarray | None = None
    multiplicity_N: np.ndarray | None = None
    info: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def affected_ids(self) -> np.ndarray:
        """Ids removed, down-weighted or up-sampled."""
        if self.keep_idx is not None:
            return np.setdiff1d(np.arange(self.num_examples), self.keep_idx)
        if self.weights_N is not None:
            return np.flatnonzero(self.weights_N != 1.0)
        if self.multiplicity_N is not None:
            return np.flatnonzero(self.multiplicity_N != 1)
        return np.zeros(0, np.int64)


def remove(ids: np.ndarray, n: int, name: str, **info: Any) -> Artefact:
    keep = np.setdiff1d(np.arange(n), np.asarray(ids, np.int64))
    return Artefact(name, n, keep_idx=keep.astype(np.int64), info={"removed": int(n - len(keep)), **info})


def prune_top(score_N: np.ndarray, fraction: float, name: str, *, tie_break_N=None, seed: int = 0, **info) -> Artefact:
    """Removes the top ``fraction`` by ``score_N`` (ties: ``tie_break_N``, then seeded random; recorded)."""
    ids, tie = cartography.top_fraction(score_N, fraction, tie_break_N, seed=seed)
    return remove(ids, len(score_N), name, fraction=fraction, tie=tie, **info)


def prune_random(n: int, fraction: float, name: str, *, seed: int) -> Artefact:
    k = int(np.floor(fraction * n + 0.5))
    ids = np.random.default_rng([seed, 7]).choice(n, k, replace=False)
    return remove(ids, n, name, fraction=fraction, seed=seed)


def downweight(ids: np.ndarray, alpha: float, n: int, name: str, **info: Any) -> Artefact:
    """Loss weight ``alpha`` on ``ids``, 1 elsewhere."""
    weights_N = np.ones(n, np.float32)
    weights_N[np.asarray(ids, np.int64)] = alpha
    return Artefact(name, n, weights_N=weights_N, info={"alpha": alpha, "count": int(len(ids)), **info})


def upsample(ids: np.ndarray, gamma: float, n: int, name: str, *, seed: int = 0, **info: Any) -> Artefact:
    """Visits per epoch: ``gamma`` on ``ids`` (a fractional part is rounded once, seeded), 1 elsewhere."""
    ids = np.asarray(ids, np.int64)
    base, frac = int(np.floor(gamma)), gamma - np.floor(gamma)
    mult_N = np.ones(n, np.int64)
    mult_N[ids] = base + (np.random.default_rng([seed, 11]).random(len(ids)) < frac)
    return Artefact(name, n, multiplicity_N=mult_N, info={"gamma": gamma, "count": int(len(ids)), **info})


def write(artefact: Artefact, folder: str) -> dict[str, str]:
    """Writes the artefact's arrays and ``artefact.json``; returns the train-config paths to pass to the retrain."""
    os.makedirs(folder, exist_ok=True)
    paths = {}
    for field, key in (
        ("keep_idx", "keep_idx_path"),
        ("weights_N", "weights_path"),
        ("multiplicity_N", "multiplicity_path"),
    ):
        arr = getattr(artefact, field)
        if arr is not None:
            path = os.path.join(os.path.abspath(folder), f"{field}.npy")
            np.save(path, arr)
            paths[key] = path
    record = {
        "name": artefact.name,
        "num_examples": artefact.num_examples,
        "paths": paths,
        "affected": int(len(artefact.affected_ids)),
        "info": artefact.info,
    }
    jsonio.write(os.path.join(folder, "artefact.json"), record, indent=2)
    return paths
