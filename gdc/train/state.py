"""Train state and optimizer construction."""

import dataclasses
import numbers

import flax.struct
import jax
import jax.numpy as jnp
import optax

from gdc.errors import ConfigError
from gdc.types import PyTree

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "wsd")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 64  # global; must divide by the device count
    num_epochs: int = 10
    total_steps: int = 0  # > 0: train exactly this many steps (token-matched retrains); num_epochs is then ignored
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    schedule: str = "constant"  # wsd: warmup, stable, then linear decay to 0 over the last decay_fraction of steps
    warmup_steps: int = 0
    decay_fraction: float = 0.25
    weight_decay: float = 0.0
    momentum: float = 0.9  # sgd only
    grad_clip: float = 0.0  # global-norm clip; 0 disables
    keep_idx_path: str = ""  # .npy of kept example ids (pruning); "" keeps all
    weights_path: str = ""  # .npy [N] per-example loss weights (down-weighting); "" gives no "weight" key
    multiplicity_path: str = ""  # .npy [N] int visits per epoch (up-sampling); "" means 1
    # Steps per jitted call (a scan over batches gathered on the device, or over a chunk of host batches placed as
    # one); -1: 16, at most an epoch's steps and, with host batches, at most 64 MiB of batches per call.
    steps_per_call: int = -1

    def validate(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"train.batch_size={self.batch_size}: must be >= 1.")
        if self.total_steps < 0:
            raise ConfigError(f"train.total_steps={self.total_steps}: must be >= 0 (0 = num_epochs decides).")
        if self.num_epochs < 1:
            raise ConfigError(f"train.num_epochs={self.num_epochs}: must be >= 1.")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"train.optimizer={self.optimizer!r} is not one of {OPTIMIZERS}.")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"train.schedule={self.schedule!r} is not one of {SCHEDULES}.")
        if not self.learning_rate > 0:
            raise ConfigError(f"train.learning_rate={self.learning_rate}: must be > 0.")
        if not 0.0 <= self.decay_fraction <= 1.0:
            raise ConfigError(f"train.decay_fraction={self.decay_fraction}: must be in [0, 1].")
        per_call = self.steps_per_call
        if not isinstance(per_call, numbers.Integral) or isinstance(per_call, bool) or per_call == 0 or per_call < -1:
            raise ConfigError(
                f"train.steps_per_call={self.steps_per_call}: use -1 (auto) or a count >= 1 of steps per call."
            )
        if self.warmup_steps < 0 or self.grad_clip < 0 or self.weight_decay < 0:
            raise ConfigError("train.warmup_steps, train.grad_clip and train.weight_decay must be >= 0.")


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # int32 scalar: optimizer updates applied so far.
    params: PyTree
    opt_state: PyTree
    key: jax.Array  # raw uint32 [2] key; per-example keys are fold_in(fold_in(key, step), id).


def make_schedule(cfg: TrainConfig, total_steps: int) -> optax.Schedule:
    lr = cfg.learning_rate
    warmup = min(cfg.warmup_steps, total_steps)
    if cfg.schedule == "constant":
        main = optax.constant_schedule(lr)
    elif cfg.schedule == "cosine":
        main = optax.cosine_decay_schedule(lr, max(total_steps - warmup, 1))
    else:
        decay = int(round(cfg.decay_fraction * total_steps))
        stable = max(total_steps - warmup - decay, 0)
        main = optax.join_schedules(
            [optax.constant_schedule(lr), optax.linear_schedule(lr, 0.0, max(decay, 1))], [stable]
        )
    if warmup == 0:
        return main
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup])


def make_optimizer(cfg: TrainConfig, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    schedule = make_schedule(cfg, total_steps)
    if cfg.optimizer == "adam":
        tx = optax.adam(schedule)
    elif cfg.optimizer == "adamw":
        tx = optax.adamw(schedule, weight_decay=cfg.weight_decay)
    else:
        tx = optax.sgd(schedule, momentum=cfg.momentum or None)
    if cfg.grad_clip > 0:
        tx = optax.chain(optax.clip_by_global_norm(cfg.grad_clip), tx)
    return tx, schedule


def create_train_state(params: PyTree, tx: optax.GradientTransformation, seed: int) -> TrainState:
    return TrainState(
        step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), key=jax.random.PRNGKey(seed)
    )
