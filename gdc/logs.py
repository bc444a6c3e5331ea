"""Run logging: ``config.json``, ``metrics.jsonl``, TensorBoard events and a progress bar.

Named ``logs`` rather than ``logging`` so it never shadows the standard library inside the package.
Scalars reach this module already on the host: the loop fetches them one step late, never in the hot path.
"""

import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Callable

import jax
import tqdm

from gdc import jsonio
from gdc.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class LogConfig:
    every_steps: int = 10
    progress: bool = True
    tensorboard: bool = True

    def validate(self) -> None:
        if self.every_steps < 1:
            raise ConfigError(f"log.every_steps={self.every_steps}: must be >= 1.")


class RunLogger:
    """Appends scalars to ``metrics.jsonl`` (and TensorBoard) and drives the progress bar. Process 0 writes."""

    def __init__(self, workdir: str, cfg: LogConfig, *, total_steps: int, start_step: int, batch_size: int):
        self.cfg = cfg
        self.is_writer = jax.process_index() == 0
        path = os.path.join(workdir, "metrics.jsonl")
        if self.is_writer:
            _truncate_after(path, start_step)
        self.metrics_file = open(path, "a") if self.is_writer else None
        self.tb = None
        if cfg.tensorboard and self.is_writer:
            from tensorboardX import SummaryWriter

            self.tb = SummaryWriter(os.path.join(workdir, "tb"))
        self.bar = tqdm.tqdm(
            total=total_steps,
            initial=start_step,
            unit="step",
            dynamic_ncols=True,
            file=sys.stderr,
            disable=not (cfg.progress and self.is_writer),
        )
        self.batch_size = batch_size
        self._t0, self._s0 = time.perf_counter(), start_step

    def write(self, step: int, scalars: dict[str, float], *, to_bar: bool = True) -> None:
        record = {"step": step, **{k: float(v) for k, v in scalars.items()}}
        if self.metrics_file is not None:
            self.metrics_file.write(jsonio.dumps(record, indent=None) + "\n")
            self.metrics_file.flush()
        if self.tb is not None:
            for k, v in scalars.items():
                self.tb.add_scalar(k, float(v), step)
        if to_bar and "loss" in scalars:
            now = time.perf_counter()
            rate = (step - self._s0) * self.batch_size / max(now - self._t0, 1e-9)
            self._t0, self._s0 = now, step
            self.bar.set_postfix(loss=f"{scalars['loss']:.4f}", ex_per_s=f"{rate:,.0f}", refresh=False)

    def advance(self, n: int = 1) -> None:
        self.bar.update(n)

    def close(self) -> None:
        self.bar.close()
        if self.metrics_file is not None:
            self.metrics_file.close()
        if self.tb is not None:
            self.tb.close()


def _truncate_after(path: str, step: int) -> None:
    """Drops records past ``step`` (written after the checkpoint a resumed run restarts from)."""
    if not os.path.exists(path):
        return
    kept = []
    with open(path) as f:
        for line in f:
            try:
                if jsonio.loads(line)["step"] <= step:
                    kept.append(line)
            except (json.JSONDecodeError, KeyError):  # a line cut short by a kill
                continue
    with open(path, "w") as f:
        f.writelines(kept)


def recovery(latest: int | None) -> str:
    """What to do after a non-finite loss or state, given the latest checkpoint's step (None: no checkpoint)."""
    where = f"from checkpoint step {latest}" if latest is not None else "from the start (no checkpoint was kept)"
    return (
        "The checkpoints kept hold finite parameters whose next loss was finite (the state is checked before each is "
        "written; one whose parameters gave this loss is moved to checkpoints_unusable/). Rerun with a lower "
        "--config.train.learning_rate or with --config.train.grad_clip set, adding "
        f"--config.checkpoint.resume_mismatch=ok: it resumes {where} (the optimizer state starts afresh if its form "
        "changes). Or use a new --workdir."
    )


def check_finite(step: int, scalars: dict[str, float], latest: Callable[[], int | None] = lambda: None) -> None:
    """Raises FloatingPointError naming the step if the loss (or any scalar) is NaN or Inf; ``latest()`` gives the
    step of the checkpoint a rerun resumes from."""
    bad = {k: v for k, v in scalars.items() if not math.isfinite(float(v))}
    if bad:
        raise FloatingPointError(f"non-finite training metrics at step {step}: {bad}. {recovery(latest())}")
