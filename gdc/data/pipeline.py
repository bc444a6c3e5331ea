"""Epoch iterator: seeded per-epoch order, fixed-size padded batches, resumable from a two-number state.

Invariants:
  * Epoch e visits the kept ids (each repeated ``multiplicity_N[i]`` times) in the order
    ``np.random.default_rng([seed, e]).permutation``; the order is a pure function of (seed, e), so the iterator's
    whole state is ``{"epoch", "position"}`` (batches already consumed in the epoch).
  * Every batch has exactly ``batch_size`` rows, so the jitted step never recompiles. Padding rows carry
    ``index = N`` (out of range for every tracker write), ``mask = False`` and zero inputs.
  * With several processes, each builds only its own contiguous slice of the global batch.
"""

from collections.abc import Iterator

import numpy as np

from gdc.types import HostBatch


class EpochIterator:
    """Yields ``(epoch, position, batch)`` where ``batch`` holds this process's rows of the global batch."""

    def __init__(
        self,
        arrays: dict[str, np.ndarray],
        batch_size: int,
        seed: int,
        *,
        keep_idx: np.ndarray | None = None,
        multiplicity_N: np.ndarray | None = None,
        weights_N: np.ndarray | None = None,
        epoch: int = 0,
        position: int = 0,
        process_index: int = 0,
        process_count: int = 1,
    ):
        self.arrays = arrays
        self.num_examples = len(next(iter(arrays.values())))
        self.batch_size = batch_size
        self.seed = seed
        ids = np.arange(self.num_examples) if keep_idx is None else np.asarray(keep_idx, np.int64)
        if multiplicity_N is not None:
            ids = np.repeat(ids, np.asarray(multiplicity_N)[ids])
        self.ids = ids
        self.weights_N = None if weights_N is None else np.asarray(weights_N, np.float32)
        self.epoch = epoch
        self.position = position
        self.local_rows = slice(
            process_index * batch_size // process_count, (process_index + 1) * batch_size // process_count
        )
        self._order_epoch, self._order = -1, ids

    @property
    def steps_per_epoch(self) -> int:
        return -(-len(self.ids) // self.batch_size)

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def order(self, epoch: int) -> np.ndarray:
        """The ids of ``epoch`` in visiting order."""
        if self._order_epoch != epoch:
            perm = np.random.default_rng([self.seed, epoch]).permutation(len(self.ids))
            self._order_epoch, self._order = epoch, self.ids[perm]
        return self._order

    def batch(self, epoch: int, position: int) -> HostBatch:
        """The (local rows of the) ``position``-th batch of ``epoch``."""
        chunk = self.order(epoch)[position * self.batch_size : (position + 1) * self.batch_size]
        idx_B = np.full(self.batch_size, self.num_examples, np.int32)
        idx_B[: len(chunk)] = chunk
        idx_B = idx_B[self.local_rows]
        return gather(self.arrays, idx_B, self.num_examples, self.weights_N)

    def __iter__(self) -> Iterator[tuple[int, int, HostBatch]]:
        return self

    def __next__(self) -> tuple[int, int, HostBatch]:
        if self.position >= self.steps_per_epoch:
            self.epoch, self.position = self.epoch + 1, 0
        out = (self.epoch, self.position, self.batch(self.epoch, self.position))
        self.position += 1
        return out


def gather(
    arrays: dict[str, np.ndarray], idx_B: np.ndarray, num_examples: int, weights_N: np.ndarray | None = None
) -> HostBatch:
    """Rows ``idx_B`` of ``arrays`` plus ``index``/``mask`` (and ``weight``); ids >= N become zero padding rows."""
    mask_B = idx_B < num_examples
    safe_B = np.where(mask_B, idx_B, 0)
    batch = {}
    for k, v in arrays.items():
        rows = v[safe_B]
        rows[~mask_B] = 0
        batch[k] = rows
    batch["index"] = idx_B.astype(np.int32)
    batch["mask"] = mask_B
    if weights_N is not None:
        batch["weight"] = np.where(mask_B, weights_N[safe_B], 0.0).astype(np.float32)
    return batch


def sequential_batches(
    arrays: dict[str, np.ndarray], batch_size: int, *, process_index: int = 0, process_count: int = 1
) -> Iterator[HostBatch]:
    """Every example exactly once, in id order, in padded batches (scoring and evaluation passes)."""
    n = len(next(iter(arrays.values())))
    rows = slice(process_index * batch_size // process_count, (process_index + 1) * batch_size // process_count)
    for start in range(0, n, batch_size):
        idx_B = np.arange(start, start + batch_size)
        idx_B = np.where(idx_B < n, idx_B, n)[rows]
        yield gather(arrays, idx_B, n)
