"""Faults end cleanly: a failed checkpoint write, a non-finite state or loss, an unusable checkpoint."""

import errno
import glob
import logging
import os
import re
import shutil
import subprocess
import sys
import threading

import jax
import numpy as np
import pytest
from conftest import REPO, tiny_config

from gdc import checkpoint, sharding
from gdc.errors import CheckpointError
from gdc.train import loop

CKPT = dict(every_steps=1, max_to_keep=3, resume_mismatch="ok")


def _mesh():
    return sharding.make_mesh(jax.devices()[:1])


def _kept_steps(workdir: str) -> list[int]:
    return sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())


def _assert_kept_finite(workdir: str, cfg) -> None:
    """Every checkpoint kept restores to a finite state."""
    _, params = loop.build_model(cfg, loop.sources.build_dataset(cfg.data))
    tx, _ = loop.state_lib.make_optimizer(cfg.train, 1)
    state = sharding.put_tree(loop.state_lib.create_train_state(params, tx, cfg.seed), sharding.replicated(_mesh()))
    with checkpoint.Checkpointer(workdir, cfg.checkpoint) as ckpt:
        for step in _kept_steps(workdir):
            assert checkpoint.finite(ckpt.restore(step, state, None)[0]), step


def _no_dac_override() -> list[str]:
    """A command prefix under which a read-only directory is read-only (root ignores permissions otherwise)."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: a read-only directory stays writable")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", "--"]


def test_failed_checkpoint_write_exits_nonzero_with_path_and_errno(tmp_path):
    checkpoints = tmp_path / "w" / "checkpoints"
    checkpoints.mkdir(parents=True)
    checkpoints.chmod(0o555)
    cmd = [*_no_dac_override(), sys.executable, "launch.py", "--config=configs/tiny.py", f"--workdir={tmp_path / 'w'}"]
    try:
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=150)
    except subprocess.TimeoutExpired:
        pytest.fail("a failed checkpoint write left the process hanging")
    finally:
        checkpoints.chmod(0o755)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert f"checkpoint error: writing checkpoint step 6 under {checkpoints} failed: errno 13 (EACCES)" in proc.stderr


def test_failed_background_commit_raises_with_errno_and_leaves_no_thread(tmp_path, monkeypatch):
    from orbax.checkpoint._src.path import atomicity

    async def disk_full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(self._tmp_path))

    monkeypatch.setattr(atomicity.AtomicRenameTemporaryPath, "finalize", disk_full)
    before = {t for t in threading.enumerate() if not t.daemon}
    with pytest.raises(CheckpointError, match=r"failed: errno 28 \(ENOSPC\): No space left on device"):
        loop.train(tiny_config(), str(tmp_path / "w"), mesh=_mesh())
    assert {t for t in threading.enumerate() if not t.daemon} <= before  # nothing left to block the exit


def test_non_finite_state_is_never_checkpointed(tmp_path):
    workdir, mesh = str(tmp_path / "w"), _mesh()
    still = tiny_config(train=dict(optimizer="sgd", learning_rate=1e-30), checkpoint=CKPT)  # parameters at init
    loop.train(still, workdir, mesh=mesh, max_steps=2)
    # sgd at 3e38 on gradients at init: the state after step 3 is inf while its loss was finite.
    blown = tiny_config(train=dict(optimizer="sgd", learning_rate=3e38), checkpoint=CKPT)
    with pytest.raises(FloatingPointError, match=r"after step 3 holds NaN or Inf.*resumes from checkpoint step 2"):
        loop.train(blown, workdir, mesh=mesh)
    assert _kept_steps(workdir) == [1, 2]
    _assert_kept_finite(workdir, blown)


def test_nan_loss_sets_aside_its_checkpoint_and_the_suggested_rerun_works(tmp_path, caplog):
    workdir, mesh = str(tmp_path / "w"), _mesh()
    loop.train(tiny_config(checkpoint=CKPT), workdir, mesh=mesh, max_steps=3)
    # Unclipped sgd at 3e38: the state after step 4 is finite (about 3e38) and step 5's loss is not.
    blown = tiny_config(train=dict(optimizer="sgd", learning_rate=3e38), checkpoint=CKPT)
    with pytest.raises(FloatingPointError, match=r"at step 5: .*resumes from checkpoint step 3 .*starts afresh"):
        loop.train(blown, workdir, mesh=mesh)
    assert _kept_steps(workdir) == [2, 3]  # step 1 evicted by max_to_keep=3 when step 4 was saved
    assert [p.split("-")[0] for p in os.listdir(os.path.join(workdir, "checkpoints_unusable"))] == ["4"]
    _assert_kept_finite(workdir, blown)
    # What the message suggests, here adam clipped (another optimizer state than sgd's): it resumes and finishes.
    with caplog.at_level(logging.WARNING):
        result = loop.train(tiny_config(train=dict(grad_clip=1.0), checkpoint=CKPT), workdir, mesh=mesh)
    assert "checkpoint step 3: its optimizer state does not fit" in caplog.text
    assert int(result.state.step) == 18 and checkpoint.finite(result.state)


def test_restore_into_another_optimizer_keeps_the_parameters(tmp_path):
    workdir, mesh = str(tmp_path / "w"), _mesh()
    plain = loop.train(tiny_config(), workdir, mesh=mesh, max_steps=6)
    clipped = tiny_config(train=dict(grad_clip=1.0))
    _, params = loop.build_model(clipped, loop.sources.build_dataset(clipped.data))
    tx, _ = loop.state_lib.make_optimizer(clipped.train, 1)
    target = sharding.put_tree(loop.state_lib.create_train_state(params, tx, 0), sharding.replicated(mesh))
    with checkpoint.Checkpointer(workdir, clipped.checkpoint) as ckpt:
        state, _, data, _ = ckpt.restore(6, target, None)
    assert int(state.step) == 6 and data["epoch"] == 0
    assert jax.tree.structure(state.opt_state) == jax.tree.structure(target.opt_state)
    for got, want in zip(jax.tree.leaves(state.params), jax.tree.leaves(plain.state.params), strict=True):
        np.testing.assert_array_equal(got, want)
    # The same through restore_params' abstract targets (scoring and evaluation read a run this way).
    _, params, _, step = loop.restore_params(clipped, workdir, mesh)
    assert step == 6
    for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(plain.state.params), strict=True):
        np.testing.assert_array_equal(got, want)


def _flip(path: str) -> None:
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0x10
    open(path, "wb").write(bytes(data))


def _truncate(path: str) -> None:
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])


CORRUPTIONS = {  # how, and which files of a checkpoint step's directory
    "bit_flip": (_flip, "state/d/*"),
    "truncated": (_truncate, "state/d/*"),
    "missing_array_metadata": (os.remove, "state/_METADATA"),
    "missing_json_metadata": (os.remove, "meta/metadata"),
}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished tiny run (checkpoints 12 and 18) and its final parameters."""
    workdir = str(tmp_path_factory.mktemp("finished") / "w")
    result = loop.train(tiny_config(), workdir, mesh=_mesh())
    assert _kept_steps(workdir) == [12, 18]
    return workdir, jax.device_get(result.state.params)


def _corrupt(workdir: str, step: int, kind: str) -> None:
    how, pattern = CORRUPTIONS[kind]
    paths = glob.glob(os.path.join(workdir, "checkpoints", str(step), pattern))
    assert paths
    for path in paths:
        how(path)


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_unusable_latest_checkpoint_falls_back_to_the_previous(finished, tmp_path, kind, caplog):
    source, params = finished
    workdir = str(tmp_path / "w")
    shutil.copytree(source, workdir)
    _corrupt(workdir, 18, kind)
    # A finished run's parameters are not silently replaced by an earlier step's.
    with pytest.raises(CheckpointError, match="checkpoint step 18 .* Rerun this workdir's training command"):
        loop.restore_params(tiny_config(), workdir, _mesh())
    with caplog.at_level(logging.WARNING):
        result = loop.train(tiny_config(), workdir, mesh=_mesh())
    assert re.search(
        r"checkpoint step 18 is unusable .* moved to .*checkpoints_unusable.*resuming from step 12", caplog.text
    )
    assert _kept_steps(workdir) == [12, 18]
    for got, want in zip(jax.tree.leaves(result.state.params), jax.tree.leaves(params), strict=True):
        np.testing.assert_array_equal(got, want)  # steps 13..18 retrained exactly


def test_no_usable_checkpoint_stops_with_the_directory_to_delete(finished, tmp_path):
    workdir = str(tmp_path / "w")
    shutil.copytree(finished[0], workdir)
    _corrupt(workdir, 18, "truncated")
    _corrupt(workdir, 12, "bit_flip")
    ckpts = os.path.join(workdir, "checkpoints")
    want = rf"checkpoint step 18 in {ckpts} cannot be used .*nor can steps \[12\]\. Delete {ckpts}/18 .*delete {ckpts} "
    with pytest.raises(CheckpointError, match=want):
        loop.train(tiny_config(), workdir, mesh=_mesh())
    assert _kept_steps(workdir) == [12, 18]  # nothing moved or deleted
