"""gdc.scoring: hand-counted events, a loop reference, the upward-variation identity, ties, and the tracker match."""

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gdc import scoring
from gdc import tracker as tracker_lib
from gdc.scoring import cartography as carto

nan = np.nan
# Columns: hand-counted trajectories over 6 checkpoints.
HAND_ExN = np.array(
    [
        # a     b     never  gaps   unseen
        [2.0, 0.5, 2.0, 2.0, nan],
        [0.5, 1.5, 3.0, nan, nan],
        [1.5, 0.5, 2.5, 0.5, nan],
        [0.8, 1.5, 1.1, nan, nan],
        [0.3, 0.5, 4.0, 1.5, nan],
        [1.2, 1.5, 2.0, 0.9, nan],
    ],
    np.float32,
)


def _reference_events(loss_ExN, low_N, high_N):
    """Plain Python loop over examples and checkpoints: the tracker's rule, NaN = not seen."""
    e, n = loss_ExN.shape
    out = {k: np.zeros(n, np.int64) for k in ("forget", "learn", "learned", "first")}
    for i in range(n):
        learned, first = False, -1
        for t in range(e):
            x = loss_ExN[t, i]
            if np.isnan(x):
                continue
            if not learned and x < low_N[i]:
                learned, out["learn"][i] = True, out["learn"][i] + 1
                first = t if first < 0 else first
            elif learned and x > high_N[i]:
                learned, out["forget"][i] = False, out["forget"][i] + 1
        out["learned"][i], out["first"][i] = learned, first
    return out


def _random_matrix(rng, e, n, nan_frac=0.2):
    loss_ExN = rng.uniform(0.0, 2.0, (e, n)).astype(np.float32)
    loss_ExN[rng.random((e, n)) < nan_frac] = np.nan
    return loss_ExN


# --------------------------------------------------------------------------------------------------------------
# Forget events, states, memorization.
# --------------------------------------------------------------------------------------------------------------
def test_forget_events_hand_counted_single_threshold():
    ev = scoring.forget_events(HAND_ExN, 1.0)
    # a: learn t1, forget t2, learn t3, forget t5. b: learned at t0 and forgotten at t1, t3, t5.
    # gaps (NaN skipped): learn t2, forget t4, learn t5.
    np.testing.assert_array_equal(ev["forget_N"], [2, 3, 0, 1, 0])
    np.testing.assert_array_equal(ev["learn_N"], [2, 3, 0, 2, 0])
    np.testing.assert_array_equal(ev["learned_N"], [False, False, False, True, False])
    np.testing.assert_array_equal(ev["first_learned_N"], [1, 0, -1, 2, -1])
    np.testing.assert_array_equal(ev["observed_N"], [6, 6, 6, 4, 0])
    np.testing.assert_array_equal(ev["transitions_N"], [5, 5, 5, 3, 0])
    assert ev["transitions"] == 5
    # Raw upward crossings of 1.0 ignore the state; here they coincide with the forget counts.
    np.testing.assert_array_equal(scoring.upward_crossings(HAND_ExN, 1.0), [2, 3, 0, 1, 0])


def test_forget_events_hand_counted_hysteresis():
    ev = scoring.forget_events(HAND_ExN, 0.6, 1.3)
    # a: learn t1 (0.5), forget t2 (1.5), 0.8 is not < 0.6, learn t4 (0.3), 1.2 is not > 1.3: stays learned.
    # b: learn t0, forget t1, learn t2, forget t3, learn t4, forget t5. gaps: learn t2 (0.5), forget t4 (1.5).
    np.testing.assert_array_equal(ev["forget_N"], [1, 3, 0, 1, 0])
    np.testing.assert_array_equal(ev["learn_N"], [2, 3, 0, 1, 0])
    np.testing.assert_array_equal(ev["learned_N"], [True, False, False, False, False])
    with pytest.raises(ValueError, match="eps_low > eps_high"):
        scoring.forget_events(HAND_ExN, 1.3, 0.6)


def test_memorization_states_and_sentinel():
    ev = scoring.forget_events(HAND_ExN, 1.0)
    mem = scoring.memorization(ev["forget_N"], ev["transitions"], ev["ever_learned_N"], observed_N=ev["observed_N"])
    np.testing.assert_allclose(mem["m_N"], [2 / 5, 3 / 5, 0.0, 1 / 5, 0.0])
    np.testing.assert_array_equal(mem["forget_N"], [2, 3, 0, 1, 0])
    np.testing.assert_array_equal(mem["state_N"], [carto.FORGOTTEN] * 2 + [carto.NEVER_LEARNED, 1, carto.UNOBSERVED])
    np.testing.assert_array_equal(mem["m_rank_N"], [2 / 5, 3 / 5, -np.inf, 1 / 5, -np.inf])
    # b reaches the maximum floor(E / 2) / (E - 1): a forget event needs a learn event first.
    assert mem["m_N"].max() == 3 / 5
    # Learned and never forgotten: m = 0 but ranked above the never-learned group.
    mem2 = scoring.memorization(np.array([0, 0]), 5, np.array([True, False]))
    np.testing.assert_array_equal(mem2["state_N"], [carto.LEARNED, carto.NEVER_LEARNED])
    assert np.argsort(-mem2["m_rank_N"], kind="stable").tolist() == [0, 1]
    zero = scoring.memorization(np.array([0, 0]), 5, np.array([True, False]), never_learned="zero")
    np.testing.assert_array_equal(zero["m_rank_N"], [0.0, 0.0])
    # Per-example denominators (transitions between observed checkpoints).
    per = scoring.memorization(ev["forget_N"], ev["transitions_N"], ev["ever_learned_N"])
    np.testing.assert_allclose(per["m_N"], [2 / 5, 3 / 5, 0.0, 1 / 3, 0.0])


@pytest.mark.parametrize("hysteresis", [False, True])
def test_forget_events_matches_loop_reference(hysteresis):
    rng = np.random.default_rng(1 + hysteresis)
    loss_ExN = _random_matrix(rng, 9, 300)
    low_N = rng.uniform(0.3, 1.2, 300)
    high_N = low_N + (rng.uniform(0.0, 0.5, 300) if hysteresis else 0.0)
    ev = scoring.forget_events(loss_ExN, low_N, high_N)
    # The offline machine compares in float32 like the tracker; so does the reference.
    ref = _reference_events(loss_ExN, low_N.astype(np.float32), high_N.astype(np.float32))
    np.testing.assert_array_equal(ev["forget_N"], ref["forget"])
    np.testing.assert_array_equal(ev["learn_N"], ref["learn"])
    np.testing.assert_array_equal(ev["learned_N"], ref["learned"].astype(bool))
    np.testing.assert_array_equal(ev["first_learned_N"], ref["first"])
    assert np.all(ev["forget_N"] <= ev["learn_N"])
    assert ev["forget_N"].max() > 1  # the draw exercises repeated events


# --------------------------------------------------------------------------------------------------------------
# Threshold kinds.
# --------------------------------------------------------------------------------------------------------------
def test_percentile_and_relative_eps():
    loss_ExN = np.array([[4.0, nan, 1.0, 2.0, 3.0], [1.5, 2.0, 0.6, 0.8, 0.2], [3.0, 0.5, 0.4, nan, 0.5]], np.float32)
    final_N = np.array([3.0, 0.5, 0.4, 0.8, 0.5])  # last observed loss (example 3 unseen at the last row)
    np.testing.assert_allclose(scoring.final_loss(loss_ExN), final_N)
    assert scoring.resolve_eps(loss_ExN, "absolute", 0.7) == 0.7
    np.testing.assert_allclose(scoring.resolve_eps(loss_ExN, "percentile", 50), np.percentile(final_N, 50))
    np.testing.assert_allclose(scoring.resolve_eps(loss_ExN, "percentile", 25), 0.5)
    # Relative: value x each example's own first observed loss (example 1's first is 2.0, at row 1).
    np.testing.assert_allclose(scoring.resolve_eps(loss_ExN, "relative", 0.5), [2.0, 1.0, 0.5, 1.0, 1.5])
    low, high = scoring.resolve_pair(loss_ExN, "relative", (0.5, 0.9))
    np.testing.assert_allclose(high, [3.6, 1.8, 0.9, 1.8, 2.7], rtol=1e-6)
    # Example 0 under relative 0.5 (eps 2.0): learns at 1.5, forgets at 3.0.
    ev = scoring.forget_events(loss_ExN, low)
    np.testing.assert_array_equal(ev["forget_N"], [1, 0, 0, 0, 0])
    np.testing.assert_array_equal(ev["learn_N"], [1, 1, 1, 1, 1])  # example 2: 0.4 < 0.5 at row 2
    with pytest.raises(ValueError, match="eps kind"):
        scoring.resolve_eps(loss_ExN, "quantile", 0.5)


# --------------------------------------------------------------------------------------------------------------
# Upward variation and its identity.
# --------------------------------------------------------------------------------------------------------------
def test_upward_variation_hand():
    uv_N, uv_norm_N = scoring.upward_variation(HAND_ExN)
    # a: rises 1.0 (0.5 -> 1.5) and 0.9 (0.3 -> 1.2); falls 1.5, 0.7, 0.5. gaps: 2.0 -> 0.5 -> 1.5 -> 0.9.
    np.testing.assert_allclose(uv_N, [1.9, 3.0, 3.9, 1.0, 0.0], rtol=1e-6)
    np.testing.assert_allclose(uv_norm_N[0], 1.9 / (1.9 + 2.7), rtol=1e-6)
    np.testing.assert_allclose(uv_norm_N[3], 1.0 / (1.0 + 1.5 + 0.6), rtol=1e-6)
    assert uv_norm_N[4] == 0.0
    # uv - downward variation = L_last - L_first, i.e. uv_norm = (1 + (L_last - L_first) / tv) / 2.
    tv_N = uv_N[:4] / uv_norm_N[:4]
    net_N = scoring.final_loss(HAND_ExN)[:4] - carto.first_loss(HAND_ExN)[:4]
    np.testing.assert_allclose(uv_norm_N[:4], (1 + net_N / tv_N) / 2, rtol=1e-6)


@pytest.mark.parametrize("width", [0.0, 0.3])
def test_upward_variation_is_the_integral_of_forget_counts(width):
    rng = np.random.default_rng(7)
    e, n, h = 7, 12, 1e-3
    loss_ExN = _random_matrix(rng, e, n, nan_frac=0.15)
    grid_G = np.arange(-0.5 - width, 2.5, h) + h * rng.random()  # random offset: grid avoids the loss values
    g = grid_G.size
    tiled_ExM = np.repeat(loss_ExN, g, axis=1)  # column i * g + j: example i at eps grid_G[j]
    eps_M = np.tile(grid_G, n)
    stateful_NxG = scoring.forget_events(tiled_ExM, eps_M, eps_M + width)["forget_N"].reshape(n, g)
    uv_N, _ = scoring.upward_variation(loss_ExN, width=width)
    # Riemann sum error: each counted interval loses at most h at each end.
    tol = 2 * h * (e - 1)
    np.testing.assert_allclose(stateful_NxG.sum(axis=1) * h, uv_N, atol=tol)
    if width == 0.0:
        # Single threshold: stateful count == raw crossing count at every eps off the loss values.
        raw_NxG = scoring.upward_crossings(tiled_ExM, eps_M).reshape(n, g)
        np.testing.assert_array_equal(stateful_NxG, raw_NxG)
        np.testing.assert_allclose(raw_NxG.sum(axis=1) * h, uv_N, atol=tol)
    else:
        # Hysteresis integrates to the play operator's upward variation, below the raw uv for some examples.
        raw_uv_N, _ = scoring.upward_variation(loss_ExN)
        assert np.all(uv_N <= raw_uv_N + 1e-9) and np.any(uv_N < raw_uv_N - 10 * tol)


# --------------------------------------------------------------------------------------------------------------
# Quadrants and top-p% selection.
# --------------------------------------------------------------------------------------------------------------
def test_quadrants_hand_2x2():
    d_N = np.array([1.0, 1.5, 1.0, 1.2, 3.0, 3.5, 3.0, 4.0])
    m_N = np.array([0.0, 0.1, 0.4, 0.6, 0.0, 0.1, 0.5, 0.4])
    q_N, info = scoring.quadrants(d_N, m_N)
    assert info["tau_d"] == pytest.approx(2.25) and info["tau_m"] == pytest.approx(0.25)
    np.testing.assert_array_equal(q_N, [0, 0, 2, 2, 1, 1, 3, 3])
    assert info["counts"] == {name: 2 for name in scoring.QUADRANT_NAMES}
    assert q_N.dtype == np.int8


def test_quadrants_ties_at_m_zero():
    d_N = np.arange(10.0)
    m_N = np.array([0.0] * 7 + [0.2, 0.4, 0.2])
    state_N = np.array([0, 0, 0, 0, 0, 2, 2, 1, 1, 1], np.int8)
    q_N, info = scoring.quadrants(d_N, m_N, state_N=state_N)
    assert info["tau_m"] == 0.0 and info["tau_d"] == 4.5
    assert (info["n_m_at_tau"], info["n_m_zero"], info["n_high_m"], info["n_d_at_tau"]) == (7, 7, 3, 0)
    np.testing.assert_array_equal(q_N, [0, 0, 0, 0, 0, 1, 1, 3, 3, 3])
    assert info["counts"] == {"Stable-Easy": 5, "Ambiguous-Hard": 2, "Hotspot-Memorized": 0, "Noisy-Outlier": 3}
    assert info["never_learned"]["Ambiguous-Hard"] == 2
    # "rank": exactly half are high m; the m = 0 tie is cut by d (the other axis), largest first.
    q_rank_N, info_rank = scoring.quadrants(d_N, m_N, tie_break="rank")
    assert info_rank["n_high_m"] == 5 and info_rank["n_high_d"] == 5
    np.testing.assert_array_equal(q_rank_N, [0, 0, 0, 0, 0, 3, 3, 3, 3, 3])
    # NaN d: unscored.
    q_nan_N, info_nan = scoring.quadrants(np.r_[d_N, nan], np.r_[m_N, 0.0])
    assert q_nan_N[-1] == -1 and info_nan["n_scored"] == 10


def test_top_fraction_equals_the_full_lexsort():
    rng = np.random.default_rng(3)
    for trial in range(60):
        n = int(rng.integers(1, 400))
        score_N = rng.choice([0.0, 0.5, 1.0, 2.0, np.nan, np.inf, -np.inf], n)  # heavy ties, NaN ranks last
        if trial % 3 == 0:
            score_N = rng.normal(size=n)
        second_N = None if trial % 2 else rng.choice([0.0, 1.0, np.nan], n)
        for fraction in (0.0, 0.01, 0.05, 0.3, 0.5, 1.0):
            ids, info = scoring.top_fraction(score_N, fraction, tie_break_N=second_N, seed=trial)
            s = np.nan_to_num(score_N, nan=-np.inf)
            t = np.zeros(n) if second_N is None else np.nan_to_num(second_N, nan=-np.inf)
            full = np.lexsort((np.random.default_rng(trial).permutation(n), -t, -s))
            k = int(np.floor(fraction * n + 0.5))
            np.testing.assert_array_equal(ids, full[:k])
            assert info["k"] == k


def test_top_fraction_ties():
    score_N = np.array([3.0, 2.0, 2.0, 2.0, 2.0, 1.0, 0.0, nan, 0.5, 0.1])
    ids, info = scoring.top_fraction(score_N, 0.3, seed=0)
    assert ids[0] == 0 and len(ids) == 3 and set(ids[1:]) <= {1, 2, 3, 4}
    assert (info["k"], info["tie_size"], info["tie_selected"], info["resolved_by"]) == (3, 4, 2, "random")
    np.testing.assert_array_equal(ids, scoring.top_fraction(score_N, 0.3, seed=0)[0])  # deterministic
    picks = {tuple(sorted(scoring.top_fraction(score_N, 0.3, seed=s)[0])) for s in range(20)}
    assert len(picks) > 1  # the seed decides the tie
    # A secondary score breaks the tie; the seed no longer matters.
    second_N = np.array([0, 4, 1, 3, 2, 0, 0, 0, 0, 0], np.float64)
    for s in range(5):
        ids2, info2 = scoring.top_fraction(score_N, 0.3, tie_break_N=second_N, seed=s)
        np.testing.assert_array_equal(ids2, [0, 1, 3])
    assert info2["resolved_by"] == "secondary" and info2["random_tie_size"] == 1
    # k rounds halves up; NaN ranks last.
    ids_all, _ = scoring.top_fraction(score_N, 1.0)
    assert ids_all[-1] == 7 and len(scoring.top_fraction(score_N, 0.25)[0]) == 3
    assert scoring.top_fraction(score_N, 0.1)[1]["resolved_by"] == "none"


# --------------------------------------------------------------------------------------------------------------
# Cartography axes, sweep, detector.
# --------------------------------------------------------------------------------------------------------------
def test_cartography_axes_manual():
    prob_ExN = np.array([[0.2, 0.9, nan], [0.4, 0.8, 0.5], [0.9, nan, nan]])
    conf_N, var_N = scoring.cartography_axes(prob_ExN)
    for i, vals in enumerate([[0.2, 0.4, 0.9], [0.9, 0.8], [0.5]]):
        mean = sum(vals) / len(vals)
        assert conf_N[i] == pytest.approx(mean)
        assert var_N[i] == pytest.approx((sum((v - mean) ** 2 for v in vals) / len(vals)) ** 0.5)
    # exp(-mean token NLL) is the geometric mean of the gold-token probabilities.
    p_L = np.array([0.5, 0.25, 0.8])
    assert scoring.probability_from_loss(np.mean(-np.log(p_L))) == pytest.approx(np.prod(p_L) ** (1 / 3))
    np.testing.assert_allclose(scoring.difficulty(HAND_ExN, 2), [1.25, 1.0, 2.5, 2.0, nan])


def test_eps_sweep_shapes_and_self_correlation():
    loss_ExN = _random_matrix(np.random.default_rng(3), 10, 200, nan_frac=0.05)
    values = [0.5, 1.0, 1.0, (0.8, 1.2)]
    out = scoring.eps_sweep(loss_ExN, values, "absolute", top=0.1)
    assert out["m_SxN"].shape == (4, 200) and out["spearman_SxS"].shape == (4, 4)
    assert out["spearman_uv_S"].shape == (4,) and out["jaccard_adjacent_S"].shape == (3,)
    np.testing.assert_allclose(np.diag(out["spearman_SxS"]), 1.0)
    assert out["spearman_SxS"][1, 2] == pytest.approx(1.0) and out["jaccard_adjacent_S"][1] == 1.0
    np.testing.assert_allclose(out["spearman_SxS"], out["spearman_SxS"].T)
    assert np.all((0 < out["frac_m_pos_S"]) & (out["frac_m_pos_S"] <= 1))
    np.testing.assert_array_equal(out["eps_high_S"], [0.5, 1.0, 1.0, 1.2])
    assert np.all(out["spearman_uv_S"] > 0)
    pct = scoring.eps_sweep(loss_ExN, [25, 50, 75], "percentile")
    assert pct["m_SxN"].shape == (3, 200)


def test_detector_auroc():
    pos_N = np.array([1, 1, 0, 0, 0], bool)
    assert scoring.detector_auroc(np.array([0.9, 0.8, 0.1, 0.2, 0.3]), pos_N) == 1.0
    assert scoring.detector_auroc(np.array([0.1, -np.inf, 0.5, 0.2, 0.3]), pos_N) == 0.0
    assert np.isnan(scoring.detector_auroc(np.ones(5), np.ones(5, bool)))
    table = scoring.detector_table({"m": np.array([0.9, 0.8, 0.1, 0.2, 0.3])}, pos_N, fractions=(0.4,))
    assert table["m"]["top"][0.4]["positives"] == 2 and table["m"]["auroc"] == 1.0


# --------------------------------------------------------------------------------------------------------------
# The real tracker as reference, and score_run on a fake workdir.
# --------------------------------------------------------------------------------------------------------------
FIELDS = (
    "seen_N loss_sum_early_N count_early_N last_loss_N last_epoch_N learned_N learn_N forget_N first_learned_step_N"
).split()


def _fields(tracker) -> dict[str, np.ndarray]:
    """The tracker's ``[N]`` fields as the loop writes them (read by name: robust to the tracker's storage)."""
    return {name: np.asarray(getattr(tracker, name))[: tracker.num_examples] for name in FIELDS}


def _simulate(workdir, loss_RxN, *, eps_low, eps_high, passes=0, early_epochs=2, seed=0):
    """Drives gdc.tracker.update one example per step over the rows of ``loss_RxN`` (NaN: skipped) and writes
    ``trackers/`` and ``config.json`` as the training loop does. With ``passes`` = K, K rows per epoch."""
    cfg = tracker_lib.TrackerConfig(
        criterion="loss", eps_low=eps_low, eps_high=eps_high, early_epochs=early_epochs, scoring_passes=passes
    )
    upd = jax.jit(functools.partial(tracker_lib.update, cfg=cfg))
    rows, n = loss_RxN.shape
    k = max(passes, 1)
    tracker = tracker_lib.ExampleTracker.create(n)
    os.makedirs(os.path.join(workdir, "trackers"), exist_ok=True)
    rng, step = np.random.default_rng(seed), 0
    ones = jnp.ones(1, bool)
    for r in range(rows):
        epoch = r // k
        for i in rng.permutation(n):
            if np.isnan(loss_RxN[r, i]):
                continue
            idx, loss = jnp.array([i], jnp.int32), jnp.array([loss_RxN[r, i]], jnp.float32)
            tracker = upd(tracker, idx, loss, jnp.zeros(1), ones, jnp.int32(step), jnp.int32(epoch))
            step += 1
        if passes:
            np.save(
                os.path.join(workdir, "trackers", f"epoch_{epoch:04d}_pass_at_{(r % k + 1) * 3:05d}.npy"), loss_RxN[r]
            )
        if r % k == k - 1:
            fields = _fields(tracker)
            np.savez(
                os.path.join(workdir, "trackers", f"epoch_{epoch:04d}.npz"),
                loss_N=tracker_lib.epoch_losses(fields, epoch),
                epoch=epoch,
                step=step,
                **fields,
            )
    with open(os.path.join(workdir, "config.json"), "w") as f:
        json.dump({"seed": seed, "tracker": dict(vars(cfg))}, f)
    return _fields(tracker)


@pytest.mark.parametrize("eps_low,eps_high", [(1.0, 1.0), (0.7, 1.3)])
def test_offline_events_match_the_tracker(tmp_path, eps_low, eps_high):
    loss_ExN = _random_matrix(np.random.default_rng(11), 10, 6, nan_frac=0.15)
    fields = _simulate(str(tmp_path), loss_ExN, eps_low=eps_low, eps_high=eps_high)
    loaded_ExN, meta = scoring.load_loss_matrix(str(tmp_path), "epoch")
    np.testing.assert_array_equal(loaded_ExN, loss_ExN)  # NaN where unseen, bit-exact otherwise
    assert meta["loss_source"] == "training pass (pre-update, in-step)" and meta["checkpoints"] == 10
    ev = scoring.forget_events(loss_ExN, eps_low, eps_high)
    np.testing.assert_array_equal(ev["forget_N"], fields["forget_N"])
    np.testing.assert_array_equal(ev["learn_N"], fields["learn_N"])
    np.testing.assert_array_equal(ev["learned_N"], fields["learned_N"])
    np.testing.assert_array_equal(ev["first_learned_N"] >= 0, fields["first_learned_step_N"] >= 0)
    assert fields["forget_N"].sum() > 0


REQUIRED = (
    "d_N m_N m_rank_N forget_N learn_N state_N uv_N uv_norm_N quadrant_N confidence_N variability_N final_loss_N "
    "tracker_forget_N tracker_learn_N"
).split()


def test_score_run_epoch_source(tmp_path):
    loss_ExN = _random_matrix(np.random.default_rng(5), 6, 30, nan_frac=0.0)
    loss_ExN[:, 0] = 3.0  # never learned
    _simulate(str(tmp_path), loss_ExN, eps_low=0.8, eps_high=1.2)
    arrays, summary = scoring.score_run(str(tmp_path))
    with np.load(tmp_path / "scores" / "scores.npz") as z:
        assert set(REQUIRED) <= set(z.files)
        assert all(z[k].shape == (30,) for k in z.files)
        np.testing.assert_array_equal(z["quadrant_N"], arrays["quadrant_N"])
    written = json.loads((tmp_path / "scores" / "scores.json").read_text())
    for key in ("thresholds", "quadrants", "states", "loss", "early_checkpoints", "tracker_agreement"):
        assert key in written
    assert written["quadrants"]["counts"] and "tau_m" in written["quadrants"] and "n_m_at_tau" in written["quadrants"]
    assert written["loss"]["loss_source"] == "training pass (pre-update, in-step)"
    assert summary["tracker_agreement"] == {"comparable": True, "forget": 1.0, "learn": 1.0}
    assert arrays["state_N"][0] == carto.NEVER_LEARNED and arrays["m_rank_N"][0] == -np.inf
    assert written["thresholds"]["eps_low"] == 0.8 and written["early_checkpoints"] == 2
    np.testing.assert_allclose(arrays["d_N"], arrays["d_tracker_N"], rtol=1e-6)
    # Another threshold kind: offline counts are no longer the tracker's.
    _, rel = scoring.score_run(str(tmp_path), eps=0.6, kind="relative", hysteresis=0.9)
    assert rel["thresholds"]["eps_low"]["per_example"] and not rel["tracker_agreement"]["comparable"]


def test_tracker_agreement_is_not_comparable_for_upsampled_runs(tmp_path):
    """An up-sampled run's tracker reads an id once per copy, its loss file once per epoch: the offline counts are
    then no check of the tracker, whatever they happen to give."""
    loss_ExN = _random_matrix(np.random.default_rng(7), 5, 12, nan_frac=0.0)
    _simulate(str(tmp_path), loss_ExN, eps_low=0.8, eps_high=1.2)
    path = tmp_path / "config.json"
    config = json.loads(path.read_text())
    cases = [(None, False), ({"multiplicity_path": ""}, False), ({"multiplicity_path": "arms/u/mult.npy"}, True)]
    for train, upsampled in cases:
        path.write_text(json.dumps(config if train is None else {**config, "train": train}))
        _, meta = scoring.load_loss_matrix(str(tmp_path), "epoch")
        assert meta["upsampled"] is upsampled
        _, summary = scoring.score_run(str(tmp_path))
        assert summary["loss"]["upsampled"] is upsampled
        # The simulated tracker read each id once per epoch, so its counts still agree; only the flag changes.
        assert summary["tracker_agreement"] == {"comparable": not upsampled, "forget": 1.0, "learn": 1.0}


def test_score_run_passes_source(tmp_path):
    loss_RxN = _random_matrix(np.random.default_rng(6), 8, 20, nan_frac=0.0)  # 4 epochs x K = 2 passes
    _simulate(str(tmp_path), loss_RxN, eps_low=0.9, eps_high=1.1, passes=2)
    loss_ExN, meta = scoring.load_loss_matrix(str(tmp_path), "passes")
    np.testing.assert_array_equal(loss_ExN, loss_RxN)
    assert meta["loss_source"] == "fixed-parameter scoring pass" and meta["early_checkpoints"] == 4
    assert meta["positions"] == [3, 6] * 4
    epoch_ExN, epoch_meta = scoring.load_loss_matrix(str(tmp_path), "epoch")
    np.testing.assert_array_equal(epoch_ExN, loss_RxN[1::2])  # the epoch's last pass
    assert epoch_meta["loss_source"] == "fixed-parameter scoring pass"
    arrays, summary = scoring.score_run(str(tmp_path))  # auto: the rows the tracker read
    assert summary["loss"]["source"] == "passes" and summary["tracker_agreement"]["forget"] == 1.0
    np.testing.assert_allclose(arrays["d_N"], arrays["d_tracker_N"], rtol=1e-6)
    assert scoring.load_tracker(str(tmp_path), epoch=1)["epoch"] == 1
