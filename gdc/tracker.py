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

The "learned" criterion is a research choice and configurable:
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
"""

import dataclasses
from typing import Self

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from gdc.errors import ConfigError
from gdc.sharding import DATA, to_host

CRITERIA = ("loss", "accuracy")
SHARDINGS = ("replicated", "data")


@dataclasses.dataclass(frozen=True)
class TrackerConfig:
    """How forget events are counted and where the tracker lives."""

    criterion: str = "loss"
    eps_low: float = 1.0
    eps_high: float = 1.0
    acc_learn: float = 1.0
    acc_forget: float = 1.0
    early_epochs: int = 1
    sharding: str = "replicated"
    scoring_passes: int = 0  # K fixed-parameter scoring passes per epoch; 0: the tracker reads in-step losses.
    defer: bool = True  # record per step, fold once per epoch (``defers``); False: update the table every step.
    enabled: bool = True  # False only for overhead benchmarks: the step then skips the update.

    def validate(self) -> None:
        if self.criterion not in CRITERIA:
            raise ConfigError(f"tracker.criterion={self.criterion!r} is not one of {CRITERIA}.")
        if not self.eps_low <= self.eps_high:
            raise ConfigError(
                f"tracker.eps_low={self.eps_low} > tracker.eps_high={self.eps_high}: hysteresis needs "
                "eps_low <= eps_high (set them equal for the single-threshold rule)."
            )
        if not 0.0 <= self.acc_forget <= self.acc_learn <= 1.0:
            raise ConfigError(
                f"tracker.acc_forget={self.acc_forget}, tracker.acc_learn={self.acc_learn}: need "
                "0 <= acc_forget <= acc_learn <= 1."
            )
        if self.early_epochs < 1:
            raise ConfigError(f"tracker.early_epochs={self.early_epochs}: must be >= 1.")
        if self.sharding not in SHARDINGS:
            raise ConfigError(f"tracker.sharding={self.sharding!r} is not one of {SHARDINGS}.")
        if self.scoring_passes < 0:
            raise ConfigError(f"tracker.scoring_passes={self.scoring_passes}: must be >= 0 (0 disables them).")


# One int32 column per statistic (f32 columns are stored bit-cast). The immediate layout packs them into one row per
# example, so a batch costs one gather and one scatter of B rows: at N = 1e6 nine separate [N] arrays meant nine
# cache misses per example (3x the time). The deferred layout keeps nine columns, which the fold streams.
COLUMNS = (
    "seen",  # occurrences processed.
    "loss_sum_early",  # f32: loss summed over epochs < early_epochs (difficulty numerator).
    "count_early",  # occurrences in epochs < early_epochs.
    "last_loss",  # f32: most recent loss (NaN before the first).
    "last_epoch",  # epoch of the most recent loss (-1 before the first).
    "learned",  # 0/1: current state of the learned/forgotten machine.
    "learn",  # not-learned -> learned transitions.
    "forget",  # learned -> forgotten transitions (forget events).
    "first_learned_step",  # step of the first learn event (-1: never learned).
)
FLOAT_COLUMNS = ("loss_sum_early", "last_loss")
_COL = {name: i for i, name in enumerate(COLUMNS)}
_INITIAL = {"last_loss": float("nan"), "last_epoch": -1, "first_learned_step": -1}
# A deferred update's record, one per (example, slot): loss and accuracy (bit-cast f32), step + 1 (0: no record),
# epoch. A pending row holds ``slots`` records side by side, slot-major.
PENDING_COLUMNS = ("loss", "accuracy", "step_plus_one", "epoch")
_NP = len(PENDING_COLUMNS)


def pending_copies(cfg: TrackerConfig, num_devices: int, local: bool) -> int:
    """Copies of the pending rows a deferred tracker needs: one per device when it is sharded over ``data`` and the
    batches are not aligned with its row blocks (``local`` False), else one."""
    return num_devices if cfg.sharding == "data" and not local and num_devices > 1 else 1


def defers(cfg: TrackerConfig) -> bool:
    """Whether the engine records and folds (``fold``) rather than updating the table every step."""
    return cfg.enabled and cfg.defer


def record_slots(cfg: TrackerConfig, max_occurrences: int) -> int:
    """Record slots per pending row: the most times an id occurs in an epoch's training steps (up-sampling), or one
    when scoring passes feed the tracker (a pass visits each id once, and the loop folds after each)."""
    return 1 if cfg.scoring_passes > 0 else max(1, max_occurrences)


def _to_bits(x: jax.Array) -> jax.Array:
    return jax.lax.bitcast_convert_type(x.astype(jnp.float32), jnp.int32)


def _from_bits(x: jax.Array) -> jax.Array:
    return jax.lax.bitcast_convert_type(x, jnp.float32)


@flax.struct.dataclass
class ExampleTracker:
    """On-device per-example statistics, in one of two layouts.

    * Immediate (``deferred=False``): ``table`` is int32 ``[capacity, len(COLUMNS)]``, one packed row per example,
      so that a step's update gathers and scatters B rows; ``pending`` is None.
    * Deferred: ``table`` is a tuple of ``len(COLUMNS)`` int32 ``[capacity]`` columns, which ``fold`` streams
      (a fold over packed rows is several times slower on CPU: XLA rebuilds the rows element by element), and
      ``pending`` is int32 ``[copies * capacity, slots * len(PENDING_COLUMNS)]``, the records not yet folded (all
      zero after ``fold``), one packed row per example so that a step writes B rows; slot s holds the record of the
      id's occurrence s since the last fold (``slots`` > 1 only for up-sampled runs). With ``copies`` > 1 device k's
      block is its private copy of every example's row: it records the rows of its own part of each batch, nothing
      crosses devices per step, and the fold sums the copies (each id has one record per fold).

    ``capacity`` >= N is a multiple of the device count so that rows can be sharded over ``data``; rows
    N..capacity-1 are never written and ``to_numpy`` drops them. Read a column as ``tracker.column("forget")`` (or
    the ``*_N`` properties).
    """

    table: jax.Array | tuple[jax.Array, ...]
    pending: jax.Array | None
    num_examples: int = flax.struct.field(pytree_node=False, default=0)

    @classmethod
    def create(
        cls, num_examples: int, multiple_of: int = 1, deferred: bool = False, copies: int = 1, slots: int = 1
    ) -> Self:
        """``copies``: pending copies of every row (``pending_copies``): one per device for a ``data``-sharded
        tracker whose batches are not aligned with its rows, so that each device records its own batch rows.
        ``slots``: records per pending row, the most times an id is recorded between two folds (``record_slots``)."""
        cap = -(-num_examples // multiple_of) * multiple_of
        row = [
            _to_bits(jnp.float32(_INITIAL.get(c, 0.0))) if c in FLOAT_COLUMNS else jnp.int32(_INITIAL.get(c, 0))
            for c in COLUMNS
        ]
        if deferred:
            table = tuple(jnp.full((cap,), x) for x in row)
            pending = jnp.zeros((copies * cap, slots * _NP), jnp.int32)
            return cls(table=table, pending=pending, num_examples=num_examples)
        return cls(table=jnp.tile(jnp.stack(row)[None], (cap, 1)), pending=None, num_examples=num_examples)

    @property
    def slots(self) -> int:
        """Record slots per pending row (1 for an immediate tracker)."""
        return 1 if self.pending is None else self.pending.shape[1] // _NP

    @property
    def capacity(self) -> int:
        return self.table[0].shape[0] if isinstance(self.table, tuple) else self.table.shape[0]

    def column(self, name: str) -> jax.Array:
        """The column's current values (records still pending are not in it: ``fold`` first)."""
        col = self.table[_COL[name]] if isinstance(self.table, tuple) else self.table[:, _COL[name]]
        if name in FLOAT_COLUMNS:
            return _from_bits(col)
        return col.astype(jnp.bool_) if name == "learned" else col

    seen_N = property(lambda self: self.column("seen"))
    loss_sum_early_N = property(lambda self: self.column("loss_sum_early"))
    count_early_N = property(lambda self: self.column("count_early"))
    last_loss_N = property(lambda self: self.column("last_loss"))
    last_epoch_N = property(lambda self: self.column("last_epoch"))
    learned_N = property(lambda self: self.column("learned"))
    learn_N = property(lambda self: self.column("learn"))
    forget_N = property(lambda self: self.column("forget"))
    first_learned_step_N = property(lambda self: self.column("first_learned_step"))


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
            packed_BxF = jnp.stack([idx_B, occ_B, _to_bits(loss_B), _to_bits(acc_B), valid_B.astype(jnp.int32)], axis=1)
            if not local:  # tiled all-gather keeps the global batch order: "last occurrence" means the same
                packed_BxF = jax.lax.all_gather(packed_BxF, DATA, tiled=True)
            rows = jax.tree.leaves(table)[0].shape[0]  # this device's rows
            local_B = packed_BxF[:, 0] - jax.lax.axis_index(DATA) * rows
            own_B = (packed_BxF[:, 4] > 0) & (local_B >= 0) & (local_B < rows)
            loss_B, acc_B = _from_bits(packed_BxF[:, 2]), _from_bits(packed_BxF[:, 3])
            return apply(table, pending_RxC, local_B, packed_BxF[:, 1], loss_B, acc_B, own_B, step, epoch)

        table, pending = jax.shard_map(
            per_device,
            mesh=mesh,
            in_specs=(P(DATA),) * 7 + (P(), P()),
            out_specs=(P(DATA), P(DATA)),
        )(tracker.table, tracker.pending, *args, valid_B, step, epoch)
    return ExampleTracker(table=table, pending=pending, num_examples=n)


def _record(pending, idx_B, occ_B, loss_B, acc_B, valid_B, step, epoch) -> jax.Array:
    """Writes the batch's records into their (all-zero) pending slots: a scatter-add, which equals a set on zeros
    and is faster on CPU; rows where ``valid_B`` is False, or whose slot ``occ_B`` is out of range, are dropped."""
    rows, width = pending.shape
    b = idx_B.shape[0]
    full = lambda x: jnp.broadcast_to(jnp.asarray(x, jnp.int32), (b,))  # noqa: E731
    rec_BxC = jnp.stack([_to_bits(loss_B), _to_bits(acc_B), full(step + 1), full(epoch)], axis=1)
    row_B = jnp.where(valid_B, idx_B, rows)
    if width == _NP:  # one slot: a plain B-row scatter
        return pending.at[row_B].add(rec_BxC, mode="drop")
    slotted = pending.reshape(rows, width // _NP, _NP).at[row_B, occ_B].add(rec_BxC, mode="drop")
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
    total_R = _from_bits(old["loss_sum_early"])  # early losses of the batches already folded in
    run_R, run_step_R = jnp.zeros_like(total_R), jnp.full((cap,), -1, jnp.int32)  # the current batch's early losses
    for s in range(tracker.slots):
        rec = pending[:, s * _NP : (s + 1) * _NP]
        valid_R = rec[:, 2] > 0
        loss_R, acc_R = _from_bits(rec[:, 0]), _from_bits(rec[:, 1])
        step_R, epoch_R = rec[:, 2] - 1, rec[:, 3]
        early_R = valid_R & (epoch_R < cfg.early_epochs)
        counts = (valid_R.astype(jnp.int32), early_R.astype(jnp.int32), jnp.zeros_like(loss_R))
        new = _transition(cur, loss_R, acc_R, *counts, step_R, epoch_R, cfg)
        cur = {c: jnp.where(valid_R, new[c], cur[c]) for c in COLUMNS}
        next_batch_R = early_R & (step_R != run_step_R)
        total_R = jnp.where(next_batch_R, total_R + run_R, total_R)
        run_R = jnp.where(early_R, jnp.where(next_batch_R, 0.0, run_R) + loss_R, run_R)
        run_step_R = jnp.where(early_R, step_R, run_step_R)
    cur["loss_sum_early"] = _to_bits(total_R + run_R)
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
    new = _transition(old, loss_B, acc_B, count_B, early_count_B, early_sum_B, step, epoch, cfg)
    new_BxF = jnp.stack([new[c] for c in COLUMNS], axis=1)
    # Written as a scatter-add of (new - old), which XLA runs much faster than a scatter-set on CPU. int32 addition
    # wraps, so old + (new - old) == new bit for bit, the bit-cast f32 columns included.
    return table.at[jnp.where(last_B, idx_B, cap)].add(new_BxF - rows_BxF, mode="drop")


def _transition(old, loss_B, acc_B, count_B, early_count_B, early_sum_B, step, epoch, cfg) -> dict[str, jax.Array]:
    """The columns ``old`` after one observation each (``step``, ``epoch``: scalars or per row); counts may exceed
    one (repeated ids of one batch)."""
    b = loss_B.shape[0]
    if cfg.criterion == "loss":
        learned_now_B = loss_B < cfg.eps_low
        forgotten_now_B = loss_B > cfg.eps_high
    else:
        learned_now_B = acc_B >= cfg.acc_learn
        forgotten_now_B = acc_B < cfg.acc_forget
    prev_B = old["learned"] > 0
    learn_ev_B = ~prev_B & learned_now_B
    forget_ev_B = prev_B & forgotten_now_B
    first_B = old["first_learned_step"]
    new = {
        "seen": old["seen"] + count_B,
        "loss_sum_early": _to_bits(_from_bits(old["loss_sum_early"]) + early_sum_B),
        "count_early": old["count_early"] + early_count_B,
        "last_loss": _to_bits(loss_B),
        "last_epoch": jnp.broadcast_to(jnp.asarray(epoch, jnp.int32), (b,)),
        "learned": ((prev_B | learn_ev_B) & ~forget_ev_B).astype(jnp.int32),
        "learn": old["learn"] + learn_ev_B.astype(jnp.int32),
        "forget": old["forget"] + forget_ev_B.astype(jnp.int32),
        "first_learned_step": jnp.where(learn_ev_B & (first_B < 0), jnp.asarray(step, jnp.int32), first_B),
    }
    return new


def to_numpy(tracker: ExampleTracker) -> dict[str, np.ndarray]:
    """One device-to-host copy of the table, as ``{"seen_N": ..., "forget_N": ..., ...}`` (padding rows dropped).

    With several processes and a sharded tracker every process must call it (the rows are all-gathered).
    """
    if tracker.pending is not None and to_host(_any_pending(tracker.pending)):
        raise ValueError(
            "the tracker holds deferred records not yet folded: call gdc.tracker.fold(tracker, cfg) first."
        )
    if isinstance(tracker.table, tuple):
        cols = [to_host(c)[: tracker.num_examples] for c in tracker.table]
    else:
        table = to_host(tracker.table)[: tracker.num_examples]
        cols = [np.ascontiguousarray(table[:, i]) for i in range(len(COLUMNS))]
    out = {}
    for c, col in zip(COLUMNS, cols, strict=True):
        out[f"{c}_N"] = col.view(np.float32) if c in FLOAT_COLUMNS else col.astype(bool) if c == "learned" else col
    return out


@jax.jit
def _any_pending(pending: jax.Array) -> jax.Array:
    return jnp.any(pending[:, 2::_NP] != 0)  # the step + 1 of every slot


def epoch_losses(fields: dict[str, np.ndarray], epoch: int) -> np.ndarray:
    """The ``[N]`` f32 loss of each example in ``epoch`` (NaN where the example was not seen in that epoch)."""
    return np.where(fields["last_epoch_N"] == epoch, fields["last_loss_N"], np.nan).astype(np.float32)
