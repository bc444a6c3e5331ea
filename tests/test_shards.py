"""``data.shards``: per-process data. Each process holds only its contiguous id ranges, and the batch stream is the
same whatever the number of processes (gdc/data/pipeline.py)."""

import os

import jax
import numpy as np
import pytest
from conftest import tiny_config

from gdc import sharding
from gdc import tracker as tracker_lib
from gdc.data.pipeline import (
    EpochIterator,
    row_range,
    sequential_batches,
    sequential_chunks,
    sequential_ids,
    shard_bounds,
)
from gdc.errors import ConfigError
from gdc.train import loop

N, B = 103, 16


def _arrays():
    return {"x": np.arange(N)[:, None] * 10, "y": np.arange(N) % 3}


def _local(arrays, shards, p, count):
    rows = row_range(N, shards, p, count)
    return {k: v[rows.start : rows.stop] for k, v in arrays.items()}


@pytest.mark.parametrize(("shards", "processes"), [(2, 1), (4, 2), (4, 4), (2, 2)])
def test_processes_holding_their_shards_rebuild_the_global_batches(shards, processes):
    arrays = _arrays()
    keep = np.flatnonzero(np.arange(N) % 5 != 1)  # a pruned run: the ranges keep different numbers of ids
    weights = np.linspace(0.5, 1.5, N)
    full = EpochIterator(arrays, B, 3, keep_idx=keep, weights_N=weights, shards=shards)
    parts = [
        EpochIterator(
            _local(arrays, shards, p, processes),
            B,
            3,
            keep_idx=keep,
            weights_N=weights,
            shards=shards,
            num_examples=N,
            process_index=p,
            process_count=processes,
        )
        for p in range(processes)
    ]
    # Each process holds only its share of the rows: together exactly the N rows, once.
    held = [it.row_offset + np.arange(len(it.arrays["x"])) for it in parts]
    np.testing.assert_array_equal(np.concatenate(held), np.arange(N))
    bounds = shard_bounds(N, shards)  # ceil(N / S) ids per range
    for epoch in range(2):
        seen = []
        for t in range(full.steps_per_epoch):
            g = full.batch(epoch, t)
            local = [it.batch(epoch, t) for it in parts]
            for k in g:
                np.testing.assert_array_equal(np.concatenate([b[k] for b in local]), g[k], err_msg=k)
            ok = g["mask"]
            np.testing.assert_array_equal(g["x"][ok, 0], g["index"][ok] * 10)  # rows match their ids
            np.testing.assert_allclose(g["weight"][ok], weights[g["index"][ok]].astype(np.float32))
            for s in range(shards):  # part s of every batch comes from range s
                part = g["index"][s * B // shards : (s + 1) * B // shards]
                part = part[part < N]
                assert ((part >= bounds[s]) & (part < bounds[s + 1])).all()
            seen += list(g["index"][ok])
        assert sorted(seen) == list(keep)  # every kept id exactly once per epoch
    assert full.batch(0, 0)["index"].tolist() != full.batch(1, 0)["index"].tolist()  # reshuffled per epoch


def test_one_shard_keeps_the_global_shuffle():
    it = EpochIterator(_arrays(), B, 7)
    order = np.random.default_rng([7, 2]).permutation(N)
    np.testing.assert_array_equal(it.batch(2, 1)["index"], order[B : 2 * B])


@pytest.mark.parametrize("shards", [1, 2, 4])
def test_sequential_pass_visits_every_id_once(shards):
    arrays = _arrays()
    idx = np.concatenate(list(sequential_ids(N, B, shards)))
    assert sorted(idx[idx < N]) == list(range(N))
    for p in range(2 if shards > 1 else 1):
        count = 2 if shards > 1 else 1
        batches = list(
            sequential_batches(
                _local(arrays, shards, p, count), B, shards=shards, num_examples=N, process_index=p, process_count=count
            )
        )
        for b, g in zip(batches, sequential_ids(N, B, shards), strict=True):
            np.testing.assert_array_equal(b["index"], g[p * B // count : (p + 1) * B // count])
            np.testing.assert_array_equal(b["x"][b["mask"], 0], b["index"][b["mask"]] * 10)


@pytest.mark.parametrize("shards", [0, 3, 5])
def test_bad_shards_fail_before_training(tmp_path, shards):
    cfg_error = shards < 1  # 0 fails in config validation, 3 and 5 do not divide the batch of 32
    with pytest.raises(ConfigError, match="data.shards"):
        cfg = tiny_config("mlp", data=dict(shards=shards))
        assert not cfg_error
        loop.train(cfg, str(tmp_path / "run"), mesh=sharding.make_mesh())
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_sharded_run_scores_every_example(tmp_path):
    cfg = tiny_config("mlp", data=dict(shards=4), train=dict(num_epochs=2), tracker=dict(scoring_passes=1))
    result = loop.train(cfg, str(tmp_path), mesh=sharding.make_mesh())
    fields = {k: np.asarray(v) for k, v in np.load(tmp_path / "trackers" / "epoch_0001.npz").items()}
    n = len(fields["seen_N"])
    np.testing.assert_array_equal(fields["seen_N"], 2)  # one scoring pass per epoch, every example once
    loss_N = np.load(tmp_path / "trackers" / "epoch_0001_pass_at_00006.npy")
    assert loss_N.shape == (n,) and np.isfinite(loss_N).all()
    np.testing.assert_array_equal(loss_N, fields["last_loss_N"])
    assert result.epochs_done == 2


def test_sharded_run_on_device_equals_host_batches(tmp_path):
    runs = {}
    for on_device in ("host", "device"):
        cfg = tiny_config(
            "mlp",
            data=dict(shards=2, on_device=int(on_device == "device")),
            train=dict(num_epochs=2),
            tracker=dict(scoring_passes=1),
        )
        runs[on_device] = loop.train(cfg, str(tmp_path / on_device), mesh=sharding.make_mesh())
    a, b = (tracker_lib.to_numpy(runs[k].tracker) for k in ("host", "device"))
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-6, err_msg=k)
    passes = [x for x in sorted(os.listdir(tmp_path / "host" / "trackers")) if x.endswith(".npy")]
    assert len(passes) == 2  # one scoring pass per epoch
    for name in passes:
        if name.endswith(".npy"):  # the scoring passes' losses
            x, y = np.load(tmp_path / "host" / "trackers" / name), np.load(tmp_path / "device" / "trackers" / name)
            np.testing.assert_allclose(x, y, rtol=1e-6, err_msg=name)


@pytest.mark.parametrize(("shards", "processes", "chunk"), [(1, 1, 3), (1, 2, 4), (2, 2, 5), (4, 2, 16)])
def test_sequential_chunks_stack_the_sequential_batches(shards, processes, chunk):
    arrays = _arrays()
    for p in range(processes):
        kw = dict(shards=shards, num_examples=N, process_index=p, process_count=processes)
        local = _local(arrays, shards, p, processes)
        batches = list(sequential_batches(local, B, **kw))
        chunks = list(sequential_chunks(local, B, chunk, **kw))
        assert len(chunks) == -(-len(batches) // chunk)
        for k in batches[0]:
            got = np.concatenate([c[k] for c in chunks])
            assert got.shape[1:] == batches[0][k].shape
            np.testing.assert_array_equal(got[: len(batches)], np.stack([b[k] for b in batches]), err_msg=k)
            pad = got[len(batches) :]  # filling batches: padding rows only
            if k == "mask":
                assert not pad.any()
            elif k == "index":
                assert (pad == N).all()
            else:
                assert not pad.any()


def test_aligned_shards_update_the_sharded_tracker_locally(tmp_path):
    """data.shards a multiple of the device count: the tracker's row blocks are the data ranges, each device updates
    its rows from its own batch rows with no exchange; the result equals the replicated tracker's, with up-sampled
    (repeated) ids too."""
    mult = np.ones(168, np.int64)
    mult[::7] = 3
    np.save(tmp_path / "mult.npy", mult)
    runs = {}
    for mode in ("replicated", "data"):
        cfg = tiny_config(
            "mlp",
            data=dict(shards=8),
            train=dict(num_epochs=2, multiplicity_path=str(tmp_path / "mult.npy")),
            tracker=dict(sharding=mode, scoring_passes=1),
        )
        runs[mode] = loop.train(cfg, str(tmp_path / mode), mesh=sharding.make_mesh())
    assert all(x.sharding.spec == jax.sharding.PartitionSpec("data") for x in jax.tree.leaves(runs["data"].tracker))
    assert runs["data"].tracker.capacity == 168  # 8 ranges of 21 rows, one per device
    a, b = (tracker_lib.to_numpy(runs[k].tracker) for k in ("replicated", "data"))
    assert a["seen_N"].sum() == 2 * 168  # every example scored once per epoch
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-6, err_msg=k)


def test_stacked_sharding_splits_only_the_batch_axis():
    """``sharding.stacked``: a leading unsplit axis G, then the batch axis over ``data`` (device d holds rows
    [d*B/D, (d+1)*B/D) of every one of the G batches)."""
    mesh = sharding.make_mesh()
    d = len(mesh.devices.flat)
    x_GxBxF = np.arange(3 * 16 * 2).reshape(3, 16, 2)
    placed = jax.device_put(x_GxBxF, sharding.stacked(sharding.batch_sharding(mesh)))
    rows = 16 // d
    for shard in placed.addressable_shards:
        i = list(mesh.devices.flat).index(shard.device)
        np.testing.assert_array_equal(np.asarray(shard.data), x_GxBxF[:, i * rows : (i + 1) * rows])
    assert sharding.stacked(sharding.batch_sharding(mesh)) == sharding.chunk_sharding(mesh)
