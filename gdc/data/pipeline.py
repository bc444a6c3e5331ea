"""Epoch iterator: seeded per-epoch order, fixed-size padded batches, resumable from a two-number state.

Invariants:
  * Epoch e visits the kept ids (each repeated ``multiplicity_N[i]`` times) in the order
    ``np.random.default_rng([seed, e]).permutation``; the order is a pure function of (seed, e), so the iterator's
    whole state is ``{"epoch", "position"}`` (batches already consumed in the epoch).
  * Every batch has exactly ``batch_size`` rows, so the jitted step never recompiles. Padding rows carry
    ``index = N`` (out of range for every tracker write), ``mask = False`` and zero inputs.
  * With several processes, each builds only its own contiguous slice of the global batch.
  * ``shards`` S > 1 (``data.shards``) splits the ids into S contiguous ranges (``shard_bounds``) and
    every global batch into S equal parts, part s drawn from range s, each range shuffled on its own by
    ``default_rng([seed, e, s])``. Process p of P (S a multiple of P) then reads only the ids of its S / P ranges, so
    it needs only those rows (``row_range``); the stream is the same for any P, so 1 process and P processes train
    identically. S = 1 is the single global shuffle above.

``Prefetcher`` (reading batches ahead on a background thread) is in ``gdc.data.prefetch``, importable from here.
"""

from collections.abc import Callable, Iterator

import numpy as np

from gdc.data.prefetch import Prefetcher as Prefetcher  # re-exported
from gdc.errors import ConfigError
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
        shards: int = 1,
        num_examples: int | None = None,
    ):
        """``arrays`` hold every row, or with ``num_examples`` (N) given, only rows ``row_range(N, shards, ...)``."""
        self.num_examples = len(next(iter(arrays.values()))) if num_examples is None else num_examples
        check_shards(shards, batch_size, process_count)
        self.arrays = arrays
        self.batch_size = batch_size
        self.seed = seed
        self.shards = shards
        ids = np.arange(self.num_examples) if keep_idx is None else np.asarray(keep_idx, np.int64)
        self.max_occurrences = 1  # the most copies of an id in an epoch
        if multiplicity_N is not None:
            copies = np.asarray(multiplicity_N)[ids]
            ids = np.repeat(ids, copies)
            self.max_occurrences = int(copies.max(initial=1))
        self.ids = ids
        self.weights_N = None if weights_N is None else np.asarray(weights_N, np.float32)
        self.epoch = epoch
        self.position = position
        self.local_rows = slice(
            process_index * batch_size // process_count, (process_index + 1) * batch_size // process_count
        )
        self.row_offset = row_range(self.num_examples, shards, process_index, process_count).start
        bounds = shard_bounds(self.num_examples, shards)
        # The kept ids of each range; this process orders only its own.
        self._shard_ids = [ids[(ids >= lo) & (ids < hi)] for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
        per_process = shards // process_count
        self._own = range(process_index * per_process, (process_index + 1) * per_process)
        # Up-sampled ids repeat within an epoch: their batches then carry each row's occurrence number.
        self.repeats = multiplicity_N is not None
        self._order_epoch, self._orders, self._occurrences = -1, [], []

    @property
    def steps_per_epoch(self) -> int:
        part = self.batch_size // self.shards
        return max(-(-len(ids) // part) for ids in self._shard_ids)

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def _epoch_orders(self, epoch: int) -> list[np.ndarray]:
        """The visiting order of each of this process's shards in ``epoch`` (one with ``shards`` == 1)."""
        if self._order_epoch != epoch:
            if self.shards == 1:
                orders = [self.ids[np.random.default_rng([self.seed, epoch]).permutation(len(self.ids))]]
            else:
                rngs = {s: np.random.default_rng([self.seed, epoch, s]) for s in self._own}
                orders = [self._shard_ids[s][rngs[s].permutation(len(self._shard_ids[s]))] for s in self._own]
            self._order_epoch, self._orders = epoch, orders
            self._occurrences = [occurrences(o) for o in orders] if self.repeats else []
        return self._orders

    def order(self, epoch: int) -> np.ndarray:
        """The ids of ``epoch`` in visiting order (one shard)."""
        return self._epoch_orders(epoch)[0]

    def batch(self, epoch: int, position: int) -> HostBatch:
        """The (local rows of the) ``position``-th batch of ``epoch``; with up-sampling it also holds ``occurrence``,
        each row's occurrence number in the epoch (0 for an id's first copy; the tracker's record slot)."""
        return {k: v[0] for k, v in self.chunk(epoch, position, 1).items()}

    def chunk(self, epoch: int, position: int, g: int) -> HostBatch:
        """Batches ``position .. position + g - 1`` of ``epoch`` stacked on a leading axis (``[g, B_local, ...]``),
        built by one gather of their rows."""
        positions = range(position, position + g)
        flat = gather(
            self.arrays,
            np.concatenate([self.batch_ids(epoch, t) for t in positions]),
            self.num_examples,
            self.weights_N,
            self.row_offset,
        )
        if self.repeats:
            flat["occurrence"] = np.concatenate([self._batch_column(self._occurrences, t, 0) for t in positions])
        return {k: v.reshape((g, -1) + v.shape[1:]) for k, v in flat.items()}

    def take(self, g: int) -> tuple[int, int, HostBatch]:
        """The next ``g`` batches as one chunk: ``(epoch, position of the last, chunk)``; they must lie in one epoch."""
        first = 0 if self.position >= self.steps_per_epoch else self.position
        if first + g > self.steps_per_epoch:
            raise ValueError(
                f"take({g}) at batch {first} would cross the end of an epoch of {self.steps_per_epoch} batches."
            )
        epoch, _ = self.advance()
        self.position += g - 1
        return epoch, first + g - 1, self.chunk(epoch, first, g)

    def batch_ids(self, epoch: int, position: int) -> np.ndarray:
        """int32 ids of this process's rows of the ``position``-th batch of ``epoch`` (padding: N)."""
        return self._batch_column(self._epoch_orders(epoch), position, self.num_examples)

    def _batch_column(self, columns: list[np.ndarray], position: int, pad: int) -> np.ndarray:
        """This process's rows of batch ``position``, from per-shard columns in visiting order, padded with ``pad``."""
        if self.shards == 1:
            chunk = columns[0][position * self.batch_size : (position + 1) * self.batch_size]
            out_B = np.full(self.batch_size, pad, np.int32)
            out_B[: len(chunk)] = chunk
            return out_B[self.local_rows]
        part = self.batch_size // self.shards
        parts = []
        for column in columns:
            chunk = column[position * part : (position + 1) * part]
            parts.append(np.concatenate([chunk, np.full(part - len(chunk), pad)]).astype(np.int32))
        return np.concatenate(parts)

    def epoch_order(self, epoch: int) -> dict[str, np.ndarray]:
        """The visiting order of every global batch of ``epoch``, for a device-resident set: ``index``, int32
        ``[steps_per_epoch * batch_size]`` padded with N, and with up-sampling ``occurrence`` (padded with 0).

        With ``shards`` > 1 it is only defined for a process that holds every range (the loop refuses on_device with
        several processes)."""
        spe = self.steps_per_epoch
        orders = self._epoch_orders(epoch)
        if self.shards > 1:
            columns = {"index": (orders, self.num_examples), "occurrence": (self._occurrences, 0)}
            out = {
                k: np.concatenate([self._batch_column(cols, t, pad) for t in range(spe)])
                for k, (cols, pad) in columns.items()
                if cols
            }
        else:  # every process's rows of every global batch
            out = {"index": np.full(spe * self.batch_size, self.num_examples, np.int32)}
            out["index"][: len(orders[0])] = orders[0]
            if self.repeats:
                out["occurrence"] = np.zeros(spe * self.batch_size, np.int32)
                out["occurrence"][: len(orders[0])] = self._occurrences[0]
        return out

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


def occurrences(ids: np.ndarray) -> np.ndarray:
    """int32: for each position, how many times its id occurred before it in ``ids`` (0, 1, ... per id)."""
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]]) if len(ids) else np.zeros(0, np.int64)
    group_start = np.repeat(starts, np.diff(np.r_[starts, len(ids)]))
    out = np.empty(len(ids), np.int32)
    out[order] = np.arange(len(ids)) - group_start
    return out


def check_shards(shards: int, batch_size: int, process_count: int) -> None:
    """1 (every process keeps every row), or a divisor of the batch size that the process count divides."""
    if shards < 1 or batch_size % shards or (shards > 1 and shards % process_count):
        raise ConfigError(
            f"data.shards={shards}: need 1, or a divisor of train.batch_size={batch_size} that is a multiple of the "
            f"{process_count} process(es) (e.g. data.shards={process_count})."
        )


def shard_bounds(num_examples: int, shards: int) -> np.ndarray:
    """``[S + 1]`` boundaries of the S contiguous id ranges: ceil(N / S) ids each, the last ones shorter.

    These are the row blocks of a tracker of capacity ``ceil(N / S) * S`` split over ``data`` when S is a multiple of
    the device count (``tracker_multiple``), so each device's part of a batch only touches the rows it holds.
    """
    return np.minimum(np.arange(shards + 1) * -(-num_examples // shards), num_examples)


def tracker_multiple(shards: int, device_count: int) -> int:
    """The tracker's capacity multiple: S when S > 1 is a multiple of the device count (rows aligned with the data
    ranges), else the device count."""
    return shards if shards > 1 and shards % device_count == 0 else device_count


def row_range(num_examples: int, shards: int, process_index: int = 0, process_count: int = 1) -> range:
    """The ids whose rows a process needs: all of them with one shard, else its S / P contiguous ranges."""
    if shards == 1:
        return range(num_examples)
    bounds, per_process = shard_bounds(num_examples, shards), shards // process_count
    return range(int(bounds[process_index * per_process]), int(bounds[(process_index + 1) * per_process]))


def gather(
    arrays: dict[str, np.ndarray],
    idx_B: np.ndarray,
    num_examples: int,
    weights_N: np.ndarray | None = None,
    row_offset: int = 0,
) -> HostBatch:
    """Rows ``idx_B`` of ``arrays`` plus ``index``/``mask`` (and ``weight``); ids >= N become zero padding rows.

    ``row_offset``: ``arrays`` hold the rows of ids ``row_offset, row_offset + 1, ...`` (a process's shards).
    """
    mask_B = idx_B < num_examples
    safe_B = np.where(mask_B, idx_B, row_offset)
    batch = {}
    for k, v in arrays.items():
        rows = v[safe_B - row_offset]
        rows[~mask_B] = 0
        batch[k] = rows
    batch["index"] = idx_B.astype(np.int32)
    batch["mask"] = mask_B
    if weights_N is not None:
        batch["weight"] = np.where(mask_B, weights_N[safe_B], 0.0).astype(np.float32)
    return batch


def sequential_ids(num_examples: int, batch_size: int, shards: int = 1) -> Iterator[np.ndarray]:
    """Global ``idx_B`` of a pass over every example once: id order, or with S shards, part s of each batch walks
    range s in id order (padding id N)."""
    bounds, part = shard_bounds(num_examples, shards), batch_size // shards
    steps = max(-(-int(hi - lo) // part) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True))
    for t in range(steps):
        parts = [np.arange(lo + t * part, lo + (t + 1) * part) for lo in bounds[:-1]]
        yield np.concatenate([np.where(p < hi, p, num_examples) for p, hi in zip(parts, bounds[1:], strict=True)])


def sequential_batches(
    arrays: dict[str, np.ndarray],
    batch_size: int,
    *,
    process_index: int = 0,
    process_count: int = 1,
    shards: int = 1,
    num_examples: int | None = None,
) -> Iterator[HostBatch]:
    """Every example exactly once (``sequential_ids`` order) in padded batches (scoring and evaluation passes).

    ``arrays`` and ``num_examples`` as in ``EpochIterator``."""
    kw = {"process_index": process_index, "process_count": process_count, "shards": shards}
    for chunk in sequential_chunks(arrays, batch_size, 1, num_examples=num_examples, **kw):
        yield {k: v[0] for k, v in chunk.items()}


def sequential_id_chunks(num_examples: int, batch_size: int, chunk: int, shards: int = 1) -> np.ndarray:
    """int32 ``[C, chunk, B]``: the ``sequential_ids`` batches stacked ``chunk`` at a time, the last chunk filled up
    with padding batches (id N) so that every chunk has the same shape."""
    ids = list(sequential_ids(num_examples, batch_size, shards))
    ids += [np.full(batch_size, num_examples)] * (-len(ids) % chunk)
    return np.stack(ids).astype(np.int32).reshape(-1, chunk, batch_size)


def sequential_chunks(
    arrays: dict[str, np.ndarray],
    batch_size: int,
    chunk: int,
    *,
    process_index: int = 0,
    process_count: int = 1,
    shards: int = 1,
    num_examples: int | None = None,
) -> Iterator[HostBatch]:
    """The batches of ``sequential_batches`` stacked ``chunk`` at a time (``[G, B_local, ...]``, one gather per
    chunk); the last chunk is filled up with padding batches so that every chunk has the same shape."""
    n = len(next(iter(arrays.values()))) if num_examples is None else num_examples
    check_shards(shards, batch_size, process_count)
    rows = slice(process_index * batch_size // process_count, (process_index + 1) * batch_size // process_count)
    offset = row_range(n, shards, process_index, process_count).start
    for idx_GxB in sequential_id_chunks(n, batch_size, chunk, shards)[:, :, rows]:
        flat = gather(arrays, idx_GxB.reshape(-1), n, row_offset=offset)
        yield {k: v.reshape(idx_GxB.shape + v.shape[1:]) for k, v in flat.items()}


class CallIterator:
    """An ``EpochIterator``'s batches grouped into calls: ``(epoch, position of the last batch, (g, batch))``, where
    ``g = call_length(step)`` for the call's first global step, and ``batch`` is one batch (g == 1) or ``g`` batches
    stacked (``EpochIterator.take``). ``state()`` is the wrapped iterator's, so a ``Prefetcher`` can read it ahead."""

    def __init__(self, it: EpochIterator, call_length: Callable[[int], int], step: int):
        self.it, self.call_length, self.step = it, call_length, step

    def state(self) -> dict[str, int]:
        return self.it.state()

    def __iter__(self) -> "CallIterator":
        return self

    def __next__(self) -> tuple[int, int, tuple[int, HostBatch]]:
        g = self.call_length(self.step)
        epoch, position, batch = next(self.it) if g == 1 else self.it.take(g)
        self.step += g
        return epoch, position, (g, batch)
