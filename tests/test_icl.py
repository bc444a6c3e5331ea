"""gdc.studies.icl: the task generator's invariants, the IWL / ICL accuracy metric on hand-built predictors, K*,
acquisition times and power-law fits on synthetic curves with known answers, the AdamW update against its formula,
the transience analysis on hand-built runs, per-item forget events, config errors, and the quick study end to end."""

import dataclasses
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gdc.errors import ConfigError
from gdc.studies.icl import analysis, fits, model, task
from gdc.studies.icl import config as icl_config

D, K, N = 8, 12, 6
FAST = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}  # compile time dominates


@pytest.fixture(scope="module")
def table():
    return task.items(jax.random.key(0), 16, D)  # k_max 16, only the first K used


def _batch(fn, key, size, *args):
    """task.batch under one jit (eager vmapped sampling dispatches hundreds of small programs)."""
    return jax.jit(lambda k: task.batch(fn, k, size, *args), compiler_options=FAST)(key)


def _ids(toks_BxLxT, x_KxD):
    """Item id of every token row (exact match against the table; -1 if none)."""
    x = np.asarray(toks_BxLxT)[..., :D]
    eq = np.all(np.isclose(x[..., None, :], np.asarray(x_KxD)[None, None], atol=0), axis=-1)
    return np.where(eq.any(-1), eq.argmax(-1), -1)


# ------------------------------------------------------------------------------------------------------------------
# The task generator.
# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("copies", [1, 3])
def test_train_sequences_bursty_and_label_consistent(table, copies):
    x_KxD, label_K = table
    toks, tgt, q, bursty = _batch(task.train_sequence, jax.random.key(1), 200, x_KxD, label_K, K, N, copies, 1.0)
    toks, tgt, q = np.asarray(toks), np.asarray(tgt), np.asarray(q)
    assert toks.shape == (200, N + 1, D + 1) and bool(np.all(bursty))
    ids = _ids(toks, x_KxD)
    assert np.all((ids >= 0) & (ids < K))  # every token is one of the first K items
    np.testing.assert_array_equal(ids[:, -1], q)
    assert np.all(toks[:, -1, D] == 0.0)  # the query's label slot is zeroed
    np.testing.assert_array_equal(tgt, np.asarray(label_K)[q])
    # Labels are consistent per item: every context token carries its item's label.
    np.testing.assert_array_equal(toks[:, :-1, D], np.asarray(label_K)[ids[:, :-1]])
    assert np.all((ids[:, :-1] == q[:, None]).sum(1) >= copies)  # bursty: the query is in context


def test_train_sequences_not_bursty(table):
    x_KxD, label_K = table
    toks, _, q, bursty = _batch(task.train_sequence, jax.random.key(2), 1000, x_KxD, label_K, K, N, 1, 0.0)
    assert not np.any(bursty)
    ids = _ids(toks, x_KxD)
    in_ctx = (ids[:, :-1] == np.asarray(q)[:, None]).any(1).mean()
    assert abs(in_ctx - (1 - (1 - 1 / K) ** N)) < 0.06  # uniform contexts hold the query only by chance


def test_iwl_and_icl_probes(table):
    x_KxD, label_K = table
    toks, tgt = _batch(task.iwl_sequence, jax.random.key(3), 200, x_KxD, label_K, K, N)
    ids = _ids(toks, x_KxD)
    assert np.all(ids[:, :-1] != ids[:, -1:]) and np.all((ids >= 0) & (ids < K))  # never a copy of the query
    np.testing.assert_array_equal(np.asarray(tgt), np.asarray(label_K)[ids[:, -1]])
    toks, tgt = _batch(task.icl_sequence, jax.random.key(4), 200, N, D, 2)
    toks = np.asarray(toks)
    assert _ids(toks, x_KxD).max() == -1  # novel items only
    match = np.all(toks[:, :-1, :D] == toks[:, -1:, :D], axis=-1)
    assert np.all(match.sum(1) == 2)  # the query sits at exactly `copies` positions
    np.testing.assert_array_equal(toks[:, :-1, D][match].reshape(200, 2)[:, 0], np.asarray(tgt))


# ------------------------------------------------------------------------------------------------------------------
# The accuracy metric on hand-built predictors.
# ------------------------------------------------------------------------------------------------------------------
def test_accuracy_hand_values():
    got = task.accuracy(jnp.asarray([1.0, -2.0, 0.0, 3.0]), jnp.asarray([1.0, 1.0, 1.0, -1.0]))
    assert float(got) == pytest.approx(0.25)  # a zero logit is wrong
    loss = task.logistic_loss(jnp.asarray([0.0, 2.0]), jnp.asarray([1.0, -1.0]))
    np.testing.assert_allclose(loss, [np.log(2.0), np.log1p(np.exp(2.0))], rtol=1e-6)


def test_iwl_icl_accuracy_of_hand_built_predictors(table):
    x_KxD, label_K = table
    x_k, l_k = x_KxD[:K], label_K[:K]

    def copy_from_context(toks):  # pure ICL: the label of the context item nearest to the query
        dist = jnp.sum((toks[:, :-1, :D] - toks[:, -1:, :D]) ** 2, axis=-1)
        return jnp.take_along_axis(toks[:, :-1, D], dist.argmin(1)[:, None], 1)[:, 0]

    def lookup(toks):  # pure IWL: the label of the trained item nearest to the query
        return l_k[jnp.argmin(jnp.sum((toks[:, -1:, :D] - x_k[None]) ** 2, axis=-1), axis=1)]

    evaluate = jax.jit(
        lambda predict, k: task.eval_accuracy(predict, k, x_KxD, label_K, K, N, D, 1, 4000), static_argnums=0
    )
    iwl, icl = evaluate(copy_from_context, jax.random.key(5))
    assert float(icl) == 1.0 and abs(float(iwl) - 0.5) < 0.05
    iwl, icl = evaluate(lookup, jax.random.key(5))
    assert float(iwl) == 1.0 and abs(float(icl) - 0.5) < 0.05


# ------------------------------------------------------------------------------------------------------------------
# K*, slope, forget events.
# ------------------------------------------------------------------------------------------------------------------
def test_k_star_hand_curves():
    ks = [8, 16, 32, 64]
    value, status = fits.k_star(ks, [0.5, 0.6, 0.8, 0.9], 0.75)
    assert status == "ok" and value == pytest.approx(16 * 2**0.75)
    value, status = fits.k_star(ks, [0.5, 0.8, 0.6, 0.9], 0.75)  # must stay above: the later crossing counts
    assert status == "ok" and value == pytest.approx(32 * 2**0.5)
    assert fits.k_star(ks, [0.8, 0.9, 0.9, 0.95], 0.75)[1] == "below_grid"
    value, status = fits.k_star(ks, [0.5, 0.9, 0.6, 0.7], 0.75)
    assert status == "above_grid" and math.isnan(value)


def test_fit_slope_and_bootstrap():
    ns = np.array([4, 8, 16])
    exact = 3.0 * ns**1.4
    fit = fits.fit_slope(np.tile(ns, 3), np.tile(exact, 3))
    assert fit["slope"] == pytest.approx(1.4) and fit["ci95"][0] == pytest.approx(1.4, abs=1e-9)
    rng = np.random.default_rng(0)
    noisy_SxN = exact * np.exp(rng.normal(0, 0.2, (3, 3)))
    fit = fits.fit_slope(np.tile(ns, 3), noisy_SxN.reshape(-1))
    assert fit["slope"] == pytest.approx(np.polyfit(np.log(np.tile(ns, 3)), np.log(noisy_SxN.reshape(-1)), 1)[0])
    assert fit["ci95"][0] < fit["slope"] < fit["ci95"][1]
    lo, hi = fits.bootstrap_slope(ns, noisy_SxN, reps=500)
    assert lo <= fit["slope"] <= hi
    assert math.isnan(fits.fit_slope(ns, [np.nan, 5.0, np.nan])["slope"])  # one finite point: no slope


def test_item_forgetting_counts():
    log2 = np.log(2.0)
    loss_ExT = np.array(
        [
            [1.0, 0.1, 1.0, np.nan],
            [0.1, 0.1, 1.0, np.nan],
            [1.0, 0.1, 1.0, np.nan],
            [0.1, 0.1, 1.0, np.nan],
        ]
    )
    assert log2 < 1.0
    res = analysis.item_forgetting(loss_ExT)
    # item 0: learn, forget, learn -> 1 forget; item 1: never forgotten; item 2: never learned; item 3 untracked.
    assert res["items"] == 3
    assert res["forget_mean"] == pytest.approx(1 / 3) and res["m_mean"] == pytest.approx(1 / 9)
    assert res["ever_learned"] == pytest.approx(2 / 3) and res["learned_final"] == pytest.approx(2 / 3)


def test_k_star_recovers_a_known_threshold():
    ks = 2.0 ** np.arange(3, 13)  # 8 .. 4096
    # Linear in log2 K: 0.5 + 0.1 log2(K / 8) reaches 0.75 at log2(K / 8) = 2.5, exactly (interpolation is exact).
    value, status = fits.k_star(ks, 0.5 + 0.1 * np.log2(ks / 8), 0.75)
    assert status == "ok" and value == pytest.approx(8 * 2**2.5, rel=1e-12)
    # A logistic in log K centred on K0 = 300 (between grid points) crosses 0.75 at K0; the chord between 256 and
    # 512 misses it by 0.26% (hand computation: the chord's crossing, 0.5 + 0.5 sigmoid((ln K - ln 300) / 0.8)).
    acc = 0.5 + 0.5 / (1 + np.exp(-(np.log(ks) - np.log(300.0)) / 0.8))
    value, status = fits.k_star(ks, acc, 0.75)
    a0, a1 = acc[5], acc[6]  # K = 256, 512
    chord = 256 * 2 ** ((0.75 - a0) / (a1 - a0))
    assert status == "ok" and value == pytest.approx(chord, rel=1e-12) and value == pytest.approx(300.0, rel=0.01)
    assert fits.k_star(ks, acc, 0.9)[0] > 300.0 * 2  # a higher threshold moves K* up: 0.9 is reached at K0 e^{1.11}


def test_acquisition_time_hand_values():
    steps = [10, 20, 30, 40]
    value, status = fits.acquisition_time(steps, [0.5, 0.8, 0.95, 0.85], 0.9)
    assert status == "ok" and value == pytest.approx(20 + 10 * 0.1 / 0.15)  # the first crossing counts
    assert fits.acquisition_time(steps, [0.5, 0.6, 0.7, 0.8], 0.9)[1] == "never"
    value, status = fits.acquisition_time(steps, [0.95, 1.0, 1.0, 1.0], 0.9)
    assert status == "at_first" and math.isnan(value)


def _synthetic_times(exponent, seeds=6, noise=0.08, seed=0):
    ks = np.array([32, 64, 128, 256, 512, 1024], np.float64)
    rng = np.random.default_rng(seed)
    return ks, 3.0 * ks**exponent * np.exp(rng.normal(0, noise, (seeds, ks.size)))


def test_power_law_recovers_a_known_exponent_and_excludes_a_wrong_one():
    ks, t_SxK = _synthetic_times(0.7)
    fit = fits.power_law(ks, t_SxK)
    per_seed = [np.polyfit(np.log(ks), np.log(row), 1)[0] for row in t_SxK]  # numpy reference
    np.testing.assert_allclose(fit["per_seed"], per_seed, rtol=1e-10)
    assert fit["exponent"] == pytest.approx(np.mean(per_seed), rel=1e-12)
    lo, hi = stats_t_interval(per_seed)
    assert fit["ci95"] == pytest.approx([lo, hi], rel=1e-10)
    assert lo < 0.7 < hi  # the true exponent is inside
    assert not (lo <= 1.0 <= hi) and not (lo <= 0.5 <= hi)  # wrong exponents are excluded
    assert fit["pooled"]["ci95"][0] < 0.7 < fit["pooled"]["ci95"][1]
    assert fit["bootstrap_ci95"][0] < 0.7 < fit["bootstrap_ci95"][1]
    local = fits.local_slopes(ks, t_SxK)  # between neighbours: log2(t_{j+1} / t_j) per seed, as K doubles
    ref = np.log2(t_SxK[:, 1:] / t_SxK[:, :-1])
    assert [p["mean"] for p in local] == pytest.approx(ref.mean(0).tolist())
    assert local[2]["ci95"] == pytest.approx(list(stats_t_interval(ref[:, 2])))
    inv = fits.inverse_interval(fit["ci95"])
    assert inv == pytest.approx([1 / hi, 1 / lo]) and inv[0] < 1 / 0.7 < inv[1]
    # Censored points (NaN) drop out of their seed's fit; a seed with one finite point drops out of the interval.
    t_SxK[0, :3] = np.nan
    t_SxK[1, 1:] = np.nan
    fit = fits.power_law(ks, t_SxK)
    assert fit["seeds_fitted"] == 5 and math.isnan(fit["per_seed"][1])
    assert fit["per_seed"][0] == pytest.approx(np.polyfit(np.log(ks[3:]), np.log(t_SxK[0, 3:]), 1)[0])


def stats_t_interval(values):
    from scipy import stats

    v = np.asarray(values)
    return stats.t.interval(0.95, v.size - 1, loc=v.mean(), scale=stats.sem(v))


def test_difference_matches_welch_reference():
    from scipy import stats

    rng = np.random.default_rng(1)
    a, b = rng.normal(1.3, 0.2, 5), rng.normal(1.0, 0.4, 7)
    got = fits.difference(np.append(a, np.nan), b)
    ref = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert got["diff"] == pytest.approx(a.mean() - b.mean())
    assert got["ci95"] == pytest.approx([ref.low, ref.high], rel=1e-9)


def test_adamw_update_matches_its_formula():
    rng = np.random.default_rng(2)
    p = {"w": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32), "b": jnp.asarray(rng.normal(size=4), jnp.float32)}
    g = {"w": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32), "b": jnp.asarray(rng.normal(size=4), jnp.float32)}
    lr, wd, eps = 1e-2, 0.5, 1e-8
    tx = model.optimizer(lr, jnp.asarray(wd))  # traced-style array, as the vmapped runs pass it
    up, _ = tx.update(g, tx.init(p), p)
    for name in p:  # first Adam step: m_hat = g, v_hat = g^2, so the step is -lr (g / (|g| + eps) + wd p)
        gg, pp = np.asarray(g[name], np.float64), np.asarray(p[name], np.float64)
        np.testing.assert_allclose(up[name], -lr * (gg / (np.abs(gg) + eps) + wd * pp), rtol=1e-5, atol=1e-7)
    tx0 = model.optimizer(lr, 0.0)
    up0, _ = tx0.update(g, tx0.init(p), p)
    import optax

    adam = optax.adam(lr)
    ref0, _ = adam.update(g, adam.init(p), p)
    for name in p:  # wd = 0 is plain Adam, bit for bit
        np.testing.assert_array_equal(up0[name], ref0[name])


def test_iwl_only_batches_never_hold_the_query(table):
    x_KxD, label_K = table
    spec = model.RunSpec(dim=D, n=N, k_max=16, batch_size=300, iwl_only=True)
    fn = jax.jit(lambda key, s: model.train_batch(s, key, x_KxD, label_K, K), static_argnums=1, compiler_options=FAST)
    toks, tgt = fn(jax.random.key(7), spec)
    ids = _ids(toks, x_KxD)
    assert np.all(ids[:, :-1] != ids[:, -1:])  # no copy of the query in context
    np.testing.assert_array_equal(np.asarray(tgt), np.asarray(label_K)[ids[:, -1]])
    toks, _ = fn(jax.random.key(7), model.RunSpec(dim=D, n=N, k_max=16, batch_size=300, p_bursty=1.0))
    ids = _ids(toks, x_KxD)
    assert np.all((ids[:, :-1] == ids[:, -1:]).any(1))  # the bursty default always holds it


def _write_wd_run(path, icl_SxKxWxE, iwl_SxKxWxE):
    np.savez(path, icl_E=icl_SxKxWxE, iwl_E=iwl_SxKxWxE, seconds=1.0)


def test_transience_analysis_on_hand_built_runs(tmp_path):
    from configs import icl_kinetics

    cfg = icl_config.from_mapping(icl_kinetics.get_config("quick"))[1]  # wd_k_values (8,), 2 seeds, 4 checkpoints
    cfg = dataclasses.replace(cfg, wd_k_values=(8, 16), wd_num_seeds=3, wd_checkpoints=5)
    icl = np.zeros((3, 2, 2, 5))
    icl[:, :, 0] = [0.9, 0.95, 0.95, 0.95, 0.95]  # wd = 0: acquires ICL and keeps it (drop 0)
    icl[:, 0, 1] = [[0.9, 0.95, 0.7, 0.5, 0.5], [0.85, 0.9, 0.6, 0.55, 0.5], [0.9, 0.92, 0.8, 0.52, 0.48]]
    icl[:, 1, 1] = [0.9, 0.95, 0.95, 0.95, 0.95]  # K = 16 under decay: no drop
    _write_wd_run(tmp_path / "run_wd.npz", icl, np.full_like(icl, 0.7))
    res = analysis.analyze_transience(cfg, str(tmp_path))
    k8, k16 = res["per_k"]
    # Hand values (final = mean of the last 2): wd = 0 drop 0.95 - 0.95 = 0; wd arm drops 0.45, 0.375, 0.42.
    drops = np.array([0.95 - 0.5, 0.9 - 0.525, 0.92 - 0.5])
    assert k8["arms"]["1.0"]["drop"]["mean"] == pytest.approx(drops.mean())
    assert k8["excess_drop"]["mean"] == pytest.approx(drops.mean())
    assert k8["excess_drop"]["ci95"] == pytest.approx(list(stats_t_interval(drops)))
    assert k8["transient"] and not k16["transient"]
    assert k8["arms"]["1.0"]["peak_step"] == [2, 2, 2]


# ------------------------------------------------------------------------------------------------------------------
# Config and end to end.
# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "field,value,match",
    [
        ("k_values", (16, 8), "increasing"),
        ("contexts", (1, 4), "copies"),
        ("threshold", 0.4, "threshold"),
        ("final_checkpoints", 99, "final_checkpoints"),
        ("p_bursty", 1.5, "p_bursty"),
        ("typo", 1, "not a known field"),
        ("wd", -0.1, "wd"),
        ("iwl_k_values", (16,), "iwl_k_values"),
        ("contexts", (4,), "at least 2"),
        ("iwl_threshold", 1.0, "iwl_threshold"),
    ],
)
def test_config_errors_name_the_field(field, value, match):
    from configs import icl_kinetics

    c = icl_kinetics.get_config("quick").to_dict()
    c["icl"]["copies"] = 2 if field == "contexts" else c["icl"]["copies"]
    c["icl"][field] = value
    with pytest.raises(ConfigError, match=match):
        icl_config.from_mapping(c)


@pytest.mark.slow  # ~60 s on 2 cores; the pieces it chains are tested above
def test_quick_study_end_to_end(tmp_path):
    from configs import icl_kinetics
    from gdc.studies import icl

    cfg = icl_kinetics.get_config("quick")
    icl.run(cfg, str(tmp_path), mode="all", command="python launch.py quick")
    for name in (
        "report.md",
        "results.json",
        "accuracy_through_training.png",
        "kstar_vs_n.png",
        "iwl_time_vs_k.png",
        "transience.png",
        "final_accuracy_and_forgetting.png",
    ):
        assert os.path.exists(tmp_path / name), name
    with open(tmp_path / "results.json") as f:
        res = json.load(f)
    assert res["seeds"] == [0, 1] and res["k_values"] == [4, 8, 16]
    for n in ("2", "4"):
        acc = np.asarray(res["per_n"][n]["icl_final"])
        assert acc.shape == (2, 3) and np.all((acc >= 0) & (acc <= 1))
        assert len(res["per_n"][n]["forget"][0]) == 3
    z = np.load(tmp_path / "run_N4.npz")
    assert z["item_loss_ExT"].shape == (2, 3, 4, 8)
    assert np.all(np.isnan(z["item_loss_ExT"][:, 0, :, 4:]))  # K = 4: items 4..7 do not exist
    assert np.load(tmp_path / "run_iwl.npz")["iwl_E"].shape == (2, 3, 4)
    wd = np.load(tmp_path / "run_wd.npz")
    assert wd["icl_E"].shape == (2, 1, 2, 4) and list(wd["wds"]) == [0.0, 1.0]
    assert np.asarray(res["nu"]["t_iwl_SxK"]).shape == (2, 3)
    assert len(res["transience"]["per_k"]) == 1 and set(res["transience"]["per_k"][0]["arms"]) == {"0.0", "1.0"}
    assert "1.43" in open(tmp_path / "report.md").read()  # the paper's slope sits beside ours
    # Rerunning the report redoes no training (every run file exists).
    before = os.path.getmtime(tmp_path / "run_wd.npz")
    icl.run(cfg, str(tmp_path), mode="report")
    assert os.path.getmtime(tmp_path / "run_wd.npz") == before
