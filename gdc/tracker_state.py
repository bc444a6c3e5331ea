"""The tracker's state: its config, the columns it keeps per example and their on-device layout, and reading them
back to the host. The updates that change the state (``update``, ``fold``) are in ``gdc.tracker``, whose docstring
states the invariants; import both through ``gdc.tracker``.
"""

import dataclasses
from typing import Self

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from gdc.errors import ConfigError
from gdc.forgetting import CRITERIA
from gdc.sharding import to_host

SHARDINGS = ("replicated", "data")
# tracker.spans: which spans of each example get a tracker of their own: the secret digits of the canary copies, or
# (unmarked text) the span_k tokens of each sequence whose loss dropped most from epoch 0 to epoch span_warmup.
SPANS = ("none", "canary_secrets", "top_k_drop")


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
    spans: str = "none"  # "canary_secrets": a second tracker over the secret digits of every canary copy.
    span_k: int = 8  # top_k_drop: tokens tracked per sequence, each its own span (Sp = span_k)
    span_warmup: int = 1  # top_k_drop: the drop is epoch 0's token loss minus epoch span_warmup's; tracked after it

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
        if self.spans not in SPANS:
            raise ConfigError(f"tracker.spans={self.spans!r} is not one of {SPANS}.")
        if not 1 <= self.span_k <= 127:  # span ids are int8
            raise ConfigError(f"tracker.span_k={self.span_k}: must lie in 1..127 (tokens tracked per sequence).")
        if self.span_warmup < 1:
            raise ConfigError(f"tracker.span_warmup={self.span_warmup}: must be >= 1 (the drop is from epoch 0).")


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
RECORD_WIDTH = len(PENDING_COLUMNS)


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


def to_bits(x: jax.Array) -> jax.Array:
    """An f32 column's int32 storage (a bit-cast: every value, NaN included, comes back unchanged)."""
    return jax.lax.bitcast_convert_type(x.astype(jnp.float32), jnp.int32)


def from_bits(x: jax.Array) -> jax.Array:
    """The f32 values of a column stored by ``to_bits``."""
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
            to_bits(jnp.float32(_INITIAL.get(c, 0.0))) if c in FLOAT_COLUMNS else jnp.int32(_INITIAL.get(c, 0))
            for c in COLUMNS
        ]
        if deferred:
            table = tuple(jnp.full((cap,), x) for x in row)
            pending = jnp.zeros((copies * cap, slots * RECORD_WIDTH), jnp.int32)
            return cls(table=table, pending=pending, num_examples=num_examples)
        return cls(table=jnp.tile(jnp.stack(row)[None], (cap, 1)), pending=None, num_examples=num_examples)

    @property
    def slots(self) -> int:
        """Record slots per pending row (1 for an immediate tracker)."""
        return 1 if self.pending is None else self.pending.shape[1] // RECORD_WIDTH

    @property
    def capacity(self) -> int:
        return self.table[0].shape[0] if isinstance(self.table, tuple) else self.table.shape[0]

    def column(self, name: str) -> jax.Array:
        """The column's current values (records still pending are not in it: ``fold`` first)."""
        col = self.table[_COL[name]] if isinstance(self.table, tuple) else self.table[:, _COL[name]]
        if name in FLOAT_COLUMNS:
            return from_bits(col)
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
    return jnp.any(pending[:, 2::RECORD_WIDTH] != 0)  # the step + 1 of every slot


def epoch_losses(fields: dict[str, np.ndarray], epoch: int) -> np.ndarray:
    """The ``[N]`` f32 loss of each example in ``epoch`` (NaN where the example was not seen in that epoch)."""
    return np.where(fields["last_epoch_N"] == epoch, fields["last_loss_N"], np.nan).astype(np.float32)
