"""gdc.studies.ssl: UnitMem / LayerMem on constructed activations, the odds ratio and permutation test against scipy,
the NT-Xent and augmentations against numpy, config errors, and the quick study end to end."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from gdc.errors import ConfigError
from gdc.studies.ssl import config as ssl_config
from gdc.studies.ssl import metrics
from gdc.studies.ssl import model as model_lib


# ------------------------------------------------------------------------------------------------------------------
# UnitMem.
# ------------------------------------------------------------------------------------------------------------------
def test_unit_mem_known_answers():
    mu_NxU = np.array(
        [
            [1.0, 0.0, 2.0, 6.0],
            [0.0, 0.0, 2.0, 1.0],
            [0.0, 0.0, 2.0, 1.0],
            [0.0, 0.0, 2.0, 4.0],
        ]
    )
    score, argmax = metrics.unit_mem(mu_NxU, "median")
    # unit 0 fires for one example only -> 1; unit 1 never fires -> 0; unit 2 is constant -> 0;
    # unit 3: max 6, the rest {1, 1, 4} has median 1 -> 5 / 7 (mean 2 -> 4 / 8).
    np.testing.assert_allclose(score, [1.0, 0.0, 0.0, 5.0 / 7.0], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(argmax, [0, 0, 0, 0])
    score_mean, _ = metrics.unit_mem(mu_NxU, "mean")
    np.testing.assert_allclose(score_mean, [1.0, 0.0, 0.0, 0.5], rtol=0, atol=1e-12)


def test_unit_mem_matches_loop_reference():
    rng = np.random.default_rng(0)
    act_AxNxU = np.maximum(rng.normal(size=(3, 7, 5)), 0.0)
    mu = metrics.unit_mu(act_AxNxU)
    np.testing.assert_allclose(mu, act_AxNxU.mean(0))
    for rest in ("median", "mean"):
        score, argmax = metrics.unit_mem(mu, rest)
        for u in range(mu.shape[1]):
            i = int(np.argmax(mu[:, u]))
            others = [mu[j, u] for j in range(mu.shape[0]) if j != i]
            r = np.median(others) if rest == "median" else np.mean(others)
            assert argmax[u] == i
            assert score[u] == pytest.approx((mu[i, u] - r) / (mu[i, u] + r), abs=1e-12)
            assert 0.0 <= score[u] <= 1.0


def test_unit_mem_bad_input():
    with pytest.raises(ValueError, match="rest"):
        metrics.unit_mem(np.ones((3, 2)), "max")
    with pytest.raises(ValueError, match="at least 2"):
        metrics.unit_mem(np.ones((1, 2)))
    with pytest.raises(ValueError, match=r"\[Z, N, U\]"):
        metrics.unit_mu(np.ones((3, 2)))


def test_class_mem_hand_case():
    # 6 examples of classes 0, 0, 1, 1, 2, 2. Unit 0 fires only for class 1 -> 1; unit 1 fires the same for every
    # example -> 0; unit 2: class means 1, 2, 4 -> (4 - median{1, 2}) / (4 + 1.5) = 2.5 / 5.5; unit 3 fires for one
    # example only (UnitMem 1) but its class mean (3) against the others (0) still gives ClassMem 1.
    labels = np.array([0, 0, 1, 1, 2, 2])
    mu_NxU = np.array(
        [
            [0.0, 1.0, 1.0, 0.0],
            [0.0, 1.0, 1.0, 0.0],
            [2.0, 1.0, 2.0, 6.0],
            [2.0, 1.0, 2.0, 0.0],
            [0.0, 1.0, 4.0, 0.0],
            [0.0, 1.0, 4.0, 0.0],
        ]
    )
    np.testing.assert_allclose(metrics.class_mu(mu_NxU, labels)[:, 2], [1.0, 2.0, 4.0])
    np.testing.assert_allclose(metrics.class_mem(mu_NxU, labels), [1.0, 0.0, 2.5 / 5.5, 1.0], atol=1e-12)
    np.testing.assert_allclose(metrics.class_mem(mu_NxU, labels, "mean")[2], (4 - 1.5) / (4 + 1.5), atol=1e-12)
    with pytest.raises(ValueError, match="one class per example"):
        metrics.class_mu(mu_NxU, labels[:-1])


def test_unit_stats_reads_every_view_and_skips_dead_units():
    from gdc.studies.ssl import controls

    # A hand-built "encoder": layer 0 has a unit that fires only for example 2 and a dead unit; views scale it.
    base_NxU = np.zeros((4, 2))
    base_NxU[2, 0] = 3.0
    labels = np.array([0, 0, 1, 1])
    fwd = lambda params, v: [params * v * base_NxU]  # noqa: E731
    got = controls.unit_stats(controls.activations(fwd, 1.0, [1.0, 2.0]), labels, trunk=1, rest="median")
    # unit 0: mean over the two views 4.5 for example 2, 0 elsewhere -> UnitMem 1; class means (0, 2.25) -> ClassMem 1;
    # unit 1 never fires and is left out of both means.
    assert got == {"unitmem": [1.0], "classmem": [1.0]}
    base_NxU[:, 1] = [1.0, 1.0, 1.0, 5.0]  # now alive: UnitMem (5 - 1) / 6, ClassMem (3 - 1) / 4
    got = controls.unit_stats(controls.activations(fwd, 1.0, [1.0, 2.0]), labels, trunk=1, rest="median")
    np.testing.assert_allclose(got["unitmem"], [(1.0 + 4.0 / 6.0) / 2])
    np.testing.assert_allclose(got["classmem"], [(1.0 + 2.0 / 4.0) / 2])


def test_control_keys():
    from gdc.studies.ssl import controls

    same = lambda a, b: np.array_equal(jax.random.key_data(a), jax.random.key_data(b))  # noqa: E731
    f0, g0 = controls.ssl_keys(3, 0)
    assert same(f0, jax.random.key(6)) and same(g0, jax.random.key(7))  # r = 0: the single-encoder keys
    f1, g1 = controls.ssl_keys(3, 1)
    u0, v0 = controls.untrained_keys(3, 0)
    keys = [f0, g0, f1, g1, u0, v0, controls.supervised_key(3, 0), controls.supervised_key(3, 1)]
    assert len({tuple(np.asarray(jax.random.key_data(k)).ravel()) for k in keys}) == len(keys)


def test_supervised_control_learns_the_labels():
    x_NxD = jnp.asarray(np.random.default_rng(0).uniform(size=(40, 64)), jnp.float32)
    y_N = jnp.asarray(np.arange(40) % 2, jnp.int32)
    x_NxD = x_NxD.at[:, 0].set(y_N.astype(jnp.float32) * 3.0)  # the label is readable from one pixel
    spec = model_lib.EncoderSpec(
        width=16, depth=1, proj_dim=2, shift=0, noise=0.0, brightness=0.0, lr=1e-2, epochs=30, batch_size=20
    )
    gdef = model_lib.graphdef(spec)
    params, loss_E = model_lib.train_supervised(spec, gdef, x_NxD, y_N, jax.random.key(0), jnp.arange(40))
    assert loss_E[-1] < 0.5 * loss_E[0]
    logits = model_lib.layers(gdef, params, x_NxD)[-1]
    assert float((jnp.argmax(logits, 1) == y_N).mean()) == 1.0


# ------------------------------------------------------------------------------------------------------------------
# LayerMem.
# ------------------------------------------------------------------------------------------------------------------
def test_alignment_distance_known_answers():
    h = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0]])
    same = np.stack([h, 5.0 * h])  # scaling does not change the normalised rows
    np.testing.assert_allclose(metrics.alignment_distance(h, same), 0.0, atol=1e-12)
    ortho = np.stack([h[:, ::-1] * [1.0, 1.0], h[:, ::-1]])
    got = metrics.alignment_distance(h[:2], ortho[:, :2])  # [1,0] vs [0,1] and [0,2] vs [2,0]
    np.testing.assert_allclose(got, np.sqrt(2.0), atol=1e-12)
    # Mean over augmentations: one identical view (0) and one opposite view (2).
    np.testing.assert_allclose(metrics.alignment_distance(h, np.stack([h, -h])), 1.0, atol=1e-12)


def test_layer_mem_and_delta():
    res = metrics.layer_mem(d_f_N=[0.0, 0.0, 0.5], d_g_N=[1.0, 0.5, 0.5])
    np.testing.assert_allclose(res["raw_N"], [1.0, 0.5, 0.0])
    np.testing.assert_allclose(res["score_N"], [1.0, 0.5, 0.0])  # range 1
    assert res["layer_mem"] == pytest.approx(0.5) and res["raw_mean"] == pytest.approx(0.5)
    res = metrics.layer_mem(d_f_N=[0.0, 0.0], d_g_N=[0.5, 0.1])
    np.testing.assert_allclose(res["score_N"], [1.25, 0.25])  # raw / range 0.4
    res = metrics.layer_mem(d_f_N=[0.2, 0.2], d_g_N=[0.3, 0.3])  # zero range: raw kept
    np.testing.assert_allclose(res["score_N"], [0.1, 0.1])
    np.testing.assert_allclose(metrics.delta_layer_mem([0.2, 0.5, 0.4]), [0.2, 0.3, -0.1], atol=1e-12)


# ------------------------------------------------------------------------------------------------------------------
# Enrichment.
# ------------------------------------------------------------------------------------------------------------------
def _vectors(a, b, c, d):
    sel = np.array([1] * a + [1] * b + [0] * c + [0] * d, bool)
    grp = np.array([1] * a + [0] * b + [1] * c + [0] * d, bool)
    return sel, grp


def test_odds_ratio_against_scipy():
    sel, grp = _vectors(3, 1, 2, 4)
    ratio, table = metrics.odds_ratio(sel, grp)
    np.testing.assert_array_equal(table, [[3, 1], [2, 4]])
    assert ratio == pytest.approx(stats.contingency.odds_ratio(table, kind="sample").statistic) == pytest.approx(6.0)
    sel, grp = _vectors(0, 2, 3, 5)  # a zero cell: Haldane's +0.5
    assert metrics.odds_ratio(sel, grp)[0] == pytest.approx(0.5 * 5.5 / (2.5 * 3.5))
    sel, grp = _vectors(0, 2, 0, 5)  # nobody in the group: undefined
    assert np.isnan(metrics.odds_ratio(sel, grp)[0])


@pytest.mark.parametrize("cells", [(6, 4, 10, 30), (2, 8, 10, 30)])
def test_permutation_p_matches_fisher(cells):
    sel, grp = _vectors(*cells)
    perm = np.random.default_rng(1).permutation(sel.size)  # the order of examples must not matter
    res = metrics.enrichment(sel[perm], grp[perm], permutations=20000, seed=3)
    fisher = stats.fisher_exact([[cells[0], cells[1]], [cells[2], cells[3]]], alternative="greater").pvalue
    se = np.sqrt(fisher * (1 - fisher) / 20000)
    assert abs(res["p_value"] - fisher) < 4 * se + 1e-3
    assert res["overlap"] == cells[0] and res["n_selected"] == cells[0] + cells[1]
    assert res["expected_overlap"] == pytest.approx((cells[0] + cells[1]) * (cells[0] + cells[2]) / sum(cells))


def test_permutation_p_strong_enrichment_is_small():
    sel, grp = _vectors(20, 0, 0, 80)
    res = metrics.enrichment(sel, grp, permutations=2000, seed=0)
    assert res["p_value"] == pytest.approx(1 / 2001)
    assert res["odds_ratio"] > 100


# ------------------------------------------------------------------------------------------------------------------
# Model pieces.
# ------------------------------------------------------------------------------------------------------------------
def test_nt_xent_matches_numpy():
    rng = np.random.default_rng(0)
    z1, z2 = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    got = np.asarray(model_lib.nt_xent(jnp.asarray(z1), jnp.asarray(z2), 0.5))
    z = np.concatenate([z1, z2])
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    sim = z @ z.T / 0.5
    want = np.zeros(8)
    for i in range(8):
        j = (i + 4) % 8
        others = [sim[i, k] for k in range(8) if k != i]
        want[i] = np.log(np.sum(np.exp(others))) - sim[i, j]
    np.testing.assert_allclose(got, 0.5 * (want[:4] + want[4:]), rtol=1e-5)


def test_augment_is_a_shift_and_is_keyed():
    spec = model_lib.EncoderSpec(shift=1, noise=0.0, brightness=0.0)
    img = np.zeros((8, 8), np.float32)
    img[3:5, 2:6] = np.arange(8).reshape(2, 4)
    x = jnp.asarray(img.reshape(64))
    key = jax.random.key(0)
    a = np.asarray(model_lib.augment(spec, key, x)).reshape(8, 8)
    assert a.sum() == pytest.approx(img.sum())  # interior content moved, nothing lost
    assert any(np.array_equal(a, np.roll(np.roll(img, dy, 0), dx, 1)) for dy in (-1, 0, 1) for dx in (-1, 0, 1))
    np.testing.assert_array_equal(a, np.asarray(model_lib.augment(spec, key, x)).reshape(8, 8))
    views = model_lib.augment_batch(spec, key, jnp.asarray([5, 5]), jnp.stack([x, x]))
    np.testing.assert_array_equal(views[0], views[1])  # same (key, id): same view, wherever it sits in the batch


# ------------------------------------------------------------------------------------------------------------------
# Config and end to end.
# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "field,value,match",
    [
        ("num_independent", 10, "num_independent"),
        ("num_shared", 1700, "num_shared"),
        ("batch_size", 7, "batch_size"),
        ("rest", "max", "rest"),
        ("top_units", 0.0, "top_units"),
        ("typo_field", 1, "not a known field"),
    ],
)
def test_config_errors_name_the_field(field, value, match):
    from configs import unitmem_digits

    c = unitmem_digits.get_config("quick").to_dict()
    c["ssl"][field] = value
    with pytest.raises(ConfigError, match=match):
        ssl_config.from_mapping(c)


@pytest.mark.slow  # ~12 s on 2 cores; its pieces (metrics, controls, model, config) are tested above
def test_quick_study_end_to_end(tmp_path):
    from configs import unitmem_digits
    from gdc.studies import ssl

    cfg = unitmem_digits.get_config("quick")
    out = ssl.run(cfg, str(tmp_path), mode="all", command="python launch.py quick")
    for name in ("report.md", "results.json", "unitmem_layermem.png", "enrichment.png", "train.npz", "controls.npz"):
        assert os.path.exists(tmp_path / name), name
    with open(tmp_path / "results.json") as f:
        res = json.load(f)
    assert res["seeds"] == [0, 1] == out["seeds"]
    for p in res["per_seed"]:
        for layer in ("h1", "h2"):
            assert 0.0 <= p["unitmem"][layer]["mean"] <= 1.0
        assert len(p["layermem"]["candidates"]["layer_mem"]) == 3  # h1, h2, z
        assert np.array(p["layermem"]["candidates"]["per_encoder"]).shape == (2, 3)  # 2 pairs (f_r, g_r)
        for kind in ("ssl", "untrained", "supervised"):
            for stat in ("unitmem", "classmem"):
                assert np.array(p["encoders"][kind][stat]).shape == (2, 2)  # [layer][encoder]
        # f_0's UnitMem is the per-encoder entry 0 of the SSL encoders.
        assert p["encoders"]["ssl"]["unitmem"][0][0] == pytest.approx(p["unitmem"]["h1"]["mean"])
        e = p["enrichment"]["Hotspot-Memorized"]
        assert 0.0 < e["p_value"] <= 1.0 and sum(map(sum, e["table"])) == 160  # S_S + S_C
    report = open(tmp_path / "report.md").read()
    assert "python launch.py quick" in report and "**Depth:** UnitMem's excess over the untrained encoder" in report
    assert set(res["controls"]["ssl_minus_untrained"]["unitmem"]) == {"h1", "h2"}
    stamp = os.path.getmtime(tmp_path / "train.npz")
    ssl.run(cfg, str(tmp_path), mode="all")  # resumes: nothing retrained
    assert os.path.getmtime(tmp_path / "train.npz") == stamp
