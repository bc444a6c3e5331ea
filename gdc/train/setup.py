"""What a run is built from before its first step: config checks, the data plan, the model, the jitted calls and the
initial train state and tracker.

``build(cfg, dataset, mesh)`` returns a ``Run``: this process's training rows and the epoch iterator over them, the
interventions, the input path (``data.on_device``) and steps per call, the model's graphdef, the ``Engine`` (loss,
optimizer and the jitted calls every input path shares) and the initial, placed state and tracker. Everything that
can refuse the config does so before the first ``jax.jit``. ``gdc.train.loop`` resumes a ``Run`` from its
checkpoint or starts it fresh; benchmarks/engine_costs.py times the calls of the same ``Run``. Nothing here writes
to a workdir.
"""

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np
import optax
from jax.sharding import NamedSharding

from gdc import models, sharding
from gdc import tracker as tracker_lib
from gdc.checkpoint import Checkpointer
from gdc.data import sources
from gdc.data.pipeline import EpochIterator, check_shards, row_range, tracker_multiple
from gdc.errors import ConfigError
from gdc.train import config as config_lib
from gdc.train import state as state_lib
from gdc.train.step import LossFn, jit_score_chunk, jit_steps

MODEL_INPUTS = ("tokens", "token_mask", "x", "y")
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
        num_numeric=dataset.meta.get("num_numeric", 0),
        cards=tuple(dataset.meta.get("cards", ())),
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


def check(cfg: config_lib.RunConfig, mesh: jax.sharding.Mesh) -> None:
    """Refuses a config the mesh and process count cannot run (batch split over devices, shards over processes)."""
    config_lib.check_devices(cfg, mesh.devices.size)
    check_shards(cfg.data.shards, cfg.train.batch_size, jax.process_count())
    if cfg.data.on_device == 1 and cfg.data.shards > 1 and jax.process_count() > 1:
        raise ConfigError(
            "data.on_device=1 puts every training row on every device, but data.shards > 1 keeps only a process's "
            "own rows: use one of them (data.shards=1 with on_device, or data.on_device=0 or -1)."
        )


def processes() -> dict[str, int]:
    """This process's place among the processes: each builds only its rows of every global batch."""
    return {"process_index": jax.process_index(), "process_count": jax.process_count()}


class Engine(NamedTuple):
    """The loss, the optimizer and the jitted calls every input path shares, with the shardings they take."""

    loss_fn: LossFn  # (params, batch, keys_B or None) -> (loss_B, acc_B)
    tx: optax.GradientTransformation
    train: Callable  # (state, tracker, batch) -> (state, tracker, metrics): one step (step.train_step)
    evaluate: Callable  # (params, batch) -> masked sums of loss, accuracy and count (step.eval_step)
    fold: Callable  # tracker -> tracker with its pending records folded in (tracker.fold; donates)
    score_chunk: Callable  # (params, tracker, chunk_GxB, step, epoch) -> (tracker, loss_GxB) (step.score_chunk)
    state_sharding: NamedSharding  # replicated over the mesh
    tracker_sharding: NamedSharding
    local: bool  # each device's batch rows are its own tracker rows (aligned_tracker)


def build_engine(
    cfg: config_lib.RunConfig,
    graphdef,
    mesh: jax.sharding.Mesh,
    *,
    steps_per_epoch: int,
    total_steps: int,
    unique_ids: bool,
    num_spans: int = 0,
) -> Engine:
    """Jits the run's step, eval, fold and scoring calls for ``mesh``. ``unique_ids``: no id repeats in an epoch
    (no up-sampling), which lets the tracker skip its grouping sort. ``num_spans`` Sp > 0 (``tracker.spans``): the
    training batches carry ``span`` ids, the loss also returns their losses and the tracker is a pair (example
    tracker, span tracker), each folded alike."""

    def loss_fn(params, batch, keys_B):
        if num_spans and "span" in batch:  # training batches only: held-out ones have no span ids
            return models.per_example_span_loss(graphdef, params, batch, keys_B, num_spans)
        return models.per_example_loss(graphdef, params, batch, keys_B)

    tx, schedule = state_lib.make_optimizer(cfg.train, total_steps)
    repl = sharding.replicated(mesh)
    tracker_sh = sharding.tracker_sharding(mesh, cfg.tracker.sharding)
    # Data ranges aligned with the tracker's row blocks: each device's batch rows are its own tracker rows, so a
    # sharded tracker updates without any exchange.
    local = aligned_tracker(cfg, mesh.devices.size)
    # Deferred updates are folded into the table at each epoch's end, after each scoring pass and when the loop
    # stops (tracker.fold); checkpoints keep the records pending in between.
    fold = jax.jit(
        functools.partial(fold_trackers, cfg=cfg.tracker),
        in_shardings=tracker_sh,
        out_shardings=tracker_sh,
        donate_argnums=0,
    )
    score_chunk = jit_score_chunk(
        loss_fn=loss_fn, tracker_cfg=cfg.tracker, state_sharding=repl, tracker_sharding=tracker_sh, local_tracker=local
    )
    train, _, evaluate = jit_steps(
        loss_fn=loss_fn,
        tx=tx,
        schedule=schedule,
        tracker_cfg=cfg.tracker,
        steps_per_epoch=steps_per_epoch,
        local_tracker=local,
        unique_ids=unique_ids,
        state_sharding=repl,
        tracker_sharding=tracker_sh,
        batch_sharding=sharding.batch_sharding(mesh),
    )
    return Engine(loss_fn, tx, train, evaluate, fold, score_chunk, repl, tracker_sh, local)


def fold_trackers(tracker, cfg: tracker_lib.TrackerConfig):
    """``tracker.fold`` of the run's tracker, or of both trackers of a (example tracker, span tracker) pair."""
    if isinstance(tracker, tuple):
        return tuple(tracker_lib.fold(t, cfg) for t in tracker)
    return tracker_lib.fold(tracker, cfg)


def split_trackers(tracker) -> tuple[tracker_lib.ExampleTracker, tracker_lib.ExampleTracker | None]:
    """(example tracker, span tracker or None) of the run's tracker."""
    return tracker if isinstance(tracker, tuple) else (tracker, None)


def initial_tracker(
    cfg: config_lib.RunConfig, num_examples: int, mesh: jax.sharding.Mesh, max_occurrences: int, num_spans: int = 0
):
    """A fresh ``ExampleTracker`` for ``num_examples`` ids, placed with the run's tracker sharding; with
    ``num_spans`` Sp > 0 the pair (it, a span tracker over N x Sp rows, ``tracker.update_spans``).

    Its capacity is a multiple of the data ranges or devices (``tracker_multiple``); a deferred tracker keeps a pending
    copy per device when its batches are not aligned with its rows, and a record slot per occurrence of an up-sampled
    id in an epoch (``max_occurrences``). The span tracker has the same layout, Sp rows per example row.
    """
    n_dev = mesh.devices.size
    multiple = tracker_multiple(cfg.data.shards, n_dev)
    deferred = tracker_lib.defers(cfg.tracker)
    copies = tracker_lib.pending_copies(cfg.tracker, n_dev, aligned_tracker(cfg, n_dev))
    slots = tracker_lib.record_slots(cfg.tracker, max_occurrences)  # > 1: up-sampled copies get a slot each
    tracker = tracker_lib.ExampleTracker.create(num_examples, multiple, deferred, copies, slots)
    if num_spans:
        span = tracker_lib.ExampleTracker.create(
            num_examples * num_spans, multiple * num_spans, deferred, copies, slots
        )
        tracker = (tracker, span)
    return sharding.put_tree(tracker, sharding.tracker_sharding(mesh, cfg.tracker.sharding))


@dataclasses.dataclass(frozen=True)
class Run:
    """A run ready for its first step (``build``); the loop positions ``it`` and replaces state and tracker when it
    resumes from a checkpoint."""

    cfg: config_lib.RunConfig
    mesh: jax.sharding.Mesh
    dataset: sources.Dataset  # without its training rows when data.shards > 1 and build's keep_split is False
    num_train: int  # N: ids 0..N-1
    train_arrays: dict[str, np.ndarray]  # this process's rows of the model inputs (row_range)
    heldout_arrays: dict[str, np.ndarray]  # the model inputs of the held-out split
    interventions: dict[str, np.ndarray | None]  # keep_idx, weights_N, multiplicity_N (load_interventions)
    it: EpochIterator  # the training order, at epoch 0, position 0 until the loop resumes it
    steps_per_epoch: int
    total_steps: int
    score_positions: frozenset[int]  # batches into an epoch after which a scoring pass runs
    on_device: bool  # the training arrays live on every device (data.on_device)
    steps_per_call: int  # the most steps one call runs (train.steps_per_call)
    num_spans: int  # Sp: the most marked spans of an example (tracker.spans; 0: none, and no span tracker)
    graphdef: Any
    engine: Engine
    state: state_lib.TrainState  # initial, replicated
    tracker: Any  # initial, placed: an ExampleTracker, or (example tracker, span tracker) with num_spans


def build(
    cfg: config_lib.RunConfig, dataset: sources.Dataset, mesh: jax.sharding.Mesh, *, keep_split: bool = True
) -> Run:
    """The ``Run`` of ``cfg`` on ``dataset`` over ``mesh``; config errors are raised before anything is compiled.

    With ``data.shards`` > 1 a process keeps only the rows of its shards (a contiguous id range); ``keep_split``
    False then drops the training split from ``Run.dataset`` too (only ``epoch_metrics`` hooks need it).
    """
    n = dataset.num_train
    if n == 0:
        raise ConfigError("the training split is empty: check data.source, data.path and data.seq_len.")
    procs = processes()
    rows = row_range(n, cfg.data.shards, **procs)
    train_arrays = {k: v[rows.start : rows.stop] for k, v in dataset.train.items() if k in MODEL_INPUTS}
    span_NxL = sources.span_ids(dataset, cfg.tracker.spans) if cfg.tracker.enabled else None
    num_spans = 0 if span_NxL is None else int(span_NxL.max(initial=0))
    if cfg.tracker.enabled and cfg.tracker.spans == "top_k_drop":  # no span until chosen (gdc.train.span_select)
        span_NxL, num_spans = np.zeros(dataset.train["token_mask"].shape, np.int8), cfg.tracker.span_k
    if num_spans:  # the batches carry each row's span ids
        train_arrays["span"] = span_NxL[rows.start : rows.stop]
    if cfg.data.shards > 1:
        train_arrays = {k: np.ascontiguousarray(v) for k, v in train_arrays.items()}
        dataset = dataset if keep_split else dataclasses.replace(dataset, train={})
    heldout_arrays = {k: v for k, v in dataset.heldout.items() if k in MODEL_INPUTS}
    interventions = load_interventions(cfg.train, n)
    on_device = resolve_on_device(cfg.data, train_arrays, jax.process_count())
    it = EpochIterator(
        train_arrays, cfg.train.batch_size, cfg.seed, **interventions, **procs, shards=cfg.data.shards, num_examples=n
    )
    spe = it.steps_per_epoch
    total_steps = cfg.train.total_steps or spe * cfg.train.num_epochs
    k = cfg.tracker.scoring_passes
    if k > spe:
        raise ConfigError(
            f"tracker.scoring_passes={k} exceeds the {spe} steps of an epoch; use at most {spe} (one pass per step)."
        )
    score_positions = frozenset({max(1, round((i + 1) * spe / k)) for i in range(k)} if k else ())
    row_bytes = sum(v.nbytes // max(len(v), 1) for v in train_arrays.values())
    per_call = resolve_steps_per_call(cfg.train, spe, 0 if on_device else row_bytes * cfg.train.batch_size)

    graphdef, params = build_model(cfg, dataset)
    unique = interventions["multiplicity_N"] is None
    engine = build_engine(
        cfg, graphdef, mesh, steps_per_epoch=spe, total_steps=total_steps, unique_ids=unique, num_spans=num_spans
    )
    state = sharding.put_tree(state_lib.create_train_state(params, engine.tx, cfg.seed), engine.state_sharding)
    return Run(
        cfg=cfg,
        mesh=mesh,
        dataset=dataset,
        num_train=n,
        train_arrays=train_arrays,
        heldout_arrays=heldout_arrays,
        interventions=interventions,
        it=it,
        steps_per_epoch=spe,
        total_steps=total_steps,
        score_positions=score_positions,
        on_device=on_device,
        steps_per_call=per_call,
        num_spans=num_spans,
        graphdef=graphdef,
        engine=engine,
        state=state,
        tracker=initial_tracker(cfg, n, mesh, it.max_occurrences, num_spans),
    )
