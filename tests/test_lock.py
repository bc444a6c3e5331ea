"""gdc.lock: one writer per workdir, released when the holder exits or dies."""

import os
import signal
import socket
import subprocess
import sys
import time

import jax
import pytest
from conftest import REPO, tiny_config

from gdc import lock
from gdc.errors import ConfigError
from gdc.studies.carto import study
from gdc.train import loop

HOLDER = """
import sys, time
from gdc import lock
with lock.hold(sys.argv[1]):
    print("held", flush=True)
    time.sleep(120)
"""


@pytest.fixture
def holder(tmp_path):
    """Another process holding tmp_path/"w"'s lock; yields it (killed at the end)."""
    workdir = tmp_path / "w"
    env = {**os.environ, "PYTHONPATH": REPO}
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(workdir)], stdout=subprocess.PIPE, text=True, env=env, cwd=REPO
    )
    assert proc.stdout.readline().strip() == "held"
    yield proc, workdir
    proc.kill()
    proc.wait()


def _no_jit(*a, **k):
    raise AssertionError("jax.jit was called although the workdir was locked")


def test_second_holder_is_refused_with_pid_and_host(holder):
    proc, workdir = holder
    want = rf"in use by pid {proc.pid} on host {socket.gethostname()} since .*Wait for it to finish"
    with pytest.raises(ConfigError, match=want):
        with lock.hold(str(workdir)):
            pass


def test_training_and_study_refuse_a_locked_workdir_before_compiling(holder, monkeypatch):
    _, workdir = holder
    monkeypatch.setattr(jax, "jit", _no_jit)
    with pytest.raises(ConfigError, match="is in use by pid"):
        loop.train(tiny_config("mlp"), str(workdir))
    with pytest.raises(ConfigError, match="is in use by pid"):
        study.run(tiny_config("mlp"), str(workdir), "train")
    assert not (workdir / "checkpoints").exists() and not (workdir / "seed_0").exists()


def test_lock_is_released_when_the_holder_dies(holder):
    proc, workdir = holder
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with lock.hold(str(workdir)):
        assert lock._held  # now ours
    assert not lock._held


def test_lock_is_reentrant_in_one_process_and_released_after(tmp_path):
    workdir = str(tmp_path)
    with lock.hold(workdir):
        with lock.hold(workdir):  # e.g. --mode=run's launch, then the training loop
            pass
        assert lock._held
    code = "import sys; from gdc import lock\nwith lock.hold(sys.argv[1]): print('ok')"
    out = subprocess.run([sys.executable, "-c", code, workdir], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr
    with lock.hold(workdir, enabled=False):  # processes other than 0 do not take it
        assert not lock._held


@pytest.mark.slow  # ~12 s: two launch.py processes
def test_concurrent_launches_one_refused(tmp_path):
    """Two launch.py runs in one workdir: the second exits 2 naming the first, which goes on training."""
    cmd = [sys.executable, "launch.py", "--config=configs/tiny.py", f"--workdir={tmp_path}"]
    first = subprocess.Popen([*cmd, "--config.train.num_epochs=500"], cwd=REPO, stdout=subprocess.PIPE, text=True)
    for _ in range(600):  # until the first holds the lock
        if os.path.exists(tmp_path / lock.LOCK_FILE) and os.path.getsize(tmp_path / lock.LOCK_FILE):
            break
        time.sleep(0.1)
    second = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert first.poll() is None, "the first run should still be training"
    first.kill()
    first.communicate(timeout=60)
    assert second.returncode == 2 and f"in use by pid {first.pid}" in second.stderr, second.stderr
