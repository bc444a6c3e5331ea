"""The input path: EpochIterator, the Prefetcher (order, consumed state, errors, shutdown) and the device-resident
dataset, each against the plain iterator and the plain training loop."""

import dataclasses
import json
import os
import threading
import time

import jax
import numpy as np
import pytest
from conftest import tiny_config

from gdc import sharding
from gdc import tracker as tracker_lib
from gdc.data.pipeline import CallIterator, EpochIterator, Prefetcher, gather, occurrences
from gdc.errors import ConfigError
from gdc.studies.carto import config as carto_config
from gdc.train import inputs, loop
from gdc.train import setup as setup_lib
from gdc.train import step as step_lib


def _arrays(n=23):
    rng = np.random.default_rng(0)
    return {"x": rng.normal(size=(n, 3)).astype(np.float32), "y": rng.integers(0, 4, n).astype(np.int32)}


def _same_items(a, b):
    assert a[:2] == b[:2]
    assert a[2].keys() == b[2].keys()
    for k in a[2]:
        np.testing.assert_array_equal(np.asarray(a[2][k]), b[2][k], err_msg=k)


# --------------------------------------------------------------------------------------------------------------
# Prefetcher.
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("depth", [1, 2, 5])
def test_prefetcher_yields_the_plain_order_and_consumed_state(depth):
    plain = EpochIterator(_arrays(), 5, seed=3, epoch=1, position=2)  # 5 steps per epoch, a padded last batch
    source = EpochIterator(_arrays(), 5, seed=3, epoch=1, position=2)
    with Prefetcher(source, lambda b: b, depth) as pf:
        assert pf.state() == {"epoch": 1, "position": 2}
        for _ in range(12):  # across two epoch boundaries
            got = next(pf)
            _same_items(got, next(plain))
            assert pf.state() == plain.state()  # the batches consumed, not the read-ahead
        for _ in range(1000):  # let the worker fill the queue
            if pf._queue.full():
                break
            time.sleep(0.01)
        assert (source.epoch, source.position) >= (plain.epoch, plain.position + depth)  # it did read ahead
        assert pf.state() == plain.state()


def test_prefetcher_resumes_from_its_state():
    plain = EpochIterator(_arrays(), 4, seed=1)
    reference = [next(plain) for _ in range(15)]
    with Prefetcher(EpochIterator(_arrays(), 4, seed=1), lambda b: b, 3) as pf:
        first = [next(pf) for _ in range(7)]
        saved = pf.state()
    resumed = EpochIterator(_arrays(), 4, seed=1, **saved)
    with Prefetcher(resumed, lambda b: b, 3) as pf:
        second = [next(pf) for _ in range(8)]
    for a, b in zip(first + second, reference, strict=True):
        _same_items(a, b)


def test_prefetcher_places_on_the_mesh():
    mesh = sharding.make_mesh()
    with Prefetcher(EpochIterator(_arrays(), 8, seed=0), lambda b: sharding.put_batch(b, mesh), 2) as pf:
        epoch, position, batch = next(pf)
    host = EpochIterator(_arrays(), 8, seed=0).batch(0, 0)
    assert batch["x"].sharding == sharding.batch_sharding(mesh)
    _same_items((epoch, position, batch), (0, 0, host))


def test_prefetcher_raises_the_worker_error_and_stops():
    def place(batch):
        if batch["index"][0] == boom:
            raise ValueError("bad batch")
        return batch

    it = EpochIterator(_arrays(), 5, seed=0)
    boom = it.batch(0, 2)["index"][0]
    pf = Prefetcher(it, place, 2)
    next(pf), next(pf)
    with pytest.raises(ValueError, match="bad batch"):
        next(pf)
    assert pf.state() == {"epoch": 0, "position": 2}
    pf._thread.join(timeout=10)
    assert not pf._thread.is_alive()
    with pytest.raises(StopIteration):
        next(pf)


def test_prefetcher_ends_with_a_finite_source_and_closes_a_blocked_worker():
    items = [(0, i, {"v": np.array([i])}) for i in range(4)]
    with Prefetcher(iter(items), lambda b: b, 2) as pf:
        assert [p for _, p, _ in pf] == [0, 1, 2, 3]
    assert not pf._thread.is_alive()

    pf = Prefetcher(EpochIterator(_arrays(), 5, seed=0), lambda b: b, 2)  # endless source: the worker fills the queue
    next(pf)
    pf.close()
    assert not pf._thread.is_alive()
    pf.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        next(pf)
    assert not [t for t in threading.enumerate() if t.name == "gdc-prefetch"]


def test_prefetcher_rejects_depth_zero():
    with pytest.raises(ValueError, match="depth"):
        Prefetcher(iter([]), lambda b: b, 0)


# --------------------------------------------------------------------------------------------------------------
# Device-resident rows and epoch ids.
# --------------------------------------------------------------------------------------------------------------
def test_device_rows_equal_the_host_gather():
    arrays = {**_arrays(), "m": np.arange(23 * 2).reshape(23, 2) % 3 == 0}
    weights_N = np.linspace(0.1, 2.0, 23).astype(np.float32)
    it = EpochIterator(arrays, 5, seed=2, weights_N=weights_N)
    assert it.epoch_order(1).keys() == {"index"}
    ids = it.epoch_order(1)["index"]
    assert ids.shape == (25,) and (ids[23:] == 23).all() and sorted(ids[:23]) == list(range(23))
    table = {**arrays, "weight": weights_N}
    for pos in range(it.steps_per_epoch):
        dev = step_lib.device_rows(table, jax.numpy.asarray(ids[pos * 5 : (pos + 1) * 5]), 23)
        host = it.batch(1, pos)
        assert dev.keys() == host.keys()
        for k in host:
            np.testing.assert_array_equal(np.asarray(dev[k]), host[k], err_msg=k)
            assert dev[k].dtype == host[k].dtype, k
    np.testing.assert_array_equal(gather(arrays, ids[:5], 23)["x"], it.batch(1, 0)["x"])


@pytest.mark.parametrize("shards", [1, 5])
def test_upsampled_batches_number_each_copy(shards):
    """With multiplicities, every batch row carries its id's occurrence number in the epoch: 0, 1, ... in visiting
    order, the tracker's record slots; the resident path's epoch order carries the same numbers."""
    mult_N = np.random.default_rng(1).integers(0, 4, 23)
    it = EpochIterator(_arrays(), 10, seed=4, multiplicity_N=mult_N, shards=shards)
    assert it.max_occurrences == 3
    for epoch in (0, 1):
        seen = {}
        rows = [it.batch(epoch, t) for t in range(it.steps_per_epoch)]
        for batch in rows:
            for i, occ in zip(batch["index"][batch["mask"]], batch["occurrence"][batch["mask"]], strict=True):
                assert occ == seen.get(i, 0)  # batch order is visiting order
                seen[i] = occ + 1
            assert (batch["occurrence"][~batch["mask"]] == 0).all()
        assert seen == {i: m for i, m in enumerate(mult_N) if m > 0}
        order = it.epoch_order(epoch)
        np.testing.assert_array_equal(order["index"], np.concatenate([b["index"] for b in rows]))
        np.testing.assert_array_equal(order["occurrence"], np.concatenate([b["occurrence"] for b in rows]))
    assert "occurrence" not in EpochIterator(_arrays(), 10, seed=4).batch(0, 0)
    np.testing.assert_array_equal(occurrences(np.array([5, 2, 5, 5, 2, 7])), [0, 0, 1, 2, 1, 0])
    assert occurrences(np.zeros(0, np.int32)).shape == (0,)


def test_advance_keeps_the_iterator_state():
    a, b = EpochIterator(_arrays(), 5, seed=0), EpochIterator(_arrays(), 5, seed=0)
    for _ in range(11):
        assert a.advance() == next(b)[:2]
        assert a.state() == b.state()


SHARDED_WEIGHTED = dict(shards=2, process_index=1, process_count=2, weights_N=np.linspace(0, 1, 23))


@pytest.mark.parametrize("kw", [dict(), SHARDED_WEIGHTED])
def test_take_stacks_the_next_batches(kw):
    """``take(g)``: the next g batches of ``next()``, stacked (one gather), with the iterator state after them; a
    chunk that would cross an epoch's end is refused. ``CallIterator`` groups batches by the call lengths."""
    mult_N = np.random.default_rng(2).integers(0, 3, 23)
    a, b = (EpochIterator(_arrays(), 4, seed=1, multiplicity_N=mult_N, **kw) for _ in range(2))
    spe = a.steps_per_epoch
    assert spe >= 4
    for g in (3, 1, spe - 4):  # ends at the epoch's last batch (padded), then starts the next epoch
        epoch, position, chunk = a.take(g) if g > 1 else next(a)
        want = [next(b) for _ in range(g)]
        assert (epoch, position) == want[-1][:2] and a.state() == b.state()
        for k, v in want[-1][2].items():
            np.testing.assert_array_equal(chunk[k][-1] if g > 1 else chunk[k], v)
            if g > 1:
                np.testing.assert_array_equal(chunk[k], np.stack([w[2][k] for w in want]), err_msg=k)
    assert a.take(2)[:2] == (1, 1) and next(b)[:2] == (1, 0) and next(b)[:2] == (1, 1)
    with pytest.raises(ValueError, match=r"take\(%d\) at batch 2 would cross" % spe):
        a.take(spe)
    lengths = {0: 2, 2: 1, 3: 3}
    calls = CallIterator(EpochIterator(_arrays(), 4, seed=1), lambda step: lengths.get(step, 1), 0)
    got = [(e, p, g) for e, p, (g, _) in (next(calls) for _ in range(4))]
    assert got == [(0, 1, 2), (0, 2, 1), (0, 5, 3), (1, 0, 1)]


def test_steps_per_call_auto():
    cfg = tiny_config("mlp").train
    assert loop.resolve_steps_per_call(cfg, 100, 0) == loop.STEPS_PER_CALL_AUTO  # batches gathered on the device
    assert loop.resolve_steps_per_call(cfg, 5, 0) == 5  # an epoch's steps
    assert loop.resolve_steps_per_call(cfg, 100, loop.HOST_CHUNK_AUTO_BYTES // 3) == 3  # 64 MiB of host batches
    assert loop.resolve_steps_per_call(cfg, 100, 2 * loop.HOST_CHUNK_AUTO_BYTES) == 1
    assert loop.resolve_steps_per_call(dataclasses.replace(cfg, steps_per_call=7), 5, 1 << 40) == 7  # as set


# --------------------------------------------------------------------------------------------------------------
# The training loop with each input path.
# --------------------------------------------------------------------------------------------------------------
def _run(cfg, workdir, **kw):
    return loop.train(cfg, str(workdir), mesh=sharding.make_mesh(), **kw)


def _assert_same(a, b):
    for x, y in zip(jax.tree.leaves(jax.device_get(a.state)), jax.tree.leaves(jax.device_get(b.state)), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)
    ta, tb = tracker_lib.to_numpy(a.tracker), tracker_lib.to_numpy(b.tracker)
    for k in ta:
        np.testing.assert_allclose(ta[k], tb[k], rtol=1e-6, atol=1e-7, err_msg=k)


@pytest.mark.parametrize("arg", ["mlp", pytest.param("transformer", marks=pytest.mark.slow)])
def test_input_paths_train_the_same(tmp_path, arg):
    epochs = 3 if arg == "mlp" else 1
    n = loop.sources.build_dataset(tiny_config(arg).data).num_train
    rng = np.random.default_rng(0)
    files = {  # interventions change what the device gathers: weights, a pruned id set, up-sampled ids
        "weights_path": rng.uniform(0.5, 1.5, n).astype(np.float32),
        "keep_idx_path": np.sort(rng.permutation(n)[: n - 7]),
        "multiplicity_path": rng.integers(1, 3, n),
    }
    train = dict(num_epochs=epochs)
    for field, values in files.items():
        np.save(tmp_path / f"{field}.npy", values)
        train[field] = str(tmp_path / f"{field}.npy")
    runs = {
        name: _run(tiny_config(arg, data=data, train=train), tmp_path / name)
        for name, data in [
            ("plain", dict(prefetch=0, on_device=0)),
            ("prefetch", dict(prefetch=2, on_device=0)),
            ("resident", dict(on_device=1)),
        ]
    }
    assert int(runs["plain"].state.step) > 0
    for name in ("prefetch", "resident"):
        _assert_same(runs["plain"], runs[name])
        assert runs[name].epochs_done == runs["plain"].epochs_done == epochs


@pytest.mark.parametrize("data", [dict(prefetch=3, on_device=0), dict(on_device=1)])
def test_resume_equals_uninterrupted_with_read_ahead(tmp_path, data):
    cfg = tiny_config("mlp", data=data, checkpoint=dict(every_steps=3))
    full = _run(cfg, tmp_path / "full")
    k = int(full.state.step) // 2 + 1  # mid-epoch, while the prefetcher has read past the checkpoint
    first = _run(cfg, tmp_path / "split", max_steps=k)
    assert int(first.state.step) == k
    second = _run(cfg, tmp_path / "split")
    assert int(second.state.step) == int(full.state.step)
    _assert_same(full, second)
    assert not [t for t in threading.enumerate() if t.name == "gdc-prefetch"]


@pytest.mark.parametrize("data", [dict(on_device=1), dict(on_device=0, prefetch=2)], ids=["resident", "host"])
def test_steps_per_call_trains_the_same(tmp_path, monkeypatch, data):
    """Several steps per call (a scan over batches gathered on the device, or over a placed chunk of host batches
    read ahead by the prefetch thread) give the one-step-per-call run: state, tracker, every logged step's metrics
    and the epoch artefacts. Calls stop at each boundary (epoch end, scoring pass, checkpoint), each jitted call
    compiles once over the epochs, and a run stopped between calls resumes to the same result."""
    calls, jitted = {}, []

    def counting(make, size):
        def make_counted(train, **kw):
            fn = make(train, **kw)
            jitted.append(fn)

            def wrapped(*args):
                g = size(kw, args)
                calls[g] = calls.get(g, 0) + 1
                return fn(*args)

            return wrapped

        return make_counted

    resident = counting(step_lib.jit_resident_train, lambda kw, args: kw.get("steps_per_call", 1))
    chunk = counting(step_lib.jit_chunk_train, lambda kw, args: len(args[2]["index"]))
    monkeypatch.setattr(inputs, "jit_resident_train", resident)
    monkeypatch.setattr(inputs, "jit_chunk_train", chunk)
    n = loop.sources.build_dataset(tiny_config("mlp").data).num_train
    np.save(tmp_path / "mult.npy", np.random.default_rng(3).integers(1, 4, n))
    train = dict(num_epochs=4, multiplicity_path=str(tmp_path / "mult.npy"))
    runs = {}
    tracker = dict(scoring_passes=2)  # a pass in mid-epoch: a boundary the calls must stop at
    for g in (1, 3):
        cfg = tiny_config(
            "mlp", data=data, train=dict(train, steps_per_call=g), tracker=tracker, checkpoint=dict(every_steps=7)
        )
        name = f"g{g}"
        calls.clear(), jitted.clear()
        runs[name] = _run(cfg, tmp_path / name)
        assert all(fn._cache_size() == 1 for fn in jitted)
        steps = int(runs[name].state.step)
        if data["on_device"]:  # every call counted: one-step calls too
            assert len(jitted) == len({1, g}) and sum(size * count for size, count in calls.items()) == steps, calls
        else:  # host batches: the chunk function, built only for g > 1 (one-step calls run the plain step)
            assert len(jitted) == (g > 1)
        assert g == 1 or g * calls[g] > steps // 2, calls  # most steps ran in 3-step calls
    _assert_same(runs["g1"], runs["g3"])
    a = [json.loads(x) for x in open(tmp_path / "g1" / "metrics.jsonl")]
    b = [json.loads(x) for x in open(tmp_path / "g3" / "metrics.jsonl")]
    assert [r["step"] for r in a] == [r["step"] for r in b] and len(a) > int(runs["g1"].state.step)
    for ra, rb in zip(a, b, strict=True):
        assert ra.keys() == rb.keys()
        np.testing.assert_allclose([ra[x] for x in ra], [rb[x] for x in ra], rtol=1e-5, err_msg=str(ra["step"]))
    names = sorted(os.listdir(tmp_path / "g1" / "trackers"))
    assert names == sorted(os.listdir(tmp_path / "g3" / "trackers")) and len(names) >= 4
    # Stopped after step 10 (inside a 3-step call's reach), resumed: the uninterrupted result.
    cfg = tiny_config("mlp", data=data, train=dict(train, steps_per_call=3), tracker=tracker)
    assert int(_run(cfg, tmp_path / "split", max_steps=10).state.step) == 10
    _assert_same(runs["g3"], _run(cfg, tmp_path / "split"))
    assert not [t for t in threading.enumerate() if t.name == "gdc-prefetch"]


@pytest.mark.parametrize(
    "train, data, match",
    [
        (dict(steps_per_call=0), dict(), r"train\.steps_per_call=0"),
        (dict(steps_per_call=-3), dict(), r"train\.steps_per_call=-3"),
    ],
)
def test_bad_steps_per_call_names_the_field(tmp_path, train, data, match):
    with pytest.raises(ConfigError, match=match):
        _run(tiny_config("mlp", train=train, data=data), tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()  # refused before training
    from configs import tiny

    c = tiny.get_config("mlp").to_dict()
    c["train"]["steps_per_call"] = 2.5
    with pytest.raises(ConfigError, match=r"train\.steps_per_call=2\.5"):
        carto_config.from_mapping(c)


@pytest.mark.parametrize("values, match", [(dict(prefetch=-2), r"data\.prefetch=-2"), (dict(prefetch=1.5), "prefetch")])
def test_bad_prefetch_names_the_field(values, match):
    from configs import tiny

    c = tiny.get_config("mlp").to_dict()
    c["data"].update(values)
    with pytest.raises(ConfigError, match=match):
        carto_config.from_mapping(c)


@pytest.mark.parametrize("value", [2, -2, 0.5, "yes"])
def test_bad_on_device_names_the_field(value):
    from configs import tiny

    c = tiny.get_config("mlp").to_dict()
    c["data"]["on_device"] = value
    with pytest.raises(ConfigError, match=r"data\.on_device="):
        carto_config.from_mapping(c)


def test_on_device_auto_keeps_small_sets_on_the_device(monkeypatch):
    arrays = {"x": np.zeros((100, 8), np.float32), "y": np.zeros(100, np.int32)}  # 3,600 bytes
    data = lambda **kw: tiny_config("mlp", data=kw).data  # noqa: E731
    assert setup_lib.resolve_on_device(data(), arrays, process_count=1)  # the default is -1, auto
    assert setup_lib.resolve_on_device(data(shards=2), arrays, process_count=1)
    assert setup_lib.resolve_on_device(data(), arrays, process_count=2)  # every process holds every row
    assert not setup_lib.resolve_on_device(data(shards=2), arrays, process_count=2)  # each holds its own ranges
    assert not setup_lib.resolve_on_device(data(on_device=0), arrays, process_count=1)
    monkeypatch.setattr(setup_lib, "ON_DEVICE_AUTO_BYTES", 3_599)
    assert not setup_lib.resolve_on_device(data(), arrays, process_count=1)
    assert setup_lib.resolve_on_device(data(on_device=1), arrays, process_count=1)


@pytest.mark.slow  # ~25 s each: two launch.py processes plus the 1-process reference
@pytest.mark.parametrize("data", [dict(prefetch=2, on_device=0), dict(on_device=1)])
def test_two_processes_match_one_process_with_read_ahead(tmp_path, data):
    import test_multiprocess

    flags = tuple(f"--config.data.{k}={v}" for k, v in data.items())
    for i, (rc, out) in enumerate(test_multiprocess._launch_two_processes(tmp_path / "multi", extra=flags)):
        assert rc == 0, f"process {i} failed:\n{out[-4000:]}"
    cfg = tiny_config("mlp", data=data, **test_multiprocess.OVERRIDES)
    ref = loop.train(cfg, str(tmp_path / "single"), mesh=sharding.make_mesh(jax.devices()[:8]))
    names = sorted(os.listdir(tmp_path / "single" / "trackers"))
    assert names == sorted(os.listdir(tmp_path / "multi" / "trackers"))
    for name in (x for x in names if x.endswith(".npz")):
        a, b = np.load(tmp_path / "multi" / "trackers" / name), np.load(tmp_path / "single" / "trackers" / name)
        for key in a.files:
            np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-6, err_msg=f"{name}:{key}")
    _, params, _, step = loop.restore_params(cfg, str(tmp_path / "multi"))
    assert step == int(ref.state.step) > 0
    got, want = jax.device_get(params), jax.device_get(ref.state.params)
    for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
