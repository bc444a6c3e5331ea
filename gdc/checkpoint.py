"""Orbax checkpoints of (train state, tracker, data-iterator position, metadata).

Restores go into abstract targets carrying shardings, so a run resumes on any mesh the config allows.
"""

import dataclasses
import os

import jax
import orbax.checkpoint as ocp

from gdc.errors import ConfigError
from gdc.types import PyTree


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    every_steps: int = 0  # 0: save at the end of every epoch only (and at the end of the run)
    max_to_keep: int = 3
    every_epochs: int = 1  # epoch-end saves only every this many epochs (many short epochs: diffusion on tables)
    # A workdir whose recorded fingerprint (gdc.fingerprint) differs from this config: "refuse" (default) or "ok" to
    # resume anyway, the change then recorded in fingerprint.json.
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
        options = ocp.CheckpointManagerOptions(max_to_keep=cfg.max_to_keep, create=True)
        self.manager = ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "checkpoints")), options=options)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: PyTree, tracker: PyTree, data_state: dict, meta: dict) -> None:
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
        out = self.manager.restore(step, args=ocp.args.Composite(**items))
        return out.state, out.get("tracker"), out.data, out.meta

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
