"""Orbax checkpoints of (train state, tracker, data-iterator position, metadata).

Restores go into abstract targets carrying shardings, so a run resumes on any mesh the config allows.

Faults end cleanly: a write that fails raises ``CheckpointError`` naming the path and errno (directories are created
on the calling thread, so no background thread is left waiting for one); a checkpoint that cannot be read, or whose
state is not finite, is moved to ``checkpoints_unusable/`` with a warning and the previous one is used, and with none
left the error names the directory to delete.
"""

import dataclasses
import errno as errno_lib
import os
import shutil
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from gdc.errors import CheckpointError, ConfigError
from gdc.types import PyTree


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    every_steps: int = 0  # 0: save at the end of every epoch only (and at the end of the run)
    max_to_keep: int = 3
    every_epochs: int = 1  # epoch-end saves only every this many epochs (many short epochs: diffusion on tables)
    # A workdir whose recorded fingerprint (gdc.train.fingerprint) differs from this config: "refuse" (default) or
    # "ok" to resume anyway, the change then recorded in fingerprint.json.
    resume_mismatch: str = "refuse"

    def validate(self) -> None:
        if self.resume_mismatch not in ("refuse", "ok"):
            raise ConfigError(f"checkpoint.resume_mismatch={self.resume_mismatch!r} is not one of ('refuse', 'ok').")
        if self.every_steps < 0:
            raise ConfigError(f"checkpoint.every_steps={self.every_steps}: must be >= 0 (0 = every epoch).")
        if self.every_epochs < 1:
            raise ConfigError(f"checkpoint.every_epochs={self.every_epochs}: must be >= 1 (1 = every epoch).")
        if self.max_to_keep < 1:
            raise ConfigError(f"checkpoint.max_to_keep={self.max_to_keep}: must be >= 1.")


class Checkpointer:
    """A thin wrapper over one ``ocp.CheckpointManager`` at ``workdir/checkpoints``. Use it as a context manager."""

    def __init__(self, workdir: str, cfg: CheckpointConfig):
        # Directories made on the calling thread: made asynchronously, a failure (read-only directory) left Orbax's
        # other save threads waiting 20 minutes for them, and the process could not exit.
        sync_dirs = ocp.options.AsyncOptions(create_directories_asynchronously=False)
        options = ocp.CheckpointManagerOptions(max_to_keep=cfg.max_to_keep, create=True, async_options=sync_dirs)
        self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
        try:
            self.manager = ocp.CheckpointManager(self.directory, options=options)
        except OSError as e:
            raise write_error(self.directory, None, e) from e

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: PyTree, tracker: PyTree, data_state: dict, meta: dict) -> None:
        """Saves asynchronously; a failed write (this one, or the previous one finishing) raises CheckpointError."""
        try:
            self.manager.save(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(state),
                    tracker=ocp.args.StandardSave(tracker),
                    data=ocp.args.JsonSave(data_state),
                    meta=ocp.args.JsonSave(meta),
                ),
                force=True,
            )
        except OSError as e:
            raise write_error(self.directory, step, e) from e

    def restore(
        self, step: int, state_target: PyTree, tracker_target: PyTree | None
    ) -> tuple[PyTree, PyTree | None, dict, dict]:
        """Restores into targets (concrete arrays or ``jax.ShapeDtypeStruct`` with shardings); with
        ``tracker_target`` None the tracker is not read (and None is returned for it)."""
        abstract = lambda tree: jax.tree.map(  # noqa: E731
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree
        )
        items = {
            "state": ocp.args.StandardRestore(abstract(state_target)),
            "data": ocp.args.JsonRestore(),
            "meta": ocp.args.JsonRestore(),
        }
        if tracker_target is not None:
            items["tracker"] = ocp.args.StandardRestore(abstract(tracker_target))
        try:
            out = self.manager.restore(step, args=ocp.args.Composite(**items))
        except ValueError as e:
            if "tree structures do not match" not in str(e):
                raise
            # The optimizer's state has another form (an accepted change of train.grad_clip, optimizer, ...): the
            # parameters, step and key are restored and the optimizer state starts afresh from the target's.
            del items["state"]
            out = self.manager.restore(step, args=ocp.args.Composite(**items))
            part = abstract({"step": state_target.step, "params": state_target.params, "key": state_target.key})
            restore_args = ocp.checkpoint_utils.construct_restore_args(part)
            with ocp.Checkpointer(ocp.PyTreeCheckpointHandler()) as reader:
                got = reader.restore(
                    os.path.join(self.directory, str(step), "state"),
                    args=ocp.args.PyTreeRestore(item=part, restore_args=restore_args, partial_restore=True),
                )
            logging.warning(
                "checkpoint step %d: its optimizer state does not fit the optimizer as now configured; the "
                "parameters are restored and the optimizer state starts afresh.",
                step,
            )
            return state_target.replace(**got), out.get("tracker"), out.data, out.meta
        return out.state, out.get("tracker"), out.data, out.meta

    def restore_latest(
        self, state_target: PyTree, tracker_target: PyTree | None, *, fallback: bool = True
    ) -> tuple[int, PyTree, PyTree | None, dict, dict] | None:
        """``(step, *restore(step, ...))`` of the latest usable checkpoint; None when there is none.

        A checkpoint that cannot be read (truncated or altered files, missing metadata) or whose train state holds
        NaN or Inf is unusable: once an earlier one restores, the unusable ones are moved to
        ``checkpoints_unusable/`` with a warning (kept for inspection, out of the way of the steps that retrain
        them). With none usable, or with several processes, CheckpointError names the directory to delete. Without
        ``fallback`` (reading a finished run's parameters) an unusable latest checkpoint raises CheckpointError.
        """
        steps = sorted(self.manager.all_steps(), reverse=True)
        unusable: list[tuple[int, str]] = []
        for step in steps:
            try:
                out = self.restore(step, state_target, tracker_target)
                if not finite(out[0]):
                    raise ValueError("its train state holds NaN or Inf")
            except Exception as e:  # noqa: BLE001 - any failure to read makes the checkpoint unusable
                first_line = str(e).splitlines()[0][:200] if str(e) else ""  # tensorstore's run to kilobytes
                unusable.append((step, f"{type(e).__name__}: {first_line}"))
                if not fallback:
                    raise CheckpointError(
                        f"checkpoint step {step} in {self.directory} cannot be used ({unusable[0][1]}). Rerun this "
                        "workdir's training command: it sets the checkpoint aside and retrains from the one before."
                    ) from e
                if jax.process_count() > 1:
                    break
                continue
            if unusable:
                self.set_aside(unusable, f"resuming from step {step}")
            return (step, *out)
        if not unusable:
            return None
        step, why = unusable[0]
        raise CheckpointError(
            f"checkpoint step {step} in {self.directory} cannot be used ({why})"
            + (f", nor can steps {[s for s, _ in unusable[1:]]}" if len(unusable) > 1 else "")
            + f". Delete {os.path.join(self.directory, str(step))} to resume from an earlier checkpoint, or delete "
            f"{self.directory} to train from the start."
        )

    def set_aside(self, unusable: list[tuple[int, str]], then: str) -> None:
        """Moves checkpoints ``(step, why)`` to ``checkpoints_unusable/<step>-<time>``, warning with ``then``."""
        self.wait()
        aside = os.path.join(os.path.dirname(self.directory), "checkpoints_unusable")
        if jax.process_index() == 0:
            os.makedirs(aside, exist_ok=True)
            for step, why in unusable:
                dest = os.path.join(aside, f"{step}-{time.strftime('%Y%m%d-%H%M%S')}")
                shutil.move(os.path.join(self.directory, str(step)), dest)
                logging.warning("checkpoint step %d is unusable (%s): moved to %s; %s.", step, why, dest, then)
        self.manager.reload()

    def wait(self) -> None:
        try:
            self.manager.wait_until_finished()
        except OSError as e:
            raise write_error(self.directory, None, e) from e

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self.manager.close()


def write_error(directory: str, step: int | None, e: OSError) -> CheckpointError:
    """The error for a failed checkpoint write: the path, the errno and its name, and what to do."""
    code = f"errno {e.errno} ({errno_lib.errorcode.get(e.errno, '?')})" if e.errno else type(e).__name__
    what = f"checkpoint step {step}" if step is not None else "a checkpoint"
    return CheckpointError(
        f"writing {what} under {directory} failed: {code}: {e.strerror or e} ({e.filename or directory}). Make the "
        "directory writable (or free space) and rerun the same command: it resumes from the latest checkpoint."
    )


@jax.jit
def _all_finite(leaves: list[jax.Array]) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def finite(tree: PyTree) -> bool:
    """Whether every floating-point array of ``tree`` is finite: one compiled program, one scalar fetched (abstract
    leaves, e.g. an optimizer state left as a target, are skipped)."""
    leaves = [
        x
        for x in jax.tree.leaves(tree)
        if isinstance(x, jax.Array | np.ndarray) and jnp.issubdtype(x.dtype, jnp.inexact)
    ]
    return bool(_all_finite(leaves)) if leaves else True
