"""The training loop: data, mesh, jitted steps, tracker artefacts, checkpoints, logging.

Reads top to bottom in banner sections. ``train(cfg, workdir)`` resumes automatically from the latest checkpoint in
``workdir`` and reproduces the uninterrupted run (data order, randomness and the tracker are all functions of
(seed, step, example id), and the iterator state is saved with the checkpoint).

Workdir layout: ``config.json``, ``dataset.json`` (split sizes, canaries), ``metrics.jsonl``, ``tb/``,
``checkpoints/``, ``trackers/epoch_XXXX.npz`` (tracker fields and that epoch's ``loss_N``),
``trackers/epoch_XXXX_pass_at_PPPPP.npy`` (``[N]`` losses of a fixed-parameter scoring pass run after PPPPP batches of
the epoch, when ``tracker.scoring_passes`` > 0), ``summary.json``.
"""

import dataclasses
import functools
import json
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gdc import checkpoint, lock, logs, models, sharding
from gdc import config as parse
from gdc import tracker as tracker_lib
from gdc.checkpoint import Checkpointer
from gdc.data import sources
from gdc.data.pipeline import (
    CallIterator,
    EpochIterator,
    Prefetcher,
    check_shards,
    row_range,
    sequential_batches,
    sequential_chunks,
    sequential_id_chunks,
    sequential_ids,
    tracker_multiple,
)
from gdc.errors import ConfigError
from gdc.train import config as config_lib
from gdc.train import fingerprint
from gdc.train import state as state_lib
from gdc.train.step import jit_chunk_train, jit_resident_score, jit_resident_train, jit_score_chunk, jit_steps

MODEL_INPUTS = ("tokens", "token_mask", "x", "y")
SCORE_CHUNK = 16  # batches per call in a scoring pass
ON_DEVICE_AUTO_BYTES = 1 << 29  # data.on_device=-1 keeps training arrays up to 512 MiB on the device
STEPS_PER_CALL_AUTO = 16  # train.steps_per_call=-1: at most this many steps per call
HOST_CHUNK_AUTO_BYTES = 1 << 26  # ... and with host batches, at most 64 MiB of a process's batches per call


def build_model(cfg: config_lib.RunConfig, dataset: sources.Dataset):
    """(graphdef, params) for ``cfg.model``, sized from the dataset (vocabulary, features, classes)."""
    return models.build(
        cfg.model,
        seed=cfg.seed,
        vocab_size=dataset.meta.get("vocab_size", 256),
        seq_len=cfg.data.seq_len,
        num_features=dataset.meta.get("num_features", 0),
        num_classes=dataset.meta.get("num_classes", 0),
    )


def restore_params(cfg: config_lib.RunConfig, workdir: str, mesh: jax.sharding.Mesh | None = None):
    """The params of the latest checkpoint in ``workdir`` (replicated over ``mesh``), with the graphdef and dataset.

    Returns:
      (graphdef, params, dataset, step).
    """
    mesh = mesh or sharding.make_mesh()
    dataset = sources.build_dataset(cfg.data)
    graphdef, params = build_model(cfg, dataset)
    tx, _ = state_lib.make_optimizer(cfg.train, 1)
    repl = sharding.replicated(mesh)
    state = jax.eval_shape(lambda: state_lib.create_train_state(params, tx, cfg.seed))
    state = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=repl), state)
    with Checkpointer(workdir, cfg.checkpoint) as ckpt:
        # Only the state is read: the tracker's layout depends on the run's interventions and device count.
        restored = ckpt.restore_latest(state, None, fallback=False)  # a finished run's parameters, or an error
        if restored is None:
            raise FileNotFoundError(f"no checkpoint in {workdir}/checkpoints: train the run first.")
        step, state, _, _, _ = restored
    return graphdef, state.params, dataset, step


def resolve_on_device(cfg: sources.DataConfig, train_arrays: dict[str, np.ndarray], process_count: int) -> bool:
    """``data.on_device``: 1 or 0 as set; -1 (auto) turns it on when every process holds every training row and the
    arrays take at most ``ON_DEVICE_AUTO_BYTES``: then a step moves nothing to the device (benchmarks/README.md)."""
    if cfg.on_device >= 0:
        return bool(cfg.on_device)
    every_row = cfg.shards == 1 or process_count == 1
    return every_row and sum(v.nbytes for v in train_arrays.values()) <= ON_DEVICE_AUTO_BYTES


def resolve_steps_per_call(cfg: state_lib.TrainConfig, steps_per_epoch: int, batch_bytes: int) -> int:
    """``train.steps_per_call``: as set, or -1 (auto): ``STEPS_PER_CALL_AUTO``, or the epoch's steps if fewer, or as
    many batches as fit in ``HOST_CHUNK_AUTO_BYTES`` (``batch_bytes``: a global batch's rows, an upper bound on a
    process's host batch; 0 when the batches are gathered on the device), at least 1."""
    if cfg.steps_per_call >= 1:
        return cfg.steps_per_call
    fit = HOST_CHUNK_AUTO_BYTES // batch_bytes if batch_bytes else STEPS_PER_CALL_AUTO
    return max(1, min(STEPS_PER_CALL_AUTO, steps_per_epoch, fit))


def aligned_tracker(cfg: config_lib.RunConfig, num_devices: int) -> bool:
    """Whether each device's batch rows are ids of its own rows of a ``data``-sharded tracker (``data.shards`` a
    multiple of the device count): its update then exchanges nothing."""
    return cfg.tracker.sharding == "data" and cfg.data.shards > 1 and cfg.data.shards % num_devices == 0


@dataclasses.dataclass
class TrainResult:
    state: state_lib.TrainState
    tracker: tracker_lib.ExampleTracker
    last_metrics: dict[str, float]
    epochs_done: int


def _load(path: str, field: str, key: str) -> np.ndarray | None:
    """A .npy array, or the array named ``key`` in a .npz; anything else raises ConfigError naming ``field``."""
    if not path:
        return None
    try:
        loaded = np.load(path)  # allow_pickle=False: object arrays are refused
    except (OSError, ValueError) as e:
        raise ConfigError(f"{field}={path!r} cannot be read ({e}); point it at a .npy file.") from e
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            if key not in loaded.files:
                raise ConfigError(
                    f"{field}={path!r} is a .npz without an array named {key!r} (it holds {loaded.files}); save a "
                    f".npy, or the array under the name {key!r}."
                )
            return loaded[key]
    return loaded


def load_interventions(cfg: state_lib.TrainConfig, n: int) -> dict[str, np.ndarray | None]:
    """Reads and checks the intervention artefacts named in the config (keep_idx, weights_N, multiplicity_N).

    Ids and multiplicities must be stored as integers (floats would be truncated silently), weights as real numbers,
    and the examples trained on must carry some weight and some visits.
    """
    keep = _load(cfg.keep_idx_path, "train.keep_idx_path", "keep_idx")
    if keep is not None and not np.issubdtype(keep.dtype, np.integer):
        raise ConfigError(
            f"train.keep_idx_path: ids must be stored as integers, got dtype {keep.dtype}; save "
            "np.asarray(ids, np.int64)."
        )
    if keep is not None and (keep.ndim != 1 or len(keep) == 0 or keep.min() < 0 or keep.max() >= n):
        raise ConfigError(f"train.keep_idx_path: need a non-empty 1-D array of ids in [0, {n}).")
    if keep is not None and len(np.unique(keep)) != len(keep):
        raise ConfigError("train.keep_idx_path: ids repeat; up-sample with train.multiplicity_path instead.")
    trained = np.arange(n) if keep is None else keep
    weights = _load(cfg.weights_path, "train.weights_path", "weights_N")
    if weights is not None and weights.dtype.kind not in "fiu":
        raise ConfigError(f"train.weights_path: weights must be real numbers, got dtype {weights.dtype}.")
    if weights is not None and (weights.shape != (n,) or not np.all(np.isfinite(weights)) or weights.min() < 0):
        raise ConfigError(f"train.weights_path: need {n} finite non-negative weights, got shape {weights.shape}.")
    if weights is not None and not weights[trained].any():
        raise ConfigError(
            "train.weights_path: every trained example has weight 0, so the loss and every gradient would be 0; "
            "give some examples a positive weight (or remove examples with train.keep_idx_path)."
        )
    mult = _load(cfg.multiplicity_path, "train.multiplicity_path", "multiplicity_N")
    if mult is not None and (mult.shape != (n,) or not np.issubdtype(mult.dtype, np.integer) or mult.min() < 0):
        raise ConfigError(f"train.multiplicity_path: need {n} non-negative integers, got {mult.shape} {mult.dtype}.")
    if mult is not None and not mult[trained].any():
        raise ConfigError(
            "train.multiplicity_path: every trained example is visited 0 times per epoch, leaving nothing to "
            "train on; give some examples a multiplicity >= 1."
        )
    return {"keep_idx": keep, "weights_N": weights, "multiplicity_N": mult}


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
    epoch_metrics: Callable[[Any, Any, sources.Dataset, jax.sharding.Mesh], dict[str, float]] | None = None,
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
    # ----------------------------------------------------------------------------------------------------------
    # Checks that must fail before anything is loaded or compiled.
    # ----------------------------------------------------------------------------------------------------------
    mesh = mesh or sharding.make_mesh()
    n_dev = mesh.devices.size
    config_lib.check_devices(cfg, n_dev)
    check_shards(cfg.data.shards, cfg.train.batch_size, jax.process_count())
    if cfg.data.on_device == 1 and cfg.data.shards > 1 and jax.process_count() > 1:
        raise ConfigError(
            "data.on_device=1 puts every training row on every device, but data.shards > 1 keeps only a process's "
            "own rows: use one of them (data.shards=1 with on_device, or data.on_device=0 or -1)."
        )
    parse.check_workdir(workdir)
    fingerprint.check(cfg, workdir)  # a rerun with other result-changing fields is refused here
    if jax.process_index() == 0:
        config_lib.save(cfg, workdir)  # the config of the latest (matching) invocation

    # ----------------------------------------------------------------------------------------------------------
    # Data.
    # ----------------------------------------------------------------------------------------------------------
    dataset = sources.build_dataset(cfg.data)
    n = dataset.num_train
    if n == 0:
        raise ConfigError("the training split is empty: check data.source, data.path and data.seq_len.")
    procs = {"process_index": jax.process_index(), "process_count": jax.process_count()}
    # Each process builds only its rows of every global batch; with data.shards > 1 it keeps only the rows of its
    # shards (a contiguous id range) and drops the rest of the training split.
    rows = row_range(n, cfg.data.shards, **procs)
    train_arrays = {k: v[rows.start : rows.stop] for k, v in dataset.train.items() if k in MODEL_INPUTS}
    if cfg.data.shards > 1:
        train_arrays = {k: np.ascontiguousarray(v) for k, v in train_arrays.items()}
        # The epoch_metrics hook keeps the whole split (it may decode canaries from their training rows).
        dataset = dataset if epoch_metrics else dataclasses.replace(dataset, train={})
    heldout_arrays = {k: v for k, v in dataset.heldout.items() if k in MODEL_INPUTS}
    interventions = load_interventions(cfg.train, n)
    on_device = resolve_on_device(cfg.data, train_arrays, jax.process_count())
    shards = {"shards": cfg.data.shards, "num_examples": n}
    it = EpochIterator(train_arrays, cfg.train.batch_size, cfg.seed, **interventions, **procs, **shards)
    spe = it.steps_per_epoch
    total_steps = cfg.train.total_steps or spe * cfg.train.num_epochs
    k = cfg.tracker.scoring_passes
    if k > spe:
        raise ConfigError(
            f"tracker.scoring_passes={k} exceeds the {spe} steps of an epoch; use at most {spe} (one pass per step)."
        )
    score_positions = {max(1, round((i + 1) * spe / k)) for i in range(k)} if k else set()
    row_bytes = sum(v.nbytes // max(len(v), 1) for v in train_arrays.values())
    per_call = resolve_steps_per_call(cfg.train, spe, 0 if on_device else row_bytes * cfg.train.batch_size)

    # ----------------------------------------------------------------------------------------------------------
    # Model, optimizer, state, tracker, jitted steps.
    # ----------------------------------------------------------------------------------------------------------
    graphdef, params = build_model(cfg, dataset)

    def loss_fn(params, batch, keys_B):
        return models.per_example_loss(graphdef, params, batch, keys_B)

    tx, schedule = state_lib.make_optimizer(cfg.train, total_steps)
    repl = sharding.replicated(mesh)
    tracker_sh = sharding.tracker_sharding(mesh, cfg.tracker.sharding)
    state = sharding.put_tree(state_lib.create_train_state(params, tx, cfg.seed), repl)
    multiple = tracker_multiple(cfg.data.shards, n_dev)
    unique = interventions["multiplicity_N"] is None
    # Data ranges aligned with the tracker's row blocks: each device's batch rows are its own tracker rows, so a
    # sharded tracker updates without any exchange.
    local = aligned_tracker(cfg, n_dev)
    deferred = tracker_lib.defers(cfg.tracker)
    copies = tracker_lib.pending_copies(cfg.tracker, n_dev, local)
    slots = tracker_lib.record_slots(cfg.tracker, it.max_occurrences)  # > 1: up-sampled copies get a slot each
    tracker = sharding.put_tree(tracker_lib.ExampleTracker.create(n, multiple, deferred, copies, slots), tracker_sh)
    # Deferred updates are folded into the table at each epoch's end, after each scoring pass and when the loop
    # stops (tracker.fold); checkpoints keep the records pending in between.
    fold_fn = jax.jit(
        functools.partial(tracker_lib.fold, cfg=cfg.tracker),
        in_shardings=tracker_sh,
        out_shardings=tracker_sh,
        donate_argnums=0,
    )
    score_chunk_fn = jit_score_chunk(
        loss_fn=loss_fn, tracker_cfg=cfg.tracker, state_sharding=repl, tracker_sharding=tracker_sh, local_tracker=local
    )
    # Scoring passes run SCORE_CHUNK batches per call (fewer when an epoch has fewer).
    seq_idx = np.concatenate(list(sequential_ids(n, cfg.train.batch_size, cfg.data.shards)))  # a pass's global ids
    chunk_size = min(SCORE_CHUNK, len(seq_idx) // cfg.train.batch_size)
    train_fn, _, eval_fn = jit_steps(
        loss_fn=loss_fn,
        tx=tx,
        schedule=schedule,
        tracker_cfg=cfg.tracker,
        steps_per_epoch=spe,
        local_tracker=local,
        unique_ids=unique,
        state_sharding=repl,
        tracker_sharding=tracker_sh,
        batch_sharding=sharding.batch_sharding(mesh),
    )
    # Host batches: ``per_call`` of them stacked and placed as one chunk per call (a scan), wherever no boundary falls
    # inside the call.
    if per_call > 1 and not on_device:
        chunk_fn = jit_chunk_train(
            train_fn, state_sharding=repl, tracker_sharding=tracker_sh, chunk_sharding=sharding.chunk_sharding(mesh)
        )
    if on_device:  # the training arrays live on every device; a step gathers its own rows
        table = dict(train_arrays)
        if interventions["weights_N"] is not None:
            table["weight"] = np.asarray(interventions["weights_N"], np.float32)
        table = sharding.put_tree(table, repl)
        resident = functools.partial(
            jit_resident_train,
            train_fn,
            steps_per_epoch=spe,
            batch_size=cfg.train.batch_size,
            num_examples=n,
            state_sharding=repl,
            tracker_sharding=tracker_sh,
            batch_sharding=sharding.batch_sharding(mesh),
        )
        # One step per call, and ``per_call`` steps per call (a scan) wherever no boundary falls inside them.
        resident_fns = {1: resident()}
        if per_call > 1:
            resident_fns[per_call] = resident(steps_per_call=per_call)
        resident_score_fn = jit_resident_score(
            loss_fn=loss_fn,
            tracker_cfg=cfg.tracker,
            num_examples=n,
            state_sharding=repl,
            tracker_sharding=tracker_sh,
            local_tracker=local,
        )
        score_ids = [  # each scoring chunk's ids, placed once per run
            sharding.put_tree(ids_GxB, repl)
            for ids_GxB in sequential_id_chunks(n, cfg.train.batch_size, chunk_size, cfg.data.shards)
        ]
    is_writer = jax.process_index() == 0  # with several processes, only process 0 writes shared files
    os.makedirs(os.path.join(workdir, "trackers"), exist_ok=True)

    with Checkpointer(workdir, cfg.checkpoint) as ckpt, jax.set_mesh(mesh):
        # ------------------------------------------------------------------------------------------------------
        # Resume, or start fresh.
        # ------------------------------------------------------------------------------------------------------
        restored = ckpt.restore_latest(state, tracker)  # unusable checkpoints are set aside, with a warning
        start = None if restored is None else restored[0]
        if restored is not None:
            _, state, tracker, data_state, _ = restored
            it.epoch, it.position = data_state["epoch"], data_state["position"]
        elif is_writer:
            config_lib.save(cfg, workdir)
            with open(os.path.join(workdir, "dataset.json"), "w") as f:
                json.dump({**dataset.meta, "steps_per_epoch": spe, "total_steps": total_steps}, f, indent=2)
        step = start or 0
        stop = total_steps if max_steps is None else min(max_steps, total_steps)
        logger = logs.RunLogger(
            workdir, cfg.log, total_steps=total_steps, start_step=step, batch_size=cfg.train.batch_size
        )
        pending: list[tuple[int, int, Any]] = []  # (first step, steps, metrics: scalars, or [steps] per metric)
        last: dict[str, float] = {}

        def flush() -> None:
            # Scalars are fetched one call late: by now the next call is already queued on the device.
            nonlocal last
            for first, g, m in pending:
                m = jax.device_get(m)
                for j in range(g):
                    s = first + j
                    last = {k: float(v if g == 1 else v[j]) for k, v in m.items()}
                    if not np.isfinite(last.get("loss", 0.0)) and ckpt.latest_step() == s - 1:
                        # Step s's loss comes from the parameters after step s - 1: a rerun from that checkpoint
                        # would meet it again, so the one before it becomes the latest.
                        ckpt.set_aside([(s - 1, f"its parameters give a non-finite loss at step {s}")], "stopping")
                    logs.check_finite(s, last, ckpt.latest_step)
                    if s % cfg.log.every_steps == 0 or s == total_steps:
                        logger.write(s, last)
            pending.clear()

        def scoring_pass(epoch: int, position: int) -> None:
            nonlocal tracker
            step_arr, epoch_arr = jnp.asarray(step, jnp.int32), jnp.asarray(epoch, jnp.int32)
            loss_parts = []
            if on_device:  # rows gathered on device: nothing crosses but the losses
                for ids_GxB in score_ids:
                    tracker, loss_GxB = resident_score_fn(state.params, tracker, table, ids_GxB, step_arr, epoch_arr)
                    loss_parts.append(loss_GxB.reshape(-1))
            else:
                chunks = sequential_chunks(train_arrays, cfg.train.batch_size, chunk_size, **procs, **shards)
                for chunk in chunks:  # G batches per call: one dispatch, not G
                    tracker, loss_GxB = score_chunk_fn(
                        state.params, tracker, sharding.put_chunk(chunk, mesh), step_arr, epoch_arr
                    )
                    loss_parts.append(loss_GxB.reshape(-1))
            tracker = fold_fn(tracker)
            # One device-to-host copy per call (16 batches), joined on the host rather than by an eager program
            # across every device; with several processes every process joins each gather.
            loss_B = np.concatenate([sharding.to_host(part) for part in loss_parts])
            if is_writer:
                ok = seq_idx < n
                loss_N = np.full(n, np.nan, np.float32)
                loss_N[seq_idx[ok]] = loss_B[: len(seq_idx)][ok]
                np.save(os.path.join(workdir, "trackers", f"epoch_{epoch:04d}_pass_at_{position:05d}.npy"), loss_N)

        def evaluate() -> dict[str, float]:
            sums = [
                eval_fn(state.params, sharding.put_batch(b, mesh))
                for b in sequential_batches(heldout_arrays, cfg.train.batch_size, **procs)
            ]
            # Summed on the host: one copy, and no small eager programs across every device (tests force 8 CPU
            # devices, where each one is a rendezvous of 8 threads).
            tot = jax.tree.map(lambda *x: sum(x), *jax.device_get(sums))
            count = max(int(tot["count"]), 1)
            return {"heldout_loss": tot["loss_sum"] / count, "heldout_accuracy": tot["accuracy_sum"] / count}

        # ------------------------------------------------------------------------------------------------------
        # Input path: placed batches (or chunks of ``per_call`` stacked batches) in the order of ``it``, built ahead on
        # a thread (data.prefetch), or gathered on device from the epoch's ids (data.on_device). ``consumed()``: the
        # iterator state after the batches consumed so far (what a checkpoint stores), never the read-ahead.
        # ------------------------------------------------------------------------------------------------------
        def call_length(step: int) -> int:
            """``per_call`` when no boundary (scoring pass, epoch end, checkpoint, stop) falls after any but the last
            of the ``per_call`` steps from ``step``, else 1."""
            position, every = step % spe, cfg.checkpoint.every_steps
            if per_call == 1 or position + per_call > spe or step + per_call > stop:
                return 1
            inside = range(1, per_call)
            if any(position + j in score_positions or (every and (step + j) % every == 0) for j in inside):
                return 1
            return per_call

        depth = cfg.data.prefetch if cfg.data.prefetch >= 0 else (0 if mesh.devices.flat[0].platform == "cpu" else 2)
        calls = CallIterator(it, call_length, step)  # host batches, grouped as the calls will take them

        def place(item: tuple[int, Any]) -> tuple[int, Any]:
            g, batch = item
            return g, sharding.put_batch(batch, mesh) if g == 1 else sharding.put_chunk(batch, mesh)

        feed = Prefetcher(calls, place, depth) if depth and not on_device else None
        consumed = feed.state if feed else it.state
        order_epoch, order = -1, None

        def next_steps(state, tracker, g):
            """Runs the next ``g`` steps; returns (epoch, position of the last batch, (state, tracker, metrics))."""
            nonlocal order_epoch, order
            if on_device:
                epoch, position = it.advance()
                if step != epoch * spe + position:  # the resident step finds its batch at state.step % spe
                    raise RuntimeError(f"step {step} is not batch {position} of epoch {epoch} ({spe} per epoch).")
                for _ in range(g - 1):
                    epoch, position = it.advance()
                if epoch != order_epoch:  # one transfer per epoch
                    order_epoch, order = epoch, sharding.put_tree(it.epoch_order(epoch), repl)
                return epoch, position, resident_fns[g](state, tracker, table, order)
            epoch, position, item = next(feed) if feed else next(calls)
            size, batch = item if feed else place(item)
            if size != g:
                raise RuntimeError(f"step {step}: the input path built a call of {size} batches, the loop runs {g}.")
            return epoch, position, (train_fn if g == 1 else chunk_fn)(state, tracker, batch)

        # ------------------------------------------------------------------------------------------------------
        # Train.
        # ------------------------------------------------------------------------------------------------------
        try:
            while step < stop:
                g = call_length(step)
                epoch, position, (state, tracker, metrics) = next_steps(state, tracker, g)
                step += g
                flush()
                pending.append((step - g + 1, g, metrics))
                logger.advance(g)
                if position + 1 in score_positions:
                    scoring_pass(epoch, position + 1)
                epoch_end = position + 1 == spe
                if epoch_end:
                    flush()
                    tracker = fold_fn(tracker)
                    fields = tracker_lib.to_numpy(tracker)
                    if is_writer:
                        np.savez(
                            os.path.join(workdir, "trackers", f"epoch_{epoch:04d}.npz"),
                            loss_N=tracker_lib.epoch_losses(fields, epoch),
                            epoch=epoch,
                            step=step,
                            **fields,
                        )
                    extra = epoch_metrics(graphdef, state.params, dataset, mesh) if epoch_metrics else {}
                    logger.write(step, {"epoch": epoch, **evaluate(), **extra}, to_bar=False)
                every = cfg.checkpoint.every_steps
                save_epoch = epoch_end and (epoch + 1) % cfg.checkpoint.every_epochs == 0
                if save_epoch or (every and step % every == 0) or step == stop:
                    flush()
                    if not checkpoint.finite(state):  # a checkpoint kept must be one a rerun can resume from
                        raise FloatingPointError(
                            f"the train state after step {step} holds NaN or Inf (the losses were finite so far); it "
                            f"was not checkpointed. {logs.recovery(ckpt.latest_step())}"
                        )
                    meta = {"step": step, "epoch": epoch, "config": cfg.to_dict()}
                    ckpt.save(step, state, tracker, consumed(), meta)
            flush()
            tracker = fold_fn(tracker)  # a run stopped inside an epoch returns its tracker folded
        finally:
            if feed:
                feed.close()
            logger.close()
        ckpt.wait()

    summary_path = os.path.join(workdir, "summary.json")
    if step == start and os.path.exists(summary_path):  # a rerun of a finished run: nothing trained, keep its metrics
        with open(summary_path) as f:
            last = {k: v for k, v in json.load(f).items() if k not in ("step", "epochs", "num_train")}
    elif is_writer and step == total_steps:
        with open(summary_path, "w") as f:
            json.dump({"step": step, "epochs": step / spe, "num_train": n, **last}, f, indent=2)
    done = consumed()
    epochs_done = done["epoch"] + (done["position"] == spe)
    return TrainResult(state=state, tracker=tracker, last_metrics=last, epochs_done=epochs_done)
