"""The same launch.py on JAX's distributed runtime: 2 processes x 4 CPU devices vs 1 process x 8 devices.

Both runs have the same 8-device ("data",) mesh, the same global batches and the same programs; the only difference is
that the 2-process run sums gradients and gathers tracker rows across processes (gloo over localhost) instead of
inside one process. Integer tracker columns must match exactly; float columns and params to rtol 1e-5 / atol 1e-6,
the tolerance of the engine's 1-vs-8-device test: cross-device sums may be added in another order, which moves a
float32 result by a few ulps per step (about 1e-7 relative), far below 1e-5 after the run's 18 steps.
With ``data.shards=2`` each process keeps only the rows of its own half of the ids (per-process data); the batches
are then drawn half from each half, in both runs alike. With ``data.shards=8`` (one range per device) the sharded
tracker also updates without any exchange between devices.
"""

import json
import os
import socket
import subprocess
import sys

import chex
import jax
import numpy as np
import pytest
from conftest import REPO, tiny_config

from gdc import sharding
from gdc.train import loop

OVERRIDES = {"tracker": dict(sharding="data", scoring_passes=1)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _launch_two_processes(
    workdir,
    shards: int = 1,
    extra: tuple[str, ...] = (),
    per_process: dict[int, tuple[str, ...]] | None = None,
    timeout: float = 300,
) -> list[tuple[int, str]]:
    """(returncode, output) of each process; ``per_process[i]``: flags for process i only. Both killed at timeout."""
    port = _free_port()
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
    }
    base = [
        sys.executable,
        "launch.py",
        "--config=configs/tiny.py",
        f"--workdir={workdir}",
        "--config.tracker.sharding=data",
        "--config.tracker.scoring_passes=1",
        f"--config.data.shards={shards}",
        f"--coordinator_address=localhost:{port}",
        "--num_processes=2",
        *extra,
    ]
    procs = [
        subprocess.Popen(
            [*base, *(per_process or {}).get(i, ()), f"--process_id={i}"],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    outs = []
    for p in procs:
        try:
            out, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        outs.append((p.returncode, out))
    return outs


# 8: each process keeps 4 of the 8 ranges, and each device's batch rows are its own tracker rows (no exchange); 1 (every
# process holds every row) and 2 (per-process data with the all-gather update) are in the slow set.
@pytest.mark.parametrize(
    "shards", [pytest.param(1, marks=pytest.mark.slow), pytest.param(2, marks=pytest.mark.slow), 8]
)
def test_two_processes_match_one_process(tmp_path, shards):
    multi, single = tmp_path / "multi", tmp_path / "single"
    outs = _launch_two_processes(multi, shards)
    for i, (rc, out) in enumerate(outs):
        assert rc == 0, f"process {i} failed:\n{out[-4000:]}"
        assert "2 process(es)" in out and "8 cpu device(s)" in out, out[-2000:]

    cfg = tiny_config("mlp", data=dict(shards=shards), **OVERRIDES)
    ref = loop.train(cfg, str(single), mesh=sharding.make_mesh(jax.devices()[:8]))

    # Per-epoch tracker artefacts and scoring-pass losses: written once (process 0), equal to the 1-process run.
    names = sorted(os.listdir(single / "trackers"))
    assert names == sorted(os.listdir(multi / "trackers")) and any("pass_at" in x for x in names)
    for name in names:
        a, b = np.load(multi / "trackers" / name), np.load(single / "trackers" / name)
        for key in a.files if name.endswith(".npz") else [None]:
            x, y = (a[key], b[key]) if key else (a, b)
            if np.issubdtype(y.dtype, np.floating):
                np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6, err_msg=f"{name}:{key}")
            else:
                np.testing.assert_array_equal(x, y, err_msg=f"{name}:{key}")
    # Params (and the whole state) from the Orbax checkpoint the two processes wrote together.
    graphdef, params, _, step = loop.restore_params(cfg, str(multi))
    assert step == int(ref.state.step) > 0
    chex.assert_trees_all_close(jax.device_get(params), jax.device_get(ref.state.params), rtol=1e-5, atol=1e-6)
    # Only process 0 wrote the metrics log: one record per step, in order.
    steps = [json.loads(line)["step"] for line in open(multi / "metrics.jsonl") if '"epoch"' not in line]
    assert steps == list(range(1, int(ref.state.step) + 1))
    summary = json.load(open(multi / "summary.json"))
    np.testing.assert_allclose(summary["loss"], ref.last_metrics["loss"], rtol=1e-5)


@pytest.mark.slow
def test_processes_with_different_configs_are_refused(tmp_path):
    # Process 1 alone gets another split: the fingerprint check finds it before anything is loaded or compiled, and
    # both processes exit (none waits in a collective for the other) with a message naming the field.
    outs = _launch_two_processes(tmp_path / "w", per_process={1: ("--config.data.split_seed=5",)}, timeout=180)
    for i, (rc, out) in enumerate(outs):  # each names the field, its own value and the fix, without a traceback
        message = f"they differ in data.split_seed (process {i} has data.split_seed={5 if i else 0})"
        assert rc == 2 and "config error: the processes were given different configs" in out, out[-4000:]
        assert message in out and "same --config overrides" in out and "Traceback" not in out, out[-4000:]
    assert not (tmp_path / "w" / "fingerprint.json").exists() and not (tmp_path / "w" / "metrics.jsonl").exists()


def test_distributed_flags_go_together(tmp_path):
    cmd = [
        sys.executable,
        "launch.py",
        "--config=configs/tiny.py",
        f"--workdir={tmp_path}",
        "--coordinator_address=localhost:1",
    ]
    out = subprocess.run(cmd, cwd=REPO, env={**os.environ, "XLA_FLAGS": ""}, capture_output=True, text=True)
    assert out.returncode == 2 and "--num_processes" in out.stderr, out.stderr[-2000:]
