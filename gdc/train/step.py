"""The pure training step and the forward-only scoring step.

``train_step`` is jitted once per run (``make_train_step``) with explicit shardings and donation of state and
tracker. ``step`` and ``epoch`` are traced, so nothing recompiles across epochs or padded batches.
"""

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding

from gdc import losses, sharding
from gdc import tracker as tracker_lib
from gdc.train.state import TrainState
from gdc.types import Batch, Metrics

# (params, batch, keys_B or None) -> (loss_B, acc_B); with span ids in the batch, (loss_B, acc_B, span losses)
LossFn = Callable[..., tuple[jax.Array, jax.Array]]


def example_keys(key: jax.Array, step: jax.Array, idx_B: jax.Array) -> jax.Array:
    """Per-example keys that depend only on (seed, step, example id)."""
    return jax.vmap(jax.random.fold_in, (None, 0))(jax.random.fold_in(key, step), idx_B)


def train_step(
    state: TrainState,
    tracker: tracker_lib.ExampleTracker,
    batch: Batch,
    *,
    loss_fn: LossFn,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    tracker_cfg: tracker_lib.TrackerConfig,
    steps_per_epoch: int,
    unique_ids: bool = False,
    mesh: jax.sharding.Mesh | None = None,
    local: bool = False,
) -> tuple[TrainState, tracker_lib.ExampleTracker, Metrics]:
    """One optimizer update on ``sum(w*mask*loss_B) / sum(w*mask)``; folds the pre-update ``loss_B`` into the tracker.

    With ``tracker.spans`` the tracker is a pair (example tracker, span tracker), the batch has ``span`` ids and
    ``loss_fn`` returns the span losses as a third output (``models.per_example_span_loss``), which the span tracker
    reads (``tracker.update_spans``); without, nothing of this runs.

    The tracker is updated here only when ``tracker_cfg.enabled`` and no scoring passes are configured (then the loop
    feeds it fixed-parameter losses from ``score_step`` instead). ``unique_ids``: no id repeats inside a batch (no
    up-sampling), which lets the tracker skip its grouping sort. A tracker created deferred (``tracker.defers``) only
    records the losses, into the slot of each row's ``occurrence`` when the batch has one (up-sampling), and the
    caller folds them at the epoch's end. ``mesh``, ``local``: a ``data``-sharded tracker's
    mesh, and whether each device's batch rows are its own tracker rows (``tracker.update``).
    """
    keys_B = example_keys(state.key, state.step, batch["index"])
    mask_B = batch["mask"]

    def objective(params):
        out = loss_fn(params, batch, keys_B)  # (loss_B, acc_B), and the span losses when the batch has "span"
        return losses.weighted_mean(out[0], mask_B, batch.get("weight")), out

    (loss, out), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
    loss_B, acc_B = out[:2]
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    if tracker_cfg.enabled and tracker_cfg.scoring_passes == 0:
        epoch = state.step // steps_per_epoch
        tracker, span_tracker = tracker if isinstance(tracker, tuple) else (tracker, None)
        if span_tracker is not None:
            span_tracker = tracker_lib.update_spans(
                span_tracker,
                batch["index"],
                *out[2],
                mask_B,
                state.step,
                epoch,
                tracker_cfg,
                unique=unique_ids,
                mesh=mesh,
                local=local,
                occ_B=batch.get("occurrence"),
            )
        tracker = tracker_lib.update(
            tracker,
            batch["index"],
            loss_B,
            acc_B,
            mask_B,
            state.step,
            epoch,
            tracker_cfg,
            unique=unique_ids,
            mesh=mesh,
            local=local,
            occ_B=batch.get("occurrence"),
        )
        tracker = tracker if span_tracker is None else (tracker, span_tracker)
    count = mask_B.sum()
    metrics = {
        "loss": loss,
        "accuracy": jnp.where(mask_B, acc_B, 0.0).sum() / jnp.maximum(count, 1),
        "grad_norm": optax.global_norm(grads),
        "learning_rate": jnp.asarray(schedule(state.step), jnp.float32),
        "examples": count,
    }
    if len(out) > 2:  # spans: the mean loss and token accuracy of the batch's spans (0 without any)
        loss_BxSp, acc_BxSp, valid_BxSp = out[2]
        w_BxSp = (mask_B[:, None] & valid_BxSp).astype(jnp.float32)
        spans = jnp.maximum(w_BxSp.sum(), 1.0)
        metrics["span_loss"] = (w_BxSp * loss_BxSp).sum() / spans
        metrics["span_accuracy"] = (w_BxSp * acc_BxSp).sum() / spans
    new_state = TrainState(step=state.step + 1, params=params, opt_state=opt_state, key=state.key)
    return new_state, tracker, metrics


def score_step(
    params,
    tracker: tracker_lib.ExampleTracker,
    batch: Batch,
    step: jax.Array,
    epoch: jax.Array,
    *,
    loss_fn: LossFn,
    tracker_cfg: tracker_lib.TrackerConfig,
    mesh: jax.sharding.Mesh | None = None,
    local: bool = False,
    span_losses: bool = False,
) -> tuple:
    """Forward-only pass at fixed ``params`` (no dropout); folds the losses into the tracker (a deferred tracker
    records them, and the caller folds after the pass). With ``tracker.spans`` the tracker is a pair (example tracker,
    span tracker) and the batch has ``span`` ids: the span tracker reads the span losses of the same forward pass.

    Returns (tracker, loss_B, acc_B), and with ``span_losses`` also ``loss_BxSp`` (NaN: no valid token; None
    without spans).
    """
    out = loss_fn(params, batch, None)
    tracker, span_tracker = tracker if isinstance(tracker, tuple) else (tracker, None)
    kw = dict(unique=True, mesh=mesh, local=local)  # scoring passes visit each example once, in id order
    if span_tracker is not None:
        span_tracker = tracker_lib.update_spans(
            span_tracker, batch["index"], *out[2], batch["mask"], step, epoch, tracker_cfg, **kw
        )
    tracker = tracker_lib.update(tracker, batch["index"], *out[:2], batch["mask"], step, epoch, tracker_cfg, **kw)
    if span_tracker is None:
        return (tracker, *out[:2], None) if span_losses else (tracker, *out[:2])
    span_BxSp = jnp.where(out[2][2], out[2][0], jnp.nan)
    return ((tracker, span_tracker), *out[:2]) + ((span_BxSp,) if span_losses else ())


def score_chunk(
    params,
    tracker: tracker_lib.ExampleTracker,
    chunk: Batch,
    step: jax.Array,
    epoch: jax.Array,
    *,
    loss_fn: LossFn,
    tracker_cfg: tracker_lib.TrackerConfig,
    mesh: jax.sharding.Mesh | None = None,
    local: bool = False,
) -> tuple[tracker_lib.ExampleTracker, jax.Array]:
    """``score_step`` over G stacked batches (leading axis) in one call: returns (tracker, loss_GxB), and with spans
    (tracker pair, (loss_GxB, span loss_GxBxSp: NaN for a span without a valid token)).

    For small models a scoring pass is bound by per-call dispatch, not by the forward passes; a scan over G batches
    pays it once per G.
    """

    def body(tracker, batch):
        tracker, loss_B, _, span_BxSp = score_step(
            params,
            tracker,
            batch,
            step,
            epoch,
            loss_fn=loss_fn,
            tracker_cfg=tracker_cfg,
            mesh=mesh,
            local=local,
            span_losses=True,
        )
        return tracker, (loss_B if span_BxSp is None else (loss_B, span_BxSp))

    return jax.lax.scan(body, tracker, chunk)


def eval_step(params, batch: Batch, *, loss_fn: LossFn) -> dict[str, jax.Array]:
    """Masked sums over one padded batch (no donation): loss, accuracy and example count."""
    loss_B, acc_B = loss_fn(params, batch, None)
    mask_B = batch["mask"]
    return {
        "loss_sum": jnp.where(mask_B, loss_B, 0.0).sum(),
        "accuracy_sum": jnp.where(mask_B, acc_B, 0.0).sum(),
        "count": mask_B.sum(),
    }


def jit_steps(
    *,
    loss_fn: LossFn,
    tx,
    schedule,
    tracker_cfg,
    steps_per_epoch: int,
    unique_ids: bool = False,
    local_tracker: bool = False,
    state_sharding: NamedSharding,
    tracker_sharding: NamedSharding,
    batch_sharding: NamedSharding,
) -> tuple[Callable, Callable, Callable]:
    """Jits (train_step, score_step, eval_step) with explicit shardings; static pieces are bound by partial.

    ``local_tracker``: the batches' rows on each device are ids of that device's tracker rows (``tracker.update``).
    """
    repl = state_sharding
    train = jax.jit(
        functools.partial(
            train_step,
            loss_fn=loss_fn,
            tx=tx,
            schedule=schedule,
            tracker_cfg=tracker_cfg,
            steps_per_epoch=steps_per_epoch,
            unique_ids=unique_ids,
            mesh=tracker_sharding.mesh,
            local=local_tracker,
        ),
        in_shardings=(state_sharding, tracker_sharding, batch_sharding),
        out_shardings=(state_sharding, tracker_sharding, repl),
        donate_argnames=("state", "tracker"),
    )
    score = jax.jit(
        functools.partial(
            score_step, loss_fn=loss_fn, tracker_cfg=tracker_cfg, mesh=tracker_sharding.mesh, local=local_tracker
        ),
        in_shardings=(repl, tracker_sharding, batch_sharding, repl, repl),
        out_shardings=(tracker_sharding, batch_sharding, batch_sharding),
        donate_argnames=("tracker",),
    )
    evaluate = jax.jit(
        functools.partial(eval_step, loss_fn=loss_fn), in_shardings=(repl, batch_sharding), out_shardings=repl
    )
    return train, score, evaluate


def jit_score_chunk(
    *,
    loss_fn: LossFn,
    tracker_cfg,
    state_sharding: NamedSharding,
    tracker_sharding: NamedSharding,
    local_tracker: bool = False,
) -> Callable:
    """Jits ``score_chunk``: chunks are split over ``data`` along their batch axis (``sharding.chunk_sharding``)."""
    mesh = tracker_sharding.mesh
    chunk_sharding = sharding.chunk_sharding(mesh)
    repl = state_sharding
    return jax.jit(
        functools.partial(score_chunk, loss_fn=loss_fn, tracker_cfg=tracker_cfg, mesh=mesh, local=local_tracker),
        in_shardings=(repl, tracker_sharding, chunk_sharding, repl, repl),
        out_shardings=(tracker_sharding, chunk_sharding),
        donate_argnames=("tracker",),
    )


def jit_resident_score(
    *,
    loss_fn: LossFn,
    tracker_cfg,
    num_examples: int,
    state_sharding: NamedSharding,
    tracker_sharding: NamedSharding,
    local_tracker: bool = False,
) -> Callable:
    """``score_chunk`` fed from a device-resident dataset: ``(params, tracker, table, ids_GxB, step, epoch)``.

    ``table`` as in ``jit_resident_train``; ``ids_GxB``: the chunk's ids (``pipeline.sequential_ids``, padding N),
    placed once per run, so a scoring pass moves nothing to the device.
    """
    mesh = tracker_sharding.mesh
    chunk_sharding = sharding.chunk_sharding(mesh)
    repl = state_sharding

    def score(params, tracker, table, ids_GxB, step, epoch):
        rows = device_rows(table, ids_GxB.reshape(-1), num_examples)
        chunk = jax.tree.map(lambda x: x.reshape(ids_GxB.shape + x.shape[1:]), rows)
        chunk = jax.lax.with_sharding_constraint(chunk, chunk_sharding)
        return score_chunk(
            params,
            tracker,
            chunk,
            step,
            epoch,
            loss_fn=loss_fn,
            tracker_cfg=tracker_cfg,
            mesh=mesh,
            local=local_tracker,
        )

    return jax.jit(
        score,
        in_shardings=(repl, tracker_sharding, repl, repl, repl, repl),
        out_shardings=(tracker_sharding, chunk_sharding),
        donate_argnames=("tracker",),
    )


def device_rows(table: dict[str, jax.Array], idx_B: jax.Array, num_examples: int) -> Batch:
    """On-device twin of ``gdc.data.pipeline.gather``: rows ``idx_B`` of ``table`` (model inputs and, if present,
    ``weight`` [N]) plus ``index``/``mask``; ids >= N become zero padding rows."""
    mask_B = idx_B < num_examples
    safe_B = jnp.where(mask_B, idx_B, 0)
    batch = {}
    for k, v in table.items():
        rows = v[safe_B]
        batch[k] = jnp.where(mask_B.reshape((-1,) + (1,) * (rows.ndim - 1)), rows, jnp.zeros((), rows.dtype))
    return {**batch, "index": idx_B, "mask": mask_B}


def _scan_train(train: Callable, state, tracker, chunk):
    """``train`` over the G batches of ``chunk`` (leading axis G): (state, tracker, metrics with a leading G)."""

    def body(carry, batch):
        state, tracker, metrics = train(*carry, batch)
        return (state, tracker), metrics

    (state, tracker), metrics_G = jax.lax.scan(body, (state, tracker), chunk)
    return state, tracker, metrics_G


def jit_chunk_train(
    train: Callable, *, state_sharding: NamedSharding, tracker_sharding: NamedSharding, chunk_sharding: NamedSharding
) -> Callable:
    """``train`` (from ``jit_steps``) over a placed chunk of G host batches: ``(state, tracker, chunk) -> ...``.

    ``chunk``: G consecutive batches stacked on a leading axis (``sharding.put_chunk``); one call runs their G steps
    (a scan) and returns each metric with a leading axis of G, as ``jit_resident_train`` does for resident data.
    """
    return jax.jit(
        functools.partial(_scan_train, train),
        in_shardings=(state_sharding, tracker_sharding, chunk_sharding),
        out_shardings=(state_sharding, tracker_sharding, state_sharding),
        donate_argnums=(0, 1),
    )


def jit_resident_train(
    train: Callable,
    *,
    steps_per_epoch: int,
    batch_size: int,
    num_examples: int,
    state_sharding: NamedSharding,
    tracker_sharding: NamedSharding,
    batch_sharding: NamedSharding,
    steps_per_call: int = 1,
) -> Callable:
    """``train`` (from ``jit_steps``) fed from a device-resident dataset: ``(state, tracker, table, order) -> ...``.

    ``table``: replicated training arrays (``device_rows``); ``order``: the epoch's padded visiting order
    (``EpochIterator.epoch_order``: int32 [steps_per_epoch * batch_size] ``index``, and ``occurrence`` with
    up-sampling), placed once per epoch. The step takes its batch at ``state.step % steps_per_epoch`` (step = epoch *
    steps_per_epoch + position), so nothing crosses to the device per step.

    ``steps_per_call`` G > 1: one call runs G consecutive steps (a scan over the G batches from the same ``order``,
    so they must lie in one epoch) and returns each metric with a leading axis of G. For small models a step is
    bound by its dispatch; G steps pay it once.
    """
    repl = state_sharding
    chunk_sharding = sharding.stacked(batch_sharding)

    def step(state, tracker, table, order):
        start = (state.step % steps_per_epoch) * batch_size
        part = {k: jax.lax.dynamic_slice_in_dim(v, start, batch_size) for k, v in order.items()}
        batch = device_rows(table, part.pop("index"), num_examples) | part
        batch = jax.lax.with_sharding_constraint(batch, batch_sharding)
        return train(state, tracker, batch)

    def steps(state, tracker, table, order):
        # The call's G batches are gathered up front, one gather of G x B rows, then scanned over as placed batches
        # are: measured to cost about half of a B-row gather in each step, whose random reads wait on memory in turn.
        start = (state.step % steps_per_epoch) * batch_size
        part = {k: jax.lax.dynamic_slice_in_dim(v, start, steps_per_call * batch_size) for k, v in order.items()}
        rows = device_rows(table, part.pop("index"), num_examples) | part
        chunk = jax.tree.map(lambda x: x.reshape((steps_per_call, batch_size) + x.shape[1:]), rows)
        chunk = jax.lax.with_sharding_constraint(chunk, chunk_sharding)
        return _scan_train(train, state, tracker, chunk)

    return jax.jit(
        step if steps_per_call == 1 else steps,
        in_shardings=(state_sharding, tracker_sharding, repl, repl),
        out_shardings=(state_sharding, tracker_sharding, repl),
        donate_argnames=("state", "tracker"),
    )
