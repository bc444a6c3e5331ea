"""The training loop's input paths: the next ``g`` steps in the order of the run's ``EpochIterator``, and a scoring
pass's forward chunks over the training split in id order.

* ``HostInput``: batches built on the host and placed per call, ``g`` > 1 of them stacked and placed as one chunk
  (a scan), in the loop or built and placed ahead on a thread (``data.prefetch``).
* ``ResidentInput`` (``data.on_device``): the training arrays placed once on every device and the epoch's visiting
  order once per epoch; a call gathers its own rows, so nothing crosses to the device per step.

Both have the same methods. ``steps(state, tracker, step, g)`` runs global steps ``step .. step + g - 1`` and returns
``(epoch, position of the call's last batch, (state, tracker, metrics))``, each metric a scalar for ``g`` == 1, else
with a leading axis of ``g``. ``score(params, tracker, step, epoch)`` feeds every training example once to the
tracker at fixed params and returns ``(tracker, [loss_GxB per call])`` (padding rows included, id N; with spans each
call's ``(loss_GxB, span loss_GxBxSp)``).
``consumed()`` is the iterator state after the batches consumed so far (what a checkpoint stores), never the
read-ahead. ``call_length`` picks ``g`` so that no boundary (scoring pass, epoch end, checkpoint, stop) falls inside
a call; the steps and the numbers are those of one step per call.
"""

import functools
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from gdc import sharding
from gdc.data.pipeline import CallIterator, Prefetcher, sequential_chunks, sequential_id_chunks
from gdc.train.setup import Run, processes
from gdc.train.step import jit_chunk_train, jit_resident_score, jit_resident_train


def call_length(run: Run, stop: int, step: int) -> int:
    """``run.steps_per_call`` when no boundary (scoring pass, epoch end, checkpoint, ``stop``) falls after any but the
    last of that many steps from global ``step``, else 1."""
    per_call, spe, every = run.steps_per_call, run.steps_per_epoch, run.cfg.checkpoint.every_steps
    position = step % spe
    if per_call == 1 or position + per_call > spe or step + per_call > stop:
        return 1
    inside = range(1, per_call)
    if any(position + j in run.score_positions or (every and (step + j) % every == 0) for j in inside):
        return 1
    return per_call


def prefetch_depth(run: Run) -> int:
    """``data.prefetch``, or -1 (auto): 2 on an accelerator, 0 on CPU (where the thread competes with XLA)."""
    if run.cfg.tracker.spans == "top_k_drop":  # its span ids change once, after the warm-up: no batch built ahead
        return 0
    if run.cfg.data.prefetch >= 0:
        return run.cfg.data.prefetch
    return 0 if run.mesh.devices.flat[0].platform == "cpu" else 2


def jit_host_chunk(run: Run) -> Callable:
    """The run's step over a placed chunk of G host batches (a scan): ``(state, tracker, chunk) -> ...``."""
    e = run.engine
    return jit_chunk_train(
        e.train,
        state_sharding=e.state_sharding,
        tracker_sharding=e.tracker_sharding,
        chunk_sharding=sharding.chunk_sharding(run.mesh),
    )


def resident_table(run: Run) -> dict[str, jax.Array]:
    """The training arrays (and ``weight`` [N] when reweighted) placed on every device, for ``jit_resident``."""
    table = dict(run.train_arrays)
    if run.interventions["weights_N"] is not None:
        table["weight"] = np.asarray(run.interventions["weights_N"], np.float32)
    return sharding.put_tree(table, run.engine.state_sharding)


def jit_resident(run: Run, steps_per_call: int = 1) -> Callable:
    """The run's step fed from ``resident_table``: ``(state, tracker, table, order) -> ...``, ``steps_per_call`` steps
    per call (a scan when > 1) from the epoch's placed ``order`` (``EpochIterator.epoch_order``)."""
    e = run.engine
    return jit_resident_train(
        e.train,
        steps_per_epoch=run.steps_per_epoch,
        batch_size=run.cfg.train.batch_size,
        num_examples=run.num_train,
        state_sharding=e.state_sharding,
        tracker_sharding=e.tracker_sharding,
        batch_sharding=sharding.batch_sharding(run.mesh),
        steps_per_call=steps_per_call,
    )


def jit_resident_scorer(run: Run) -> Callable:
    """A scoring chunk fed from ``resident_table``: ``(params, tracker, table, ids_GxB, step, epoch)``."""
    e = run.engine
    return jit_resident_score(
        loss_fn=e.loss_fn,
        tracker_cfg=run.cfg.tracker,
        num_examples=run.num_train,
        state_sharding=e.state_sharding,
        tracker_sharding=e.tracker_sharding,
        local_tracker=e.local,
    )


def score_id_chunks(run: Run, chunk_size: int) -> list[jax.Array]:
    """Each scoring chunk's ``ids_GxB`` (``sequential_id_chunks``), placed on every device."""
    ids = sequential_id_chunks(run.num_train, run.cfg.train.batch_size, chunk_size, run.cfg.data.shards)
    return [sharding.put_tree(ids_GxB, run.engine.state_sharding) for ids_GxB in ids]


class HostInput:
    """Host batches in the order of ``run.it`` from global ``step``, grouped into calls by ``call_length``."""

    def __init__(self, run: Run, step: int, stop: int, score_chunk: int):
        self.run, self.score_chunk = run, score_chunk
        self.chunk_fn = jit_host_chunk(run) if run.steps_per_call > 1 else None  # only one-step calls otherwise
        self.calls = CallIterator(run.it, functools.partial(call_length, run, stop), step)
        depth = prefetch_depth(run)
        self.feed = Prefetcher(self.calls, self.place, depth) if depth else None

    def place(self, item: tuple[int, Any]) -> tuple[int, Any]:
        g, batch = item
        return g, sharding.put_batch(batch, self.run.mesh) if g == 1 else sharding.put_chunk(batch, self.run.mesh)

    def consumed(self) -> dict[str, int]:
        return self.feed.state() if self.feed else self.run.it.state()

    def steps(self, state, tracker, step: int, g: int):
        epoch, position, item = next(self.feed) if self.feed else next(self.calls)
        size, batch = item if self.feed else self.place(item)
        if size != g:
            raise RuntimeError(f"step {step}: the input path built a call of {size} batches, the loop runs {g}.")
        return epoch, position, (self.run.engine.train if g == 1 else self.chunk_fn)(state, tracker, batch)

    def score(self, params, tracker, step: jax.Array, epoch: jax.Array):
        run, loss_parts = self.run, []
        kw = {**processes(), "shards": run.cfg.data.shards, "num_examples": run.num_train}
        for chunk in sequential_chunks(run.train_arrays, run.cfg.train.batch_size, self.score_chunk, **kw):
            # G batches per call: one dispatch, not G.
            tracker, loss_GxB = run.engine.score_chunk(
                params, tracker, sharding.put_chunk(chunk, run.mesh), step, epoch
            )
            loss_parts.append(loss_GxB)
        return tracker, loss_parts

    def close(self) -> None:
        if self.feed:
            self.feed.close()


class ResidentInput:
    """Steps and scoring passes that gather their rows on the device from ``resident_table``."""

    def __init__(self, run: Run, score_chunk: int):
        self.run = run
        self.table = resident_table(run)
        # One step per call, and ``steps_per_call`` steps per call (a scan) wherever no boundary falls inside them.
        self.fns = {1: jit_resident(run)}
        if run.steps_per_call > 1:
            self.fns[run.steps_per_call] = jit_resident(run, steps_per_call=run.steps_per_call)
        self.score_fn = jit_resident_scorer(run)
        self.score_ids = score_id_chunks(run, score_chunk)  # placed once per run
        self.order_epoch, self.order = -1, None  # the placed visiting order of epoch order_epoch

    def consumed(self) -> dict[str, int]:
        return self.run.it.state()

    def steps(self, state, tracker, step: int, g: int):
        it, spe = self.run.it, self.run.steps_per_epoch
        epoch, position = it.advance()
        if step != epoch * spe + position:  # the resident step finds its batch at state.step % spe
            raise RuntimeError(f"step {step} is not batch {position} of epoch {epoch} ({spe} per epoch).")
        for _ in range(g - 1):
            epoch, position = it.advance()
        if epoch != self.order_epoch:  # one transfer per epoch
            self.order_epoch, self.order = (
                epoch,
                sharding.put_tree(it.epoch_order(epoch), self.run.engine.state_sharding),
            )
        return epoch, position, self.fns[g](state, tracker, self.table, self.order)

    def score(self, params, tracker, step: jax.Array, epoch: jax.Array):
        loss_parts = []
        for ids_GxB in self.score_ids:  # rows gathered on device: nothing crosses but the losses
            tracker, loss_GxB = self.score_fn(params, tracker, self.table, ids_GxB, step, epoch)
            loss_parts.append(loss_GxB)
        return tracker, loss_parts

    def close(self) -> None:
        pass


def open_input(run: Run, step: int, stop: int, score_chunk: int) -> HostInput | ResidentInput:
    """The run's input path (``run.on_device``) from global ``step`` (where ``run.it`` stands) to ``stop``; scoring
    passes run ``score_chunk`` batches per call."""
    return ResidentInput(run, score_chunk) if run.on_device else HostInput(run, step, stop, score_chunk)
