"""gdc.studies.icl: the task generator's invariants, the IWL / ICL accuracy metric on hand-built predictors, K* and the
slope fit on hand-built curves, per-item forget events, config errors, and the quick study end to end."""

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gdc.errors import ConfigError
from gdc.studies.icl import config as icl_config
from gdc.studies.icl import study, task

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
    value, status = study.k_star(ks, [0.5, 0.6, 0.8, 0.9], 0.75)
    assert status == "ok" and value == pytest.approx(16 * 2**0.75)
    value, status = study.k_star(ks, [0.5, 0.8, 0.6, 0.9], 0.75)  # must stay above: the later crossing counts
    assert status == "ok" and value == pytest.approx(32 * 2**0.5)
    assert study.k_star(ks, [0.8, 0.9, 0.9, 0.95], 0.75)[1] == "below_grid"
    value, status = study.k_star(ks, [0.5, 0.9, 0.6, 0.7], 0.75)
    assert status == "above_grid" and math.isnan(value)


def test_fit_slope_and_bootstrap():
    ns = np.array([4, 8, 16])
    exact = 3.0 * ns**1.4
    fit = study.fit_slope(np.tile(ns, 3), np.tile(exact, 3))
    assert fit["slope"] == pytest.approx(1.4) and fit["ci95"][0] == pytest.approx(1.4, abs=1e-9)
    rng = np.random.default_rng(0)
    noisy_SxN = exact * np.exp(rng.normal(0, 0.2, (3, 3)))
    fit = study.fit_slope(np.tile(ns, 3), noisy_SxN.reshape(-1))
    assert fit["slope"] == pytest.approx(np.polyfit(np.log(np.tile(ns, 3)), np.log(noisy_SxN.reshape(-1)), 1)[0])
    assert fit["ci95"][0] < fit["slope"] < fit["ci95"][1]
    lo, hi = study.bootstrap_slope(ns, noisy_SxN, reps=500)
    assert lo <= fit["slope"] <= hi
    assert math.isnan(study.fit_slope(ns, [np.nan, 5.0, np.nan])["slope"])  # one finite point: no slope


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
    res = study.item_forgetting(loss_ExT)
    # item 0: learn, forget, learn -> 1 forget; item 1: never forgotten; item 2: never learned; item 3 untracked.
    assert res["items"] == 3
    assert res["forget_mean"] == pytest.approx(1 / 3) and res["m_mean"] == pytest.approx(1 / 9)
    assert res["ever_learned"] == pytest.approx(2 / 3) and res["learned_final"] == pytest.approx(2 / 3)


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
    ],
)
def test_config_errors_name_the_field(field, value, match):
    from configs import icl_kinetics

    c = icl_kinetics.get_config("quick").to_dict()
    c["icl"]["copies"] = 2 if field == "contexts" else c["icl"]["copies"]
    c["icl"][field] = value
    with pytest.raises(ConfigError, match=match):
        icl_config.from_mapping(c)


@pytest.mark.slow  # ~50 s on 2 cores; the pieces it chains are tested above
def test_quick_study_end_to_end(tmp_path):
    from configs import icl_kinetics
    from gdc.studies import icl

    cfg = icl_kinetics.get_config("quick")
    icl.run(cfg, str(tmp_path), mode="all", command="python launch.py quick")
    for name in ("report.md", "results.json", "accuracy_through_training.png", "kstar_and_forgetting.png"):
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
    assert "1.43" in open(tmp_path / "report.md").read()  # the paper's slope sits beside ours
