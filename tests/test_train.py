"""End-to-end engine tests: device-count equivalence, resume, compile-once, NaN, golden values, bad configs."""

import json
import os
import signal
import subprocess
import sys
import time

import chex
import jax
import numpy as np
import pytest
from conftest import REPO, tiny_config

from gdc import models, sharding
from gdc import tracker as tracker_lib
from gdc.data.pipeline import EpochIterator
from gdc.errors import ConfigError
from gdc.studies.carto import config as carto_config
from gdc.train import loop
from gdc.train import step as step_lib


def _run(cfg, workdir, n_devices=8, **kw):
    mesh = sharding.make_mesh(jax.devices()[:n_devices])
    return loop.train(cfg, str(workdir), mesh=mesh, **kw)


def _assert_same(a: loop.TrainResult, b: loop.TrainResult, rtol=1e-5, atol=1e-6):
    chex.assert_trees_all_close(jax.device_get(a.state), jax.device_get(b.state), rtol=rtol, atol=atol)
    ta, tb = tracker_lib.to_numpy(a.tracker), tracker_lib.to_numpy(b.tracker)
    assert ta.keys() == tb.keys()
    for k in ta:
        np.testing.assert_allclose(ta[k], tb[k], rtol=rtol, atol=atol, err_msg=k)


# --------------------------------------------------------------------------------------------------------------
# Equivalence across devices and tracker shardings.
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arg", ["mlp", pytest.param("transformer", marks=pytest.mark.slow)])  # 20 s on 2 cores
def test_one_vs_eight_devices_and_sharded_tracker(tmp_path, arg):
    cfg = tiny_config(arg, train=dict(num_epochs=2))
    one = _run(cfg, tmp_path / "one", n_devices=1)
    eight = _run(cfg, tmp_path / "eight", n_devices=8)
    sharded_cfg = tiny_config(arg, train=dict(num_epochs=2), tracker=dict(sharding="data"))
    sharded = _run(sharded_cfg, tmp_path / "sharded", n_devices=8)
    assert all(x.sharding.spec == jax.sharding.PartitionSpec("data") for x in jax.tree.leaves(sharded.tracker))
    assert int(one.state.step) == int(eight.state.step) > 0
    _assert_same(one, eight)
    _assert_same(eight, sharded)
    for k, v in one.last_metrics.items():
        np.testing.assert_allclose(v, eight.last_metrics[k], rtol=1e-5, err_msg=k)
    # The tracker saw every example once per epoch.
    fields = tracker_lib.to_numpy(eight.tracker)
    np.testing.assert_array_equal(fields["seen_N"], 2)
    assert (fields["forget_N"] <= fields["learn_N"]).all()


def test_epoch_artefacts(tmp_path):
    cfg = tiny_config("mlp", log=dict(tensorboard=True))
    result = _run(cfg, tmp_path)
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path / "tb"))
    n = result.tracker.num_examples
    for e in range(cfg.train.num_epochs):
        z = dict(np.load(tmp_path / "trackers" / f"epoch_{e:04d}.npz"))
        assert z["loss_N"].shape == (n,) and z["loss_N"].dtype == np.float32
        assert np.isfinite(z["loss_N"]).all()
        np.testing.assert_array_equal(z["seen_N"], e + 1)
    final = tracker_lib.to_numpy(result.tracker)
    np.testing.assert_array_equal(final["last_loss_N"], z["loss_N"])
    records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [r["step"] for r in records if "loss" in r] == list(range(1, int(result.state.step) + 1))
    assert any("heldout_loss" in r for r in records)
    assert json.load(open(tmp_path / "config.json"))["model"]["name"] == "mlp"


# chunk 4: the pass's 6 batches run as two calls, the second padded; on_device: rows gathered from the device table.
@pytest.mark.parametrize(("chunk", "on_device"), [(16, 0), (4, 0), (4, 1)])
def test_scoring_passes_feed_the_tracker(tmp_path, monkeypatch, chunk, on_device):
    monkeypatch.setattr(loop, "SCORE_CHUNK", chunk)
    cfg = tiny_config("mlp", tracker=dict(scoring_passes=2), data=dict(on_device=on_device))
    result = _run(cfg, tmp_path)
    fields = tracker_lib.to_numpy(result.tracker)
    # Every example is scored K=2 times per epoch, whatever the training order.
    np.testing.assert_array_equal(fields["seen_N"], 2 * cfg.train.num_epochs)
    passes = sorted(p for p in os.listdir(tmp_path / "trackers") if "pass" in p)
    assert len(passes) == 2 * cfg.train.num_epochs
    last = np.load(tmp_path / "trackers" / passes[-1])
    np.testing.assert_array_equal(last, fields["last_loss_N"])
    # The last pass ran after the last step: the final params' per-example losses, computed here independently.
    graphdef, _, dataset, _ = loop.restore_params(cfg, str(tmp_path))
    batch = {k: v for k, v in dataset.train.items() if k in loop.MODEL_INPUTS}
    batch |= {"index": np.arange(len(last), dtype=np.int32), "mask": np.ones(len(last), bool)}
    want, _ = models.per_example_loss(graphdef, result.state.params, batch, None)
    np.testing.assert_allclose(last, np.asarray(want), rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------------------------------
# Resume.
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("every_steps", [0, 4])
def test_resume_equals_uninterrupted(tmp_path, every_steps):
    cfg = tiny_config("mlp", checkpoint=dict(every_steps=every_steps))
    full = _run(cfg, tmp_path / "full")
    k = int(full.state.step) // 2
    first = _run(cfg, tmp_path / "split", max_steps=k)
    assert int(first.state.step) == k
    second = _run(cfg, tmp_path / "split")
    assert int(second.state.step) == int(full.state.step)
    _assert_same(full, second, rtol=1e-6)
    for name in sorted(os.listdir(tmp_path / "full" / "trackers")):
        a, b = np.load(tmp_path / "full" / "trackers" / name), np.load(tmp_path / "split" / "trackers" / name)
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"{name}:{key}")


@pytest.mark.parametrize(
    "overrides",
    [
        dict(),
        dict(tracker=dict(sharding="data", scoring_passes=2), data=dict(shards=8)),
        dict(upsample=True, data=dict(on_device=1)),
        dict(upsample=True, tracker=dict(sharding="data"), data=dict(on_device=0)),
    ],
    ids=["in_step", "sharded_scoring_passes", "upsampled_resident", "upsampled_sharded"],
)
def test_deferred_tracker_equals_immediate_updates(tmp_path, overrides):
    """The default records each step's losses and folds them at the epoch's end (``tracker.defer``): the same bits
    as updating the table every step, in the tracker and every epoch artefact, also when a run stops mid-epoch with
    records pending in its checkpoint and resumes. Up-sampled runs (ids 1-3 times an epoch, copies sometimes in one
    batch) record each copy into the slot of its occurrence number, on the resident and the host-batch path, with a
    sharded tracker's per-device pending copies."""
    tracker_over = overrides.get("tracker", {})
    data = overrides.get("data", {})
    train = {}
    if overrides.get("upsample"):
        cfg = tiny_config("mlp")
        n = loop.sources.build_dataset(cfg.data).num_train
        mult_N = np.random.default_rng(0).integers(1, 4, n)
        np.save(tmp_path / "mult.npy", mult_N)
        train = dict(multiplicity_path=str(tmp_path / "mult.npy"), num_epochs=2)
        it = EpochIterator({"x": np.zeros((n, 1))}, cfg.train.batch_size, cfg.seed, multiplicity_N=mult_N)
        batches = [it.batch(0, t) for t in range(it.steps_per_epoch)]
        assert any(b["occurrence"][b["mask"]].max() == 2 for b in batches)
        assert any(len(np.unique(b["index"][b["mask"]])) < b["mask"].sum() for b in batches)  # copies in a batch
    deferred = tiny_config("mlp", tracker=tracker_over, data=data, train=train)
    immediate = tiny_config("mlp", tracker=dict(tracker_over, defer=False), data=data, train=train)
    want = _run(immediate, tmp_path / "immediate")
    assert want.tracker.pending is None
    spe = json.load(open(tmp_path / "immediate" / "dataset.json"))["steps_per_epoch"]
    first = _run(deferred, tmp_path / "deferred", max_steps=spe + spe // 2)
    assert first.tracker.pending is not None
    assert first.tracker.slots == (3 if train else 1)
    got = _run(deferred, tmp_path / "deferred")
    assert int(got.state.step) == int(want.state.step) > spe
    chex.assert_trees_all_equal(jax.device_get(got.state), jax.device_get(want.state))
    ta, tb = tracker_lib.to_numpy(want.tracker), tracker_lib.to_numpy(got.tracker)
    for k in ta:
        np.testing.assert_array_equal(ta[k], tb[k], err_msg=k)
    names = sorted(os.listdir(tmp_path / "immediate" / "trackers"))
    assert names == sorted(os.listdir(tmp_path / "deferred" / "trackers"))
    assert len(names) >= 2 and ("scoring_passes" not in tracker_over or any("_pass_at_" in x for x in names))
    for name in names:
        a, b = np.load(tmp_path / "immediate" / "trackers" / name), np.load(tmp_path / "deferred" / "trackers" / name)
        for key in getattr(a, "files", [None]):
            np.testing.assert_array_equal(a[key] if key else a, b[key] if key else b, err_msg=f"{name}:{key}")


@pytest.mark.slow  # ~50 s on 2 cores; test_resume_equals_uninterrupted covers resumption in the default suite
def test_kill_launch_and_resume(tmp_path):
    """SIGKILL a real launch.py mid-run, rerun the same command, and compare with an uninterrupted run."""
    workdir = tmp_path / "killed"
    overrides = ["--config.train.num_epochs=60", "--config.checkpoint.every_steps=3"]
    cmd = [sys.executable, "launch.py", "--config=configs/tiny.py", f"--workdir={workdir}", *overrides]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    ckpt_dir = workdir / "checkpoints"
    deadline = time.time() + 120
    while time.time() < deadline:
        steps = [int(d) for d in os.listdir(ckpt_dir) if d.isdigit()] if ckpt_dir.exists() else []
        if steps and max(steps) >= 6:
            break
        assert proc.poll() is None, proc.stdout.read().decode()
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (workdir / "summary.json").exists(), "the run finished before it could be killed"
    resumed = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    cfg = tiny_config("mlp", train=dict(num_epochs=60), checkpoint=dict(every_steps=3))
    full = _run(cfg, tmp_path / "full", n_devices=1)
    summary = json.load(open(workdir / "summary.json"))
    assert summary["step"] == int(full.state.step)
    np.testing.assert_allclose(summary["loss"], full.last_metrics["loss"], rtol=1e-5)
    last = f"epoch_{cfg.train.num_epochs - 1:04d}.npz"
    a, b = np.load(workdir / "trackers" / last), np.load(tmp_path / "full" / "trackers" / last)
    for key in a.files:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-5, err_msg=key)
    steps = [json.loads(line)["step"] for line in open(workdir / "metrics.jsonl")]
    assert steps == sorted(steps), "metrics.jsonl has records from past the restored checkpoint"


# --------------------------------------------------------------------------------------------------------------
# Compile once; no transfers inside the step; NaN raises.
# --------------------------------------------------------------------------------------------------------------
def test_step_compiles_once(tmp_path, monkeypatch):
    monkeypatch.setattr(step_lib, "train_step", chex.assert_max_traces(step_lib.train_step, n=1))
    cfg = tiny_config("mlp", train=dict(num_epochs=3))
    n = loop.sources.build_dataset(cfg.data).num_train
    assert n % cfg.train.batch_size, "the config must produce a padded final batch"
    _run(cfg, tmp_path)  # 3 epochs, full and padded batches: one trace.


def test_step_makes_no_host_transfers():
    cfg = tiny_config("mlp")
    mesh = sharding.make_mesh()
    from gdc import models
    from gdc.data.pipeline import EpochIterator
    from gdc.train import state as state_lib

    ds = loop.sources.build_dataset(cfg.data)
    graphdef, params = models.build(cfg.model, seed=0, num_features=8, num_classes=3)
    tx, schedule = state_lib.make_optimizer(cfg.train, 10)
    repl = sharding.replicated(mesh)
    train_fn, _, _ = step_lib.jit_steps(
        loss_fn=lambda p, b, k: models.per_example_loss(graphdef, p, b, k),
        tx=tx,
        schedule=schedule,
        tracker_cfg=cfg.tracker,
        steps_per_epoch=5,
        state_sharding=repl,
        tracker_sharding=sharding.tracker_sharding(mesh, "replicated"),
        batch_sharding=sharding.batch_sharding(mesh),
    )
    state = sharding.put_tree(state_lib.create_train_state(params, tx, 0), repl)
    tracker = sharding.put_tree(tracker_lib.ExampleTracker.create(ds.num_train, 8), repl)
    it = EpochIterator({k: ds.train[k] for k in ("x", "y")}, cfg.train.batch_size, seed=0)
    batches = [sharding.put_batch(next(it)[2], mesh) for _ in range(3)]
    with jax.set_mesh(mesh):
        state, tracker, _ = train_fn(state, tracker, batches[0])  # compile outside the guard
        with jax.transfer_guard("disallow"):
            for b in batches[1:]:
                state, tracker, metrics = train_fn(state, tracker, b)
    assert np.isfinite(float(metrics["loss"]))


def test_nan_loss_raises_with_step(tmp_path):
    cfg = tiny_config("mlp", train=dict(learning_rate=1e30, optimizer="sgd", momentum=0.0))
    with pytest.raises(FloatingPointError, match=r"at step \d+"):
        _run(cfg, tmp_path)


GOLDEN = {
    "mlp": {"loss": 1.4752074480056763, "grad_norm": 4.544035911560059, "accuracy": 0.25},
    "transformer": {
        "loss": 5.900243282318115,
        "grad_norm": 2.9088029861450195,
        "accuracy": 0.0071614584885537624,
    },
}


@pytest.mark.parametrize("arg", sorted(GOLDEN))
def test_golden_first_step(tmp_path, arg):
    """If you did not intend to change behaviour, a failure here means the first step's numbers moved: find why.
    If you did (new init, new data order, new split), update GOLDEN and say so in the commit message."""
    result = _run(tiny_config(arg), tmp_path, max_steps=1)
    assert set(GOLDEN[arg]) <= set(result.last_metrics)
    for k, v in GOLDEN[arg].items():
        np.testing.assert_allclose(result.last_metrics[k], v, rtol=1e-4, err_msg=k)


# --------------------------------------------------------------------------------------------------------------
# Bad configs fail before anything compiles, naming the field.
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "section, values, field",
    [
        ("tracker", dict(eps_low=2.0, eps_high=1.0), "tracker.eps_low"),
        ("tracker", dict(criterion="flips"), "tracker.criterion"),
        ("tracker", dict(sharding="model"), "tracker.sharding"),
        ("model", dict(name="gpt5"), "model.name"),
        ("train", dict(optimizer="lion"), "train.optimizer"),
        ("train", dict(batch_size=30), "train.batch_size"),
    ],
)
def test_bad_config_names_field(section, values, field):
    from configs import common, tiny

    c = tiny.get_config("mlp")
    common.update(c, **{section: values})
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        carto_config.from_mapping(c, device_count=8)


def test_unknown_field_is_rejected():
    from configs import tiny

    c = tiny.get_config("mlp").to_dict()
    c["tracker"]["eps"] = 0.5
    with pytest.raises(ConfigError, match=r"tracker\.eps is not a known field.*eps_low"):
        carto_config.from_mapping(c)
    c = tiny.get_config("mlp").to_dict()
    c["trainer"] = {}
    with pytest.raises(ConfigError, match="trainer is not a known config section"):
        carto_config.from_mapping(c)


def test_unknown_override_on_command_line_fails(tmp_path):
    cmd = [
        sys.executable,
        "launch.py",
        "--config=configs/tiny.py",
        f"--workdir={tmp_path}",
        "--config.tracker.eps=0.3",
    ]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "eps" in out.stderr and not (tmp_path / "checkpoints").exists()


def test_bad_value_on_command_line_fails_before_training(tmp_path):
    cmd = [
        sys.executable,
        "launch.py",
        "--config=configs/tiny.py",
        f"--workdir={tmp_path}",
        "--config.tracker.eps_low=3.0",
        "--config.tracker.eps_high=1.0",
    ]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "tracker.eps_low" in out.stderr
    assert not (tmp_path / "checkpoints").exists()


def test_empty_dataset_fails_before_compile(tmp_path, monkeypatch):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    cfg = tiny_config("lstm", data=dict(source="text_files", path=str(empty)))
    monkeypatch.setattr(jax, "jit", _no_jit)
    with pytest.raises(ConfigError, match=r"data\.(seq_len|path)"):
        _run(cfg, tmp_path / "w")


def test_unwritable_workdir_fails_before_compile(tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    monkeypatch.setattr(jax, "jit", _no_jit)
    with pytest.raises(ConfigError, match="--workdir"):
        _run(tiny_config("mlp"), blocker / "sub")


def test_batch_not_divisible_fails_before_compile(tmp_path, monkeypatch):
    cfg = tiny_config("mlp", train=dict(batch_size=12))
    monkeypatch.setattr(jax, "jit", _no_jit)
    with pytest.raises(ConfigError, match=r"train\.batch_size=12 does not divide by the 8 devices"):
        _run(cfg, tmp_path)
    assert not (tmp_path / "checkpoints").exists()


def _no_jit(*a, **k):
    raise AssertionError("jax.jit was called before the config error")


def test_repeated_keep_ids_are_rejected(tmp_path):
    path = tmp_path / "keep.npy"
    np.save(path, np.array([0, 1, 1, 2]))
    with pytest.raises(ConfigError, match="ids repeat"):
        _run(tiny_config("mlp", train=dict(keep_idx_path=str(path))), tmp_path / "w")
