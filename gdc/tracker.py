"""Per-example training-dynamics tracker: a pytree of ``[N]`` arrays updated inside the jitted step.

Invariants:
  * Statistics are *pre-update*: the loss an example gets in step t is computed with the parameters before step t's
    optimizer update (Toneva-style forget events), unless the loop feeds it fixed-parameter scoring-pass losses.
  * Every write is a masked scatter with ``mode="drop"``: padding rows (``mask`` False, id N) never touch the state.
  * ``step`` and ``epoch`` are traced scalars, so updating never recompiles.
  * If an id appears several times in one update (up-sampling can put two copies in one batch), ``seen`` and the
    early-loss sums count every occurrence, and the state machine and ``last_loss`` take the last occurrence. Copies
    inside one step share parameters and randomness, so their losses are equal and the order does not matter.

The "learned" criterion is a research choice and configurable:
  * ``loss`` (the paper's rule, with hysteresis): an example becomes learned when its loss < ``eps_low`` and is
    forgotten when, while learned, its loss > ``eps_high``. ``eps_low == eps_high`` is the single-threshold rule.
  * ``accuracy``: learned when its accuracy (argmax-correct fraction of its tokens, or 0/1 for a classifier)
    >= ``acc_learn``, forgotten when it later drops below ``acc_forget``. With 1.0/1.0 this is Toneva et al.
Every example starts "not learned", so ``forget_N <= learn_N`` always holds.
"""

import dataclasses
from typing import Self

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from gdc.errors import ConfigError

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
    scoring_passes: int = (
        0  # K fixed-parameter scoring passes per epoch; 0: the tracker reads in-step losses.
    )
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
            raise ConfigError(
                f"tracker.scoring_passes={self.scoring_passes}: must be >= 0 (0 disables them)."
            )


@flax.struct.dataclass
class ExampleTracker:
    """On-device per-example statistics.

    Every array field has length ``capacity`` >= N, a multiple of the device count so that the tracker can be sharded
    over ``data``; slots N..capacity-1 are never written and ``to_numpy`` drops them.
    """

    seen_N: jax.Array  # int32: occurrences processed.
    loss_sum_early_N: jax.Array  # f32: loss summed over epochs < early_epochs (difficulty numerator).
    count_early_N: jax.Array  # int32: occurrences in epochs < early_epochs.
    last_loss_N: jax.Array  # f32: most recent loss (NaN before the first).
    last_epoch_N: jax.Array  # int32: epoch of the most recent loss (-1 before the first).
    learned_N: jax.Array  # bool: current state of the learned/forgotten machine.
    learn_N: jax.Array  # int32: not-learned -> learned transitions.
    forget_N: jax.Array  # int32: learned -> forgotten transitions (forget events).
    first_learned_step_N: jax.Array  # int32: step of the first learn event (-1: never learned).
    num_examples: int = flax.struct.field(pytree_node=False, default=0)

    @classmethod
    def create(cls, num_examples: int, multiple_of: int = 1) -> Self:
        n = -(-num_examples // multiple_of) * multiple_of
        return cls(
            seen_N=jnp.zeros(n, jnp.int32),
            loss_sum_early_N=jnp.zeros(n, jnp.float32),
            count_early_N=jnp.zeros(n, jnp.int32),
            last_loss_N=jnp.full(n, jnp.nan, jnp.float32),
            last_epoch_N=jnp.full(n, -1, jnp.int32),
            learned_N=jnp.zeros(n, jnp.bool_),
            learn_N=jnp.zeros(n, jnp.int32),
            forget_N=jnp.zeros(n, jnp.int32),
            first_learned_step_N=jnp.full(n, -1, jnp.int32),
            num_examples=num_examples,
        )

    @property
    def capacity(self) -> int:
        return self.seen_N.shape[0]


def update(
    tracker: ExampleTracker,
    idx_B: jax.Array,
    loss_B: jax.Array,
    acc_B: jax.Array,
    mask_B: jax.Array,
    step: jax.Array,
    epoch: jax.Array,
    cfg: TrackerConfig,
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

    Returns:
      The updated tracker.
    """
    n = tracker.num_examples
    cap = tracker.capacity  # out of range for every field: mode="drop" discards writes sent there.
    valid_B = mask_B & (idx_B >= 0) & (idx_B < n)
    # Transitions and last-value writes take each id's last occurrence in the batch (see module docstring).
    same_BxB = (idx_B[:, None] == idx_B[None, :]) & valid_B[None, :]
    later_B = jnp.any(jnp.triu(same_BxB, k=1), axis=1)
    last_B = valid_B & ~later_B
    all_idx_B = jnp.where(valid_B, idx_B, cap)
    last_idx_B = jnp.where(last_B, idx_B, cap)
    gather_B = jnp.clip(idx_B, 0, n - 1)  # gathers clamp; results are only used under last_B.

    loss_B = loss_B.astype(jnp.float32)
    early = epoch < cfg.early_epochs
    early_B = valid_B & early
    seen_N = tracker.seen_N.at[all_idx_B].add(1, mode="drop")
    loss_sum_early_N = tracker.loss_sum_early_N.at[all_idx_B].add(
        jnp.where(early_B, loss_B, 0.0), mode="drop"
    )
    count_early_N = tracker.count_early_N.at[all_idx_B].add(early_B.astype(jnp.int32), mode="drop")

    if cfg.criterion == "loss":
        learned_now_B = loss_B < cfg.eps_low
        forgotten_now_B = loss_B > cfg.eps_high
    else:
        learned_now_B = acc_B >= cfg.acc_learn
        forgotten_now_B = acc_B < cfg.acc_forget
    prev_B = tracker.learned_N[gather_B]
    learn_ev_B = last_B & ~prev_B & learned_now_B
    forget_ev_B = last_B & prev_B & forgotten_now_B
    new_learned_B = (prev_B | learn_ev_B) & ~forget_ev_B
    prev_first_B = tracker.first_learned_step_N[gather_B]
    first_B = jnp.where(learn_ev_B & (prev_first_B < 0), step.astype(jnp.int32), prev_first_B)

    return ExampleTracker(
        seen_N=seen_N,
        loss_sum_early_N=loss_sum_early_N,
        count_early_N=count_early_N,
        last_loss_N=tracker.last_loss_N.at[last_idx_B].set(loss_B, mode="drop"),
        last_epoch_N=tracker.last_epoch_N.at[last_idx_B].set(
            jnp.broadcast_to(epoch.astype(jnp.int32), idx_B.shape), mode="drop"
        ),
        learned_N=tracker.learned_N.at[last_idx_B].set(new_learned_B, mode="drop"),
        learn_N=tracker.learn_N.at[last_idx_B].add(learn_ev_B.astype(jnp.int32), mode="drop"),
        forget_N=tracker.forget_N.at[last_idx_B].add(forget_ev_B.astype(jnp.int32), mode="drop"),
        first_learned_step_N=tracker.first_learned_step_N.at[last_idx_B].set(first_B, mode="drop"),
        num_examples=n,
    )


def to_numpy(tracker: ExampleTracker) -> dict[str, np.ndarray]:
    """One device-to-host copy of every ``[N]`` field (capacity padding dropped), keyed by field name."""
    host = jax.device_get(tracker)
    n = tracker.num_examples
    return {
        f.name: np.asarray(getattr(host, f.name))[:n]
        for f in dataclasses.fields(host)
        if f.name.endswith("_N")
    }


def epoch_losses(fields: dict[str, np.ndarray], epoch: int) -> np.ndarray:
    """The ``[N]`` f32 loss of each example in ``epoch`` (NaN where the example was not seen in that epoch)."""
    return np.where(fields["last_epoch_N"] == epoch, fields["last_loss_N"], np.nan).astype(np.float32)
