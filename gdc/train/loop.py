"""The training loop: resume a run or start it, then train it call by call with its tracker artefacts, held-out
evaluation, checkpoints and logs.

``train(cfg, workdir)`` resumes automatically from the latest checkpoint in ``workdir`` and reproduces the
uninterrupted run (data order, randomness and the tracker are all functions of (seed, step, example id), and the
iterator state is saved with the checkpoint). What it trains is built by ``gdc.train.setup.build``; the batches come
from an input path of ``gdc.train.inputs``; ``_EpochLoop`` runs the calls and what falls between them.

Workdir layout: ``config.json``, ``dataset.json`` (split sizes, canaries), ``metrics.jsonl``, ``tb/``,
``checkpoints/``, ``trackers/epoch_XXXX.npz`` (tracker fields and that epoch's ``loss_N``),
``trackers/span_epoch_XXXX.npz`` (with ``tracker.spans``: the span tracker's fields and ``loss_NxSp``),
``trackers/epoch_XXXX_pass_at_PPPPP.npy`` (``[N]`` losses of a fixed-parameter scoring pass run after PPPPP batches of
the epoch, when ``tracker.scoring_passes`` > 0; with spans also ``span_epoch_XXXX_pass_at_PPPPP.npy``, ``[N, Sp]``),
``summary.json``.
"""

import contextlib
import dataclasses
import functools
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gdc import checkpoint, jsonio, lock, logs, sharding
from gdc import config as parse
from gdc import tracker as tracker_lib
from gdc.checkpoint import Checkpointer
from gdc.data import sources
from gdc.data.pipeline import sequential_batches, sequential_ids
from gdc.train import config as config_lib
from gdc.train import fingerprint, inputs, span_select
from gdc.train import setup as setup_lib
from gdc.train import state as state_lib
from gdc.train.setup import (
    HOST_CHUNK_AUTO_BYTES,
    MODEL_INPUTS,
    ON_DEVICE_AUTO_BYTES,
    STEPS_PER_CALL_AUTO,
    aligned_tracker,
    build_model,
    load_interventions,
    resolve_on_device,
    resolve_steps_per_call,
    restore_params,
)

__all__ = [  # the setup names are re-exported: callers use them as loop.<name>
    "HOST_CHUNK_AUTO_BYTES",
    "MODEL_INPUTS",
    "ON_DEVICE_AUTO_BYTES",
    "SCORE_CHUNK",
    "STEPS_PER_CALL_AUTO",
    "TrainResult",
    "aligned_tracker",
    "build_model",
    "load_interventions",
    "resolve_on_device",
    "resolve_steps_per_call",
    "restore_params",
    "train",
]

SCORE_CHUNK = 16  # batches per call in a scoring pass
# (graphdef, params, dataset, mesh) -> scalars logged after every epoch; it must not change the params.
EpochMetrics = Callable[[Any, Any, sources.Dataset, jax.sharding.Mesh], dict[str, float]]


@dataclasses.dataclass
class TrainResult:
    state: state_lib.TrainState
    tracker: tracker_lib.ExampleTracker
    last_metrics: dict[str, float]
    epochs_done: int
    span_tracker: tracker_lib.ExampleTracker | None = None  # N x Sp rows with tracker.spans (update_spans)
    pass_seconds: float = 0.0  # wall time of this invocation's scoring passes (tracker.scoring_passes)


def _holding_workdir(fn: Callable) -> Callable:
    """Runs ``fn(cfg, workdir, ...)`` holding ``workdir``'s lock (gdc.lock; process 0 holds it for all)."""

    @functools.wraps(fn)
    def wrapper(cfg: config_lib.RunConfig, workdir: str, **kwargs):
        parse.check_workdir(workdir)
        with lock.hold(workdir, enabled=jax.process_index() == 0):
            return fn(cfg, workdir, **kwargs)

    return wrapper


@_holding_workdir
def train(
    cfg: config_lib.RunConfig,
    workdir: str,
    *,
    mesh: jax.sharding.Mesh | None = None,
    max_steps: int | None = None,
    epoch_metrics: EpochMetrics | None = None,
) -> TrainResult:
    """Trains (or resumes) the run described by ``cfg`` in ``workdir``.

    Args:
      cfg: the validated run config.
      workdir: output directory (created if missing).
      mesh: a ``("data",)`` mesh; defaults to every device.
      max_steps: stop after this global step (as if interrupted); the run resumes from there when called again.
      epoch_metrics: ``(graphdef, params, dataset, mesh) -> scalars`` logged with the held-out loss after every
        epoch (e.g. the study's greedy canary extraction); it must not change the params.
    """
    # Checks that must fail before anything is loaded or compiled.
    mesh = mesh or sharding.make_mesh()
    setup_lib.check(cfg, mesh)
    parse.check_workdir(workdir)
    fingerprint.check(cfg, workdir)  # a rerun with other result-changing fields is refused here
    is_writer = jax.process_index() == 0  # with several processes, only process 0 writes shared files
    if is_writer:
        config_lib.save(cfg, workdir)  # the config of the latest (matching) invocation
    # The epoch_metrics hook keeps the whole training split (it may decode canaries from their training rows).
    run = setup_lib.build(cfg, sources.build_dataset(cfg.data), mesh, keep_split=bool(epoch_metrics))
    os.makedirs(os.path.join(workdir, "trackers"), exist_ok=True)

    with Checkpointer(workdir, cfg.checkpoint) as ckpt, jax.set_mesh(mesh):
        start, state, tracker = _resume(run, ckpt, workdir)
        if run.num_spans and cfg.tracker.spans == "top_k_drop":
            span_select.restore(run, workdir, start or 0)
        step = start or 0
        stop = run.total_steps if max_steps is None else min(max_steps, run.total_steps)
        # Scoring passes run SCORE_CHUNK batches per call (fewer when an epoch has fewer).
        seq_idx = np.concatenate(list(sequential_ids(run.num_train, cfg.train.batch_size, cfg.data.shards)))
        chunk = min(SCORE_CHUNK, len(seq_idx) // cfg.train.batch_size)
        log_kw = {"total_steps": run.total_steps, "start_step": step, "batch_size": cfg.train.batch_size}
        with (
            contextlib.closing(inputs.open_input(run, step, stop, chunk)) as feed,
            contextlib.closing(logs.RunLogger(workdir, cfg.log, **log_kw)) as logger,
        ):
            epochs = _EpochLoop(run, workdir, ckpt, feed, logger, seq_idx, epoch_metrics)
            state, tracker, step = epochs.train(state, tracker, step, stop)
            tracker = run.engine.fold(tracker)  # a run stopped inside an epoch returns its tracker folded
        ckpt.wait()

    last = epochs.last
    summary_path = os.path.join(workdir, "summary.json")
    if step == start and os.path.exists(summary_path):  # a rerun of a finished run: nothing trained, keep its metrics
        last = {k: v for k, v in jsonio.read(summary_path).items() if k not in ("step", "epochs", "num_train")}
    elif is_writer and step == run.total_steps:
        summary = {"step": step, "epochs": step / run.steps_per_epoch, "num_train": run.num_train, **last}
        jsonio.write(summary_path, summary, indent=2)
    done = feed.consumed()
    epochs_done = done["epoch"] + (done["position"] == run.steps_per_epoch)
    tracker, span_tracker = setup_lib.split_trackers(tracker)
    return TrainResult(
        state=state,
        tracker=tracker,
        last_metrics=last,
        epochs_done=epochs_done,
        span_tracker=span_tracker,
        pass_seconds=epochs.pass_seconds,
    )


def _resume(run: setup_lib.Run, ckpt: Checkpointer, workdir: str):
    """(step of the checkpoint or None, state, tracker): the latest usable checkpoint's, with ``run.it`` moved to its
    data position, or the run's initial ones (and the fresh run's ``config.json`` and ``dataset.json``)."""
    restored = ckpt.restore_latest(run.state, run.tracker)  # unusable checkpoints are set aside, with a warning
    if restored is not None:
        step, state, tracker, data_state, _ = restored
        run.it.epoch, run.it.position = data_state["epoch"], data_state["position"]
        return step, state, tracker
    if jax.process_index() == 0:
        config_lib.save(run.cfg, workdir)
        sizes = {"steps_per_epoch": run.steps_per_epoch, "total_steps": run.total_steps}
        jsonio.write(os.path.join(workdir, "dataset.json"), {**run.dataset.meta, **sizes}, indent=2)
    return None, run.state, run.tracker


class _EpochLoop:
    """Runs the calls from a step to a stop and what falls between them: each call's metrics, fetched one call late
    (by then the next call is queued on the device), checked finite and logged; scoring passes; each epoch's end
    (tracker artefact, held-out loss, ``epoch_metrics``); checkpoints. ``last``: the latest step's metrics."""

    def __init__(
        self,
        run: setup_lib.Run,
        workdir: str,
        ckpt: Checkpointer,
        feed: inputs.HostInput | inputs.ResidentInput,
        logger: logs.RunLogger,
        seq_idx: np.ndarray,
        epoch_metrics: EpochMetrics | None,
    ):
        self.run, self.workdir, self.ckpt, self.feed, self.logger = run, workdir, ckpt, feed, logger
        self.seq_idx = seq_idx  # a scoring pass's global ids in the order of its losses (padding: N)
        self.epoch_metrics = epoch_metrics
        self.is_writer = jax.process_index() == 0
        self.pending: list[tuple[int, int, Any]] = []  # (first step, steps, metrics: scalars, or [steps] per metric)
        self.last: dict[str, float] = {}
        self.pass_seconds = 0.0

    def train(self, state, tracker, step: int, stop: int):
        """Runs global steps ``step .. stop - 1``; returns (state, tracker, stop) with every metric flushed."""
        cfg, spe = self.run.cfg, self.run.steps_per_epoch
        while step < stop:
            g = inputs.call_length(self.run, stop, step)
            epoch, position, (state, tracker, metrics) = self.feed.steps(state, tracker, step, g)
            step += g
            self.flush()
            self.pending.append((step - g + 1, g, metrics))
            self.logger.advance(g)
            if position + 1 in self.run.score_positions:
                tracker = self.scoring_pass(state.params, tracker, step, epoch, position + 1)
            epoch_end = position + 1 == spe
            if epoch_end:
                self.flush()
                tracker = self.end_epoch(state.params, tracker, step, epoch)
            every = cfg.checkpoint.every_steps
            save_epoch = epoch_end and (epoch + 1) % cfg.checkpoint.every_epochs == 0
            if save_epoch or (every and step % every == 0) or step == stop:
                self.flush()
                self.save(state, tracker, step, epoch)
        self.flush()
        return state, tracker, step

    def flush(self) -> None:
        """Fetches the pending metrics, checks them finite and logs every ``log.every_steps``-th step and the last."""
        for first, g, m in self.pending:
            m = jax.device_get(m)
            for j in range(g):
                s = first + j
                self.last = {k: float(v if g == 1 else v[j]) for k, v in m.items()}
                if not np.isfinite(self.last.get("loss", 0.0)) and self.ckpt.latest_step() == s - 1:
                    # Step s's loss comes from the parameters after step s - 1: a rerun from that checkpoint would
                    # meet it again, so the one before it becomes the latest.
                    self.ckpt.set_aside([(s - 1, f"its parameters give a non-finite loss at step {s}")], "stopping")
                logs.check_finite(s, self.last, self.ckpt.latest_step)
                if s % self.run.cfg.log.every_steps == 0 or s == self.run.total_steps:
                    self.logger.write(s, self.last)
        self.pending.clear()

    def scoring_pass(self, params, tracker, step: int, epoch: int, position: int):
        """Feeds every training example's loss at ``params`` to the tracker; saves them as ``[N]`` (process 0)."""
        start = time.perf_counter()
        step_arr, epoch_arr = jnp.asarray(step, jnp.int32), jnp.asarray(epoch, jnp.int32)
        tracker, loss_parts = self.feed.score(params, tracker, step_arr, epoch_arr)
        tracker = self.run.engine.fold(tracker)
        # One device-to-host copy per call (16 batches), joined on the host rather than by an eager program across
        # every device; with several processes every process joins each gather.
        parts = [part if isinstance(part, tuple) else (part,) for part in loss_parts]  # spans: (loss, span loss)
        for j, prefix in enumerate(("", "span_")[: len(parts[0])]):
            loss_B = np.concatenate([sharding.to_host(p[j]).reshape(-1, *p[j].shape[2:]) for p in parts])
            if self.is_writer:  # [N] losses, or [N, Sp] span losses (NaN: no valid token)
                n, seq_idx = self.run.num_train, self.seq_idx
                ok = seq_idx < n
                loss_N = np.full((n, *loss_B.shape[1:]), np.nan, np.float32)
                loss_N[seq_idx[ok]] = loss_B[: len(seq_idx)][ok]
                name = f"{prefix}epoch_{epoch:04d}_pass_at_{position:05d}.npy"
                np.save(os.path.join(self.workdir, "trackers", name), loss_N)
        self.pass_seconds += time.perf_counter() - start  # the losses are on the host: the pass has finished
        return tracker

    def end_epoch(self, params, tracker, step: int, epoch: int):
        """Folds the tracker, saves its fields and the epoch's ``loss_N`` (process 0), logs the held-out loss and the
        ``epoch_metrics`` hook's scalars."""
        run = self.run
        tracker = run.engine.fold(tracker)
        example_tracker, span_tracker = setup_lib.split_trackers(tracker)
        fields = tracker_lib.to_numpy(example_tracker)
        span_fields = None if span_tracker is None else tracker_lib.to_numpy(span_tracker)
        if self.is_writer:
            np.savez(
                os.path.join(self.workdir, "trackers", f"epoch_{epoch:04d}.npz"),
                loss_N=tracker_lib.epoch_losses(fields, epoch),
                epoch=epoch,
                step=step,
                **fields,
            )
        if self.is_writer and span_fields is not None:  # the span tracker's rows as [N, Sp]
            shape = (run.num_train, run.num_spans)
            np.savez(
                os.path.join(self.workdir, "trackers", f"span_epoch_{epoch:04d}.npz"),
                loss_NxSp=tracker_lib.epoch_losses(span_fields, epoch).reshape(shape),
                epoch=epoch,
                step=step,
                **{f"{k[:-2]}_NxSp": v.reshape(shape) for k, v in span_fields.items()},
            )
        if run.num_spans and run.cfg.tracker.spans == "top_k_drop":  # the warm-up's token losses, then the spans
            span_select.at_epoch_end(run, self.feed, params, epoch, self.workdir, self.is_writer)
        extra = self.epoch_metrics(run.graphdef, params, run.dataset, run.mesh) if self.epoch_metrics else {}
        self.logger.write(step, {"epoch": epoch, **self.evaluate(params), **extra}, to_bar=False)
        return tracker

    def evaluate(self, params) -> dict[str, float]:
        """The held-out split's mean loss and accuracy at ``params``."""
        run = self.run
        sums = [
            run.engine.evaluate(params, sharding.put_batch(b, run.mesh))
            for b in sequential_batches(run.heldout_arrays, run.cfg.train.batch_size, **setup_lib.processes())
        ]
        # Summed on the host: one copy, and no small eager programs across every device (tests force 8 CPU devices,
        # where each one is a rendezvous of 8 threads).
        tot = jax.tree.map(lambda *x: sum(x), *jax.device_get(sums))
        count = max(int(tot["count"]), 1)
        return {"heldout_loss": tot["loss_sum"] / count, "heldout_accuracy": tot["accuracy_sum"] / count}

    def save(self, state, tracker, step: int, epoch: int) -> None:
        """Checkpoints state, tracker and the consumed data position after ``step``, if the state is finite."""
        if not checkpoint.finite(state):  # a checkpoint kept must be one a rerun can resume from
            raise FloatingPointError(
                f"the train state after step {step} holds NaN or Inf (the losses were finite so far); it was not "
                f"checkpointed. {logs.recovery(self.ckpt.latest_step())}"
            )
        meta = {"step": step, "epoch": epoch, "config": self.run.cfg.to_dict()}
        self.ckpt.save(step, state, tracker, self.feed.consumed(), meta)
