"""Epoch iterator: seeded per-epoch order, fixed-size padded batches, resumable from a two-number state.

Invariants:
  * Epoch e visits the kept ids (each repeated ``multiplicity_N[i]`` times) in the order
    ``np.random.default_rng([seed, e]).permutation``; the order is a pure function of (seed, e), so the iterator's
    whole state is ``{"epoch", "position"}`` (batches already consumed in the epoch).
  * Every batch has exactly ``batch_size`` rows, so the jitted step never recompiles. Padding rows carry
    ``index = N`` (out of range for every tracker write), ``mask = False`` and zero inputs.
  * With several processes, each builds only its own contiguous slice of the global batch.
  * ``Prefetcher`` builds and places the next batches on a background thread while the current step runs; its
    ``state()`` is the state after the batches CONSUMED so far, so checkpoints and resumption do not see the read-ahead.
"""

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

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

    def epoch_ids(self, epoch: int) -> np.ndarray:
        """int32 ``[steps_per_epoch * batch_size]``: the ids of every global batch of ``epoch``, padded with N."""
        ids = np.full(self.steps_per_epoch * self.batch_size, self.num_examples, np.int32)
        order = self.order(epoch)
        ids[: len(order)] = order
        return ids

    def advance(self) -> tuple[int, int]:
        """Moves past the next batch without building it (the batch is gathered on device); its (epoch, position)."""
        if self.position >= self.steps_per_epoch:
            self.epoch, self.position = self.epoch + 1, 0
        self.position += 1
        return self.epoch, self.position - 1

    def __iter__(self) -> Iterator[tuple[int, int, HostBatch]]:
        return self

    def __next__(self) -> tuple[int, int, HostBatch]:
        epoch, position = self.advance()
        return epoch, position, self.batch(epoch, position)


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


class Prefetcher:
    """Reads ``depth`` items ahead of the consumer on a daemon thread: ``(epoch, position, place(batch))``.

    Wraps an iterator of ``(epoch, position, host_batch)`` (an ``EpochIterator`` positioned where training resumes)
    and yields the same items in the same order, with ``place`` (e.g. ``sharding.put_batch``) already applied, so
    that building and transferring batch t+1 overlaps step t. ``state()`` is ``{"epoch", "position"}`` after the
    items consumed so far, as ``EpochIterator.state()`` would be without read-ahead. An exception in the worker is
    raised by the ``next`` call that reaches it; ``close()`` (or leaving the ``with`` block) stops and joins the
    worker, and the thread is a daemon, so nothing hangs at interpreter exit.
    """

    _DONE = object()

    def __init__(self, it: Iterator[tuple[int, int, Any]], place: Callable[[Any], Any], depth: int = 2):
        if depth < 1:
            raise ValueError(f"Prefetcher depth={depth}: must be >= 1 (use the plain iterator for no read-ahead).")
        state = getattr(it, "state", None)
        self._state = dict(state()) if state else {"epoch": 0, "position": 0}
        self._it, self._place = it, place
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._finished = False
        self._thread = threading.Thread(target=self._work, name="gdc-prefetch", daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _work(self) -> None:
        try:
            while not self._stop.is_set():
                item = next(self._it, self._DONE)
                if item is self._DONE or not self._put((item[0], item[1], self._place(item[2]))):
                    break
            self._put(self._DONE)
        except BaseException as e:  # handed to the consumer, raised there
            self._put(e)

    def state(self) -> dict[str, int]:
        return dict(self._state)

    def __iter__(self) -> "Prefetcher":
        return self

    def __next__(self) -> tuple[int, int, Any]:
        if self._finished:
            raise StopIteration
        if self._stop.is_set():
            raise RuntimeError("Prefetcher is closed.")
        item = self._queue.get()
        if item is self._DONE:
            self._finished = True
            self.close()
            raise StopIteration
        if isinstance(item, BaseException):
            self._finished = True
            self.close()
            raise item
        epoch, position, _ = item
        self._state = {"epoch": epoch, "position": position + 1}
        return item

    def close(self) -> None:
        """Stops the worker and drops the read-ahead; idempotent."""
        self._stop.set()
        self._drain()  # frees a worker blocked on a full queue
        self._thread.join()
        self._drain()

    def _drain(self) -> None:
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                return

    def __enter__(self) -> "Prefetcher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
