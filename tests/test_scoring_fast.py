"""The compiled scoring kernels (gdc/scoring/fast.py) against the numpy state machine, and the memory-mapped cache."""

import os

import numpy as np
import pytest

from gdc.scoring import cartography as carto
from gdc.scoring import fast, workdir
from gdc.scoring.sweep import eps_sweep

KEYS = ("forget_N", "learn_N", "learned_N", "observed_N", "first_learned_N")


def _matrices():
    rng = np.random.default_rng(0)
    # Losses on a coarse grid, so many sit exactly on a threshold (the state must then keep its value), plus NaNs.
    grid = rng.choice(np.float32([0.1, 0.5, 1.0, 1.5, 2.0, np.nan]), (13, 700)).astype(np.float32)
    smooth = rng.gamma(2.0, 0.5, (13, 700)).astype(np.float32)
    smooth[rng.random(smooth.shape) < 0.1] = np.nan
    return [grid, smooth, grid.astype(np.float64)]


def test_hand_counted():
    # One example: 2.0 -> 0.5 (learn) -> 1.0 (tie at eps 1: stays learned) -> nan -> 1.5 (forget) -> 0.1 (learn).
    loss = np.float32([[2.0], [0.5], [1.0], [np.nan], [1.5], [0.1]])
    ev = fast.machine(loss, np.float32([1.0]), np.float32([1.0]))
    assert (ev["forget_N"][0], ev["learn_N"][0], ev["observed_N"][0], ev["first_learned_N"][0]) == (1, 2, 5, 1)
    sw = fast.sweep(loss, np.float32([1.0, 0.3, 3.0]))
    np.testing.assert_array_equal(sw["forget_SxN"][:, 0], [1, 0, 0])
    np.testing.assert_array_equal(sw["learn_SxN"][:, 0], [2, 1, 1])


@pytest.mark.parametrize("i", range(3))
def test_machine_equals_the_loop(i):
    loss = _matrices()[i]
    n = loss.shape[1]
    low_N = np.random.default_rng(1).choice([0.5, 1.0, 1.2], n)
    for low, high in [(1.0, 1.0), (0.5, 1.5), (low_N, low_N + 0.5)]:
        got = fast.machine(loss, np.broadcast_to(np.asarray(low, loss.dtype), (n,)), np.asarray(high, loss.dtype))
        want = carto.forget_events(loss, low, high)
        for k in KEYS:
            np.testing.assert_array_equal(got[k], want[k], err_msg=k)


@pytest.mark.parametrize("i", range(3))
def test_sweep_equals_the_loop(i):
    loss = _matrices()[i]
    eps = [1.0, 0.5, 2.0, 0.7, 1.2, 1.0, 0.05, 9.0]  # unsorted, repeated, on the grid, outside the range
    sw = fast.sweep(loss, np.asarray(eps))
    for q, e in enumerate(eps):
        want = carto.forget_events(loss, e)
        np.testing.assert_array_equal(sw["forget_SxN"][q], want["forget_N"])
        np.testing.assert_array_equal(sw["learn_SxN"][q], want["learn_N"])
        np.testing.assert_array_equal(sw["ever_learned_SxN"][q], want["ever_learned_N"])


@pytest.mark.parametrize("i", range(3))
def test_fused_scores_equal_the_numpy_scores(i):
    loss = _matrices()[i]
    n = loss.shape[1]
    low_N = np.random.default_rng(2).choice([0.5, 1.0, 1.2], n)
    eps = [1.0, 0.5, 2.0, 0.7, 1.0, 9.0]
    for low, high in [(1.0, None), (0.5, 1.5), (low_N, low_N + 0.5)]:
        for early in (1, 4, 20):
            got = fast.scores(loss, early, low, high, np.asarray(eps))
            want = carto.forget_events(loss, low, high)
            for k in (*KEYS, "ever_learned_N", "transitions_N"):
                np.testing.assert_array_equal(got[k], want[k], err_msg=k)
            assert got["transitions"] == want["transitions"]
            np.testing.assert_allclose(got["d_N"], carto.difficulty(loss, early), rtol=1e-12, equal_nan=True)
            for q, e in enumerate(eps):
                ev = carto.forget_events(loss, e)
                np.testing.assert_array_equal(got["forget_SxN"][q], ev["forget_N"])
                np.testing.assert_array_equal(got["ever_learned_SxN"][q], ev["ever_learned_N"])
    assert "forget_SxN" not in fast.scores(loss, 2, 1.0)  # no sweep asked for


def test_compute_scores_dispatch_gives_the_same_scores(monkeypatch):
    loss = _matrices()[1]
    meta = {"eps_low": 0.8, "eps_high": 1.2, "early_checkpoints": 3}
    monkeypatch.setattr("gdc.scoring.workdir.carto.FAST_MIN_SIZE", 0)
    fast_arrays, fast_summary = workdir.compute_scores(loss, meta)
    monkeypatch.setattr("gdc.scoring.workdir.carto.FAST_MIN_SIZE", 1 << 62)
    slow_arrays, slow_summary = workdir.compute_scores(loss, meta)
    assert fast_arrays.keys() == slow_arrays.keys()
    for k, v in slow_arrays.items():
        np.testing.assert_allclose(fast_arrays[k], v, rtol=1e-12, equal_nan=True, err_msg=k)
    assert fast_summary == slow_summary


def test_sweep_dispatch_gives_the_same_sweep(monkeypatch):
    loss = _matrices()[1]
    values = list(np.linspace(0.3, 2.0, 7))
    monkeypatch.setattr("gdc.scoring.sweep.FAST_MIN_SIZE", 0)
    fast_sw = eps_sweep(loss, values)
    monkeypatch.setattr("gdc.scoring.sweep.FAST_MIN_SIZE", 1 << 62)
    slow_sw = eps_sweep(loss, values)
    for k in slow_sw:
        np.testing.assert_array_equal(fast_sw[k], slow_sw[k], err_msg=k)


def test_loss_matrix_cache_is_rebuilt_when_a_row_changes(tmp_path):
    os.makedirs(tmp_path / "trackers")
    (tmp_path / "config.json").write_text('{"tracker": {"scoring_passes": 0, "early_epochs": 1}}')
    rows = np.arange(12, dtype=np.float32).reshape(3, 4)
    for e in range(3):
        np.savez(tmp_path / "trackers" / f"epoch_{e:04d}.npz", loss_N=rows[e])
    first, _ = workdir.load_loss_matrix(str(tmp_path))
    assert isinstance(first, np.memmap) and (tmp_path / "scores" / "loss_ExN_epoch.npy").exists()
    np.testing.assert_array_equal(first, rows)
    # A newer row file (a resumed run rewrote it) and an extra epoch both invalidate the cache.
    t = os.path.getmtime(tmp_path / "scores" / "loss_ExN_epoch.npy")
    np.savez(tmp_path / "trackers" / "epoch_0001.npz", loss_N=-rows[1])
    os.utime(tmp_path / "trackers" / "epoch_0001.npz", (t + 5, t + 5))
    np.savez(tmp_path / "trackers" / "epoch_0003.npz", loss_N=rows[0])
    again, meta = workdir.load_loss_matrix(str(tmp_path))
    np.testing.assert_array_equal(again, np.stack([rows[0], -rows[1], rows[2], rows[0]]))
    assert meta["checkpoints"] == 4
