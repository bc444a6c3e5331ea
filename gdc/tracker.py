"""Per-example training-dynamics tracker: a pytree of ``[N]`` arrays updated inside the jitted step.

Invariants:
  * Statistics are *pre-update*: the loss an example gets in step t is computed with the parameters before step t's
    optimizer update (Toneva-style forget events), unless the loop feeds it fixed-parameter scoring-pass losses.
  * Every write is a masked scatter with ``mode="drop"``: padding rows (``mask`` False, id N) never touch the state.
  * ``step`` and ``epoch`` are traced scalars, so updating never recompiles.
  * If an id appears several times in one update (up-sampling can put two copies in one batch), ``seen`` and the
    early-loss sums count every occurrence, and the state machine and ``last_loss`` take the last occurrence. Copies
    inside one step share parameters and randomness, so their losses are equal and the order does not matter (the
    state machine is idempotent for a repeated equal loss).

The "learned" criterion is a research choice and configurable (the rule is ``gdc.forgetting.transition``):
  * ``loss`` (the paper's rule, with hysteresis): an example becomes learned when its loss < ``eps_low`` and is
    forgotten when, while learned, its loss > ``eps_high``. ``eps_low == eps_high`` is the single-threshold rule.
  * ``accuracy``: learned when its accuracy (argmax-correct fraction of its tokens, or 0/1 for a classifier)
    >= ``acc_learn``, forgotten when it later drops below ``acc_forget``. With 1.0/1.0 this is Toneva et al.
Every example starts "not learned", so ``forget_N <= learn_N`` always holds.

Deferred updates (a tracker created with ``deferred=True``; the engine's default, ``tracker.defer``): a step only
writes its B (loss, accuracy, step, epoch) records into the ``pending`` rows of their ids, one B-row scatter and no
gather, and ``fold`` runs the state machine over the whole table at once, elementwise, once per epoch (and after each
scoring pass). A pending row has ``slots`` records side by side: one when each id occurs once per epoch, and with
up-sampling as many as an id's largest number of copies; a step writes each row's record into the slot of its
occurrence number in the epoch (``occ_B``), and the fold runs the slots in order. Each (id, slot) then has at most
one record per fold, so the folded table is bit for bit the table the immediate updates give (copies of an id that
share a batch are summed first, as the immediate update does). ``to_numpy`` refuses a tracker with records not yet
folded.

The config, the columns and their layout, and ``to_numpy`` are in ``gdc.tracker_state``; this module re-exports them,
so ``gdc.tracker`` is the whole tracker API.
"""

import jax
import jax.numpy as jnp

from gdc import sharding
from gdc.forgetting import CRITERIA, transition
from gdc.sharding import DATA
from gdc.tracker_state import (
    COLUMNS,
    FLOAT_COLUMNS,
    PENDING_COLUMNS,
    RECORD_WIDTH,
    SHARDINGS,
    ExampleTracker,
    TrackerConfig,
    defers,
    epoch_losses,
    from_bits,
    pending_copies,
    record_slots,
    to_bits,
    to_numpy,
)

__all__ = [
    "COLUMNS",
    "CRITERIA",
    "FLOAT_COLUMNS",
    "PENDING_COLUMNS",
    "SHARDINGS",
    "ExampleTracker",
    "TrackerConfig",
    "defers",
    "epoch_losses",
    "fold",
    "pending_copies",
    "record_slots",
    "to_numpy",
    "update",
    "update_spans",
]


def update(
    tracker: ExampleTracker,
    idx_B: jax.Array,
    loss_B: jax.Array,
    acc_B: jax.Array,
    mask_B: jax.Array,
    step: jax.Array,
    epoch: jax.Array,
    cfg: TrackerConfig,
    unique: bool = False,
    mesh: jax.sharding.Mesh | None = None,
    local: bool = False,
    occ_B: jax.Array | None = None,
) -> ExampleTracker:
    """Folds one batch of per-example losses into the tracker (pure; jit it or call it inside a jitted step).

    Args:
      tracker: current state.
      idx_B: int32 example ids; padding rows carry N.
      loss_B: f32 per-example loss (mean over the example's own valid tokens).
      acc_B: f32 per-example accuracy in [0, 1] (used by the ``accuracy`` criterion).
      mask_B: bool, False on padding.
      step: int32 scalar, the optimizer step that produced these losses.
      epoch: int32 scalar.
      cfg: the learned/forgotten rule and the early window.
      unique: static promise that no id occurs twice among the valid rows (true unless up-sampling is on); skips
        the grouping sort, which is most of the update's cost for small models.
      mesh: with ``cfg.sharding == "data"``, the mesh whose ``data`` axis splits the table's rows. Each device then
        all-gathers the batch's B (id, loss, accuracy, valid) entries, a few hundred bytes, and updates only the
        rows it holds; without it XLA partitions the row gather/scatter itself, exchanging the gathered rows.
      local: static promise (with ``mesh``) that each device's part of the batch only holds ids of the rows that
        device owns (``data.shards`` a multiple of the device count, ``pipeline.tracker_multiple``): then nothing is
        exchanged at all. Rows of other devices would be dropped, so only the engine, which builds its batches that
        way, sets it.
      occ_B: int32 occurrence number of each row's id since the last fold (0 for its first copy; the epoch
        iterator's ``occurrence``), needed by a deferred tracker with ``slots`` > 1 and ignored otherwise.

    A tracker created with ``deferred=True`` only gets the batch's records written into ``tracker.pending`` (a B-row
    scatter, no gather), and its table is left to ``fold``. The caller must fold before an (id, slot) is recorded a
    second time: with one slot no id may repeat in the batch (``unique``) or between two folds; with more, ``occ_B``
    must number the copies 0, 1, ... in the order they were seen, below ``tracker.slots`` (larger ones are dropped).
    With pending copies (``pending_copies``) each device records its own batch rows and nothing is exchanged.

    Returns:
      The updated tracker.
    """
    n = tracker.num_examples
    defer = tracker.pending is not None
    if defer and tracker.slots == 1 and not unique:
        raise ValueError(
            "a deferred tracker with one record slot records each id once between folds, so its update needs "
            "unique=True; for repeated ids create it with slots = the most copies of an id (record_slots) and pass "
            "occ_B."
        )
    if defer and tracker.slots > 1 and occ_B is None:
        raise ValueError(f"a deferred tracker with {tracker.slots} record slots needs occ_B (each row's occurrence).")
    copies = 1 if tracker.pending is None else tracker.pending.shape[0] // tracker.capacity
    sharded = mesh is not None and cfg.sharding == "data" and mesh.shape[DATA] > 1
    if copies > 1 and not (sharded and mesh.shape[DATA] == copies and not local):
        raise ValueError(
            f"a tracker with {copies} pending copies records per device: pass the {copies}-device mesh, "
            "cfg.sharding='data' and local=False (pending_copies)."
        )
    valid_B = mask_B & (idx_B >= 0) & (idx_B < n)
    occ_B = jnp.zeros_like(idx_B) if occ_B is None or not defer else occ_B
    args = (idx_B.astype(jnp.int32), occ_B.astype(jnp.int32), loss_B.astype(jnp.float32), acc_B.astype(jnp.float32))

    def apply(table, pending, idx_B, occ_B, loss_B, acc_B, valid_B, step, epoch):
        if defer:
            return table, _record(pending, idx_B, occ_B, loss_B, acc_B, valid_B, step, epoch)
        return _update_rows(table, idx_B, loss_B, acc_B, valid_B, step, epoch, cfg, unique), pending

    if not sharded:
        table, pending = apply(tracker.table, tracker.pending, *args, valid_B, step, epoch)
    else:

        def per_device(table, pending_RxC, idx_B, occ_B, loss_B, acc_B, valid_B, step, epoch):
            if copies > 1:  # this device's copy of every row: its batch rows go there as they are
                return table, _record(pending_RxC, idx_B, occ_B, loss_B, acc_B, valid_B, step, epoch)
            packed_BxF = jnp.stack([idx_B, occ_B, to_bits(loss_B), to_bits(acc_B), valid_B.astype(jnp.int32)], axis=1)
            if not local:  # tiled all-gather keeps the global batch order: "last occurrence" means the same
                packed_BxF = jax.lax.all_gather(packed_BxF, DATA, tiled=True)
            rows = jax.tree.leaves(table)[0].shape[0]  # this device's rows
            local_B = packed_BxF[:, 0] - jax.lax.axis_index(DATA) * rows
            own_B = (packed_BxF[:, 4] > 0) & (local_B >= 0) & (local_B < rows)
            loss_B, acc_B = from_bits(packed_BxF[:, 2]), from_bits(packed_BxF[:, 3])
            return apply(table, pending_RxC, local_B, packed_BxF[:, 1], loss_B, acc_B, own_B, step, epoch)

        table, pending = jax.shard_map(
            per_device,
            mesh=mesh,
            in_specs=(sharding.SPLIT,) * 7 + (sharding.WHOLE, sharding.WHOLE),
            out_specs=(sharding.SPLIT, sharding.SPLIT),
        )(tracker.table, tracker.pending, *args, valid_B, step, epoch)
    return ExampleTracker(table=table, pending=pending, num_examples=n)


def update_spans(
    span_tracker: ExampleTracker,
    idx_B: jax.Array,
    loss_BxSp: jax.Array,
    acc_BxSp: jax.Array,
    valid_BxSp: jax.Array,
    mask_B: jax.Array,
    step: jax.Array,
    epoch: jax.Array,
    cfg: TrackerConfig,
    unique: bool = False,
    mesh: jax.sharding.Mesh | None = None,
    local: bool = False,
    occ_B: jax.Array | None = None,
) -> ExampleTracker:
    """``update`` of a span tracker: an ``ExampleTracker`` over N x Sp rows, row ``i * Sp + s - 1`` for span s of
    example i, fed the batch's flattened span losses; a span without a valid token in its example (``valid_BxSp``
    False) or a padding row records nothing. Its capacity is Sp times the example tracker's (``create`` with
    ``multiple_of`` times Sp), so each device's row block holds the spans of its example rows and ``local`` holds for
    both."""
    b, sp = loss_BxSp.shape
    rows_BxSp = idx_B.astype(jnp.int32)[:, None] * sp + jnp.arange(sp, dtype=jnp.int32)[None, :]
    occ = None if occ_B is None else jnp.broadcast_to(occ_B[:, None], (b, sp)).reshape(-1)
    valid = (mask_B[:, None] & valid_BxSp).reshape(-1)
    flat = (rows_BxSp.reshape(-1), loss_BxSp.reshape(-1), acc_BxSp.reshape(-1), valid)
    return update(span_tracker, *flat, step, epoch, cfg, unique=unique, mesh=mesh, local=local, occ_B=occ)


def _record(pending, idx_B, occ_B, loss_B, acc_B, valid_B, step, epoch) -> jax.Array:
    """Writes the batch's records into their (all-zero) pending slots: a scatter-add, which equals a set on zeros
    and is faster on CPU; rows where ``valid_B`` is False, or whose slot ``occ_B`` is out of range, are dropped."""
    rows, width = pending.shape
    b = idx_B.shape[0]
    full = lambda x: jnp.broadcast_to(jnp.asarray(x, jnp.int32), (b,))  # noqa: E731
    rec_BxC = jnp.stack([to_bits(loss_B), to_bits(acc_B), full(step + 1), full(epoch)], axis=1)
    row_B = jnp.where(valid_B, idx_B, rows)
    if width == RECORD_WIDTH:  # one slot: a plain B-row scatter
        return pending.at[row_B].add(rec_BxC, mode="drop")
    slotted = pending.reshape(rows, width // RECORD_WIDTH, RECORD_WIDTH).at[row_B, occ_B].add(rec_BxC, mode="drop")
    return slotted.reshape(rows, width)


def fold(tracker: ExampleTracker, cfg: TrackerConfig) -> ExampleTracker:
    """Folds the pending records of deferred updates into the table and clears them (pure; jit it with donation).

    Elementwise over the rows, so with one pending copy it needs no exchange under any sharding; per-device copies
    are summed first (one reduce-scatter of the records per fold). Record slots are folded in order, one
    observation each; early losses of consecutive slots with the same step (copies of an id in one batch) are summed
    before they are added, in the order and rounding of the immediate update's per-batch sums. A tracker without
    records comes back unchanged.
    """
    if tracker.pending is None:
        return tracker
    pending = tracker.pending
    cap = tracker.capacity
    copies = pending.shape[0] // cap
    if copies > 1:  # each record was written in one copy, zeros in the others (a reduce-scatter under sharding)
        pending = pending.reshape(copies, cap, -1).sum(0)
    old = dict(zip(COLUMNS, tracker.table, strict=True))
    cur = dict(old)
    total_R = from_bits(old["loss_sum_early"])  # early losses of the batches already folded in
    run_R, run_step_R = jnp.zeros_like(total_R), jnp.full((cap,), -1, jnp.int32)  # the current batch's early losses
    for s in range(tracker.slots):
        rec = pending[:, s * RECORD_WIDTH : (s + 1) * RECORD_WIDTH]
        valid_R = rec[:, 2] > 0
        loss_R, acc_R = from_bits(rec[:, 0]), from_bits(rec[:, 1])
        step_R, epoch_R = rec[:, 2] - 1, rec[:, 3]
        early_R = valid_R & (epoch_R < cfg.early_epochs)
        counts = (valid_R.astype(jnp.int32), early_R.astype(jnp.int32), jnp.zeros_like(loss_R))
        new = _observe(cur, loss_R, acc_R, *counts, step_R, epoch_R, cfg)
        cur = {c: jnp.where(valid_R, new[c], cur[c]) for c in COLUMNS}
        next_batch_R = early_R & (step_R != run_step_R)
        total_R = jnp.where(next_batch_R, total_R + run_R, total_R)
        run_R = jnp.where(early_R, jnp.where(next_batch_R, 0.0, run_R) + loss_R, run_R)
        run_step_R = jnp.where(early_R, step_R, run_step_R)
    cur["loss_sum_early"] = to_bits(total_R + run_R)
    table = tuple(cur[c] for c in COLUMNS)
    return ExampleTracker(table=table, pending=jnp.zeros_like(tracker.pending), num_examples=tracker.num_examples)


def _update_rows(table, idx_B, loss_B, acc_B, valid_B, step, epoch, cfg: TrackerConfig, unique: bool) -> jax.Array:
    """The immediate update on a packed table whose rows are indexed by ``idx_B`` (rows where ``valid_B`` is False
    are not touched)."""
    cap, b = table.shape[0], idx_B.shape[0]
    early_B = valid_B & (epoch < cfg.early_epochs)
    if unique:
        last_B, count_B, early_count_B = valid_B, valid_B.astype(jnp.int32), early_B.astype(jnp.int32)
        early_sum_B = jnp.where(early_B, loss_B, 0.0)
    else:
        # Work in id-sorted order. The sort is stable, so inside a group of equal ids the batch order is kept and
        # the group's last entry is the id's last occurrence; per-group sums give the counts of repeated ids.
        order_B = jnp.argsort(jnp.where(valid_B, idx_B, cap), stable=True)
        idx_B, valid_B, early_B = idx_B[order_B], valid_B[order_B], early_B[order_B]
        loss_B, acc_B = loss_B[order_B], acc_B[order_B]
        key_B = jnp.where(valid_B, idx_B, cap)
        change_B = key_B[1:] != key_B[:-1]
        group_B = jnp.cumsum(jnp.concatenate([jnp.zeros((1,), jnp.int32), change_B.astype(jnp.int32)]))
        last_B = jnp.concatenate([change_B, jnp.ones((1,), jnp.bool_)]) & valid_B
        count_B = jax.ops.segment_sum(valid_B.astype(jnp.int32), group_B, num_segments=b)[group_B]
        early_count_B = jax.ops.segment_sum(early_B.astype(jnp.int32), group_B, num_segments=b)[group_B]
        early_sum_B = jax.ops.segment_sum(jnp.where(early_B, loss_B, 0.0), group_B, num_segments=b)[group_B]

    rows_BxF = table[jnp.clip(idx_B, 0, cap - 1)]  # gathers clamp; rows are only written under last_B.
    old = {c: rows_BxF[:, i] for i, c in enumerate(COLUMNS)}
    new = _observe(old, loss_B, acc_B, count_B, early_count_B, early_sum_B, step, epoch, cfg)
    new_BxF = jnp.stack([new[c] for c in COLUMNS], axis=1)
    # Written as a scatter-add of (new - old), which XLA runs much faster than a scatter-set on CPU. int32 addition
    # wraps, so old + (new - old) == new bit for bit, the bit-cast f32 columns included.
    return table.at[jnp.where(last_B, idx_B, cap)].add(new_BxF - rows_BxF, mode="drop")


def _observe(old, loss_B, acc_B, count_B, early_count_B, early_sum_B, step, epoch, cfg) -> dict[str, jax.Array]:
    """The columns ``old`` after one observation each (``step``, ``epoch``: scalars or per row); counts may exceed
    one (repeated ids of one batch)."""
    b = loss_B.shape[0]
    prev_B = old["learned"] > 0
    learned_B, learn_ev_B, forget_ev_B = transition(
        prev_B,
        loss_B,
        cfg.eps_low,
        cfg.eps_high,
        criterion=cfg.criterion,
        acc=acc_B,
        acc_learn=cfg.acc_learn,
        acc_forget=cfg.acc_forget,
    )
    first_B = old["first_learned_step"]
    new = {
        "seen": old["seen"] + count_B,
        "loss_sum_early": to_bits(from_bits(old["loss_sum_early"]) + early_sum_B),
        "count_early": old["count_early"] + early_count_B,
        "last_loss": to_bits(loss_B),
        "last_epoch": jnp.broadcast_to(jnp.asarray(epoch, jnp.int32), (b,)),
        "learned": learned_B.astype(jnp.int32),
        "learn": old["learn"] + learn_ev_B.astype(jnp.int32),
        "forget": old["forget"] + forget_ev_B.astype(jnp.int32),
        "first_learned_step": jnp.where(learn_ev_B & (first_B < 0), jnp.asarray(step, jnp.int32), first_B),
    }
    return new
