"""``Prefetcher``: reads the training batches ahead on a background thread, so that building and placing batch t+1
overlaps step t.

Invariant: it yields exactly the items of the iterator it wraps, in the same order, with ``place`` applied; its
``state()`` is the state after the items CONSUMED so far, so checkpoints and resumption do not see the read-ahead.
"""

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any


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
