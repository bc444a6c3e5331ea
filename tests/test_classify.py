"""gdc.studies.classify: fairness identities (exact on a lookup memorizer), MAT's shift against numpy, the DeMem
penalty, LiRA / loss-MIA pieces against plain references, config errors,
quick end-to-end runs."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
import scipy.stats
from sklearn import metrics

from gdc.errors import ConfigError
from gdc.evaluation import mia
from gdc.studies.classify import common, demem, fairness, lira, mat
from gdc.studies.classify import config as classify_config


# ------------------------------------------------------------------------------------------------------------------
# Fairness identities.
# ------------------------------------------------------------------------------------------------------------------
def _population(n=20_000, seed=0):
    rng = np.random.default_rng(seed)
    a = (rng.random(n) < 0.35).astype(np.int64)
    y = rng.integers(3, size=n)
    # A base classifier biased against group 1: correct with prob 0.85 (group 0) / 0.65 (group 1), else random.
    correct = rng.random(n) < np.where(a == 0, 0.85, 0.65)
    pred = np.where(correct, y, rng.integers(3, size=n))
    d = rng.random(n) < np.where(y == 2, 0.2, 0.05) * np.where(a == 1, 2.0, 1.0)
    return pred, y, a, d


def _rates_reference(pred, y, a):
    """Plain loops over the definitions."""
    sp, conf, fpr = np.zeros((2, 3)), np.zeros((2, 3, 3)), np.zeros((2, 3))
    for g in range(2):
        for c in range(3):
            sp[g, c] = np.mean(pred[a == g] == c)
            fpr[g, c] = np.mean(pred[(a == g) & (y != c)] == c)
            for t in range(3):
                conf[g, t, c] = np.mean(pred[(a == g) & (y == t)] == c)
    return sp, conf, fpr


def test_rates_match_definitions():
    pred, y, a, _ = _population(3000, seed=1)
    r = fairness.rates(pred, y, a)
    sp, conf, fpr = _rates_reference(pred, y, a)
    np.testing.assert_allclose(r["sp_AxK"], sp, atol=1e-15)
    np.testing.assert_allclose(r["conf_AxYxK"], conf, atol=1e-15)
    np.testing.assert_allclose(r["fpr_AxK"], fpr, atol=1e-15)
    np.testing.assert_allclose(r["tpr_AxK"], np.stack([np.diag(conf[0]), np.diag(conf[1])]), atol=1e-15)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_identities_exact_on_lookup_memorizer(seed):
    pred, y, a, d = _population(seed=seed)
    predicted = fairness.predicted_rates(pred, y, a, d)
    measured = fairness.rates(fairness.lookup(pred, y, d), y, a)
    assert predicted["sp_AxK"].dtype == np.float64
    for key in ("sp_AxK", "conf_AxYxK", "tpr_AxK", "fpr_AxK"):
        np.testing.assert_allclose(predicted[key], measured[key], rtol=0, atol=1e-12)
    # The prediction must use only D's composition and f on D^c: changing f on D changes nothing.
    pred_other = np.where(d, (pred + 1) % 3, pred)
    for key in ("sp_AxK", "conf_AxYxK", "fpr_AxK"):
        np.testing.assert_array_equal(fairness.predicted_rates(pred_other, y, a, d)[key], predicted[key])
    # ... and memorization moves the rates: the identity is not trivially the base rates.
    assert fairness.max_abs_diff(predicted, fairness.rates(pred, y, a)) > 1e-2


def test_identity_whole_cell_memorized_and_unmemorized_form():
    pred, y, a, _ = _population(5000, seed=3)
    d = (y == 1) & (a == 1)  # a whole cell: pi is 0/0 there, with a zero coefficient
    predicted = fairness.predicted_rates(pred, y, a, d)
    measured = fairness.rates(fairness.lookup(pred, y, d), y, a)
    np.testing.assert_allclose(predicted["conf_AxYxK"], measured["conf_AxYxK"], atol=1e-12)
    assert predicted["tpr_AxK"][1, 1] == 1.0
    # Un-memorized form with D empty is the base rates; with D random and f independent of D it is close to them.
    empty = np.zeros_like(d)
    base = fairness.rates(pred, y, a)
    np.testing.assert_allclose(fairness.predicted_rates(pred, y, a, empty, memorized=False)["sp_AxK"], base["sp_AxK"])
    rand = np.random.default_rng(0).random(len(y)) < 0.3
    un = fairness.predicted_rates(pred, y, a, rand, memorized=False)
    assert fairness.max_abs_diff(un, base) < 0.05


def test_minimal_mass_equalises_tpr():
    pred, y, a, _ = _population(seed=4)
    mm = fairness.minimal_mass(pred, y, a, c=0, seed=0)
    t = fairness.rates(pred, y, a)["tpr_AxK"][:, 0]
    low, high = np.argmin(t), np.argmax(t)
    p_cell = np.mean((y == 0) & (a == low))
    assert mm["group"] == low
    np.testing.assert_allclose(mm["mass_misclassified"], p_cell * (t[high] - t[low]), rtol=1e-12)
    np.testing.assert_allclose(mm["mass_uniform"], p_cell * (t[high] - t[low]) / (1 - t[low]), rtol=1e-12)
    assert mm["mass_uniform"] > mm["mass_misclassified"]
    d = mm["in_D_N"]
    assert np.all(pred[d] != 0) and np.all((y[d] == 0) & (a[d] == low))
    after = fairness.rates(fairness.lookup(pred, y, d), y, a)["tpr_AxK"][:, 0]
    n_cell = np.sum((y == 0) & (a == low))
    assert after[low] >= t[high] - 1e-12 and after[low] - t[high] < 1.0 / n_cell  # equalised up to one point
    assert abs(mm["realised_mass"] - mm["mass_misclassified"]) <= 1.0 / len(y)


# ------------------------------------------------------------------------------------------------------------------
# MAT.
# ------------------------------------------------------------------------------------------------------------------
def _get_shift_numpy(y, ho, temp):
    """The public get_shift, transcribed to numpy: rows x, columns yho; then p(y | yho); then the calibrated p."""
    z = ho / temp
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p_y_yho = np.stack([p[y == c].sum(0) / len(y) for c in np.unique(y)], axis=1)
    p_y_given_yho = p_y_yho / p_y_yho.sum(1, keepdims=True)
    return np.log(p @ p_y_given_yho + 1e-6)


@pytest.mark.parametrize("k", [2, 3])
def test_logit_shift_matches_numpy(k):
    rng = np.random.default_rng(k)
    y = rng.integers(k, size=50)
    y[:k] = np.arange(k)
    ho = rng.normal(size=(50, k)) * 3
    with jax.enable_x64(True):
        got = mat.logit_shift(jnp.asarray(ho), jnp.asarray(y), 0.1)
        p = mat.calibrated_p_ho(jnp.asarray(ho), jnp.asarray(y), 0.1)
    np.testing.assert_allclose(np.asarray(got), _get_shift_numpy(y, ho, 0.1), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.asarray(p).sum(1), 1.0, rtol=1e-12)
    score = mat.p_ho_score(jnp.asarray(ho), jnp.asarray(y), 0.1)
    np.testing.assert_allclose(score, 1 - np.exp(_get_shift_numpy(y, ho, 0.1))[np.arange(50), y], atol=1e-5)


def test_flip_probability():
    np.testing.assert_allclose(mat.flip_probability(jnp.asarray([0.5, 0.75, 1.0]), 2), [0.0, 0.5, 1.0])
    np.testing.assert_allclose(mat.flip_probability(jnp.asarray([1 / 3, 1.0]), 3), [0.0, 1.0], atol=1e-7)


def test_shifted_training_step_matches_numpy():
    rng = np.random.default_rng(0)
    n, d = 12, 5
    train = {"x": rng.normal(size=(n, d)), "y": rng.integers(2, size=n), "majority": rng.random(n) < 0.5}
    train["majority"][:2] = [True, False]
    shift = np.log(rng.dirichlet([1, 1], size=n))
    w0 = rng.normal(size=(d, 2)) * 0.1
    with jax.enable_x64(True):
        out = mat.train_linear(
            jnp.asarray(w0),
            jax.tree.map(jnp.asarray, train),
            jax.tree.map(jnp.asarray, train),
            jax.tree.map(jnp.asarray, train),
            jnp.asarray(shift),
            lr=0.5,
            epochs=1,
        )
        got = np.asarray(out["w_DxK"])
    z = train["x"] @ w0 + shift
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    onehot = np.eye(2)[train["y"]]
    np.testing.assert_allclose(got, w0 - 0.5 * train["x"].T @ (p - onehot) / n, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(out["loss_ExN"])[0], -np.log(p[np.arange(n), train["y"]]), rtol=1e-12)


def test_toy_data_groups():
    data = mat.toy_data(1000, 10, 0.9, 0.5, seed=0)
    assert data["x"].shape == (1000, 10) and abs(data["majority"].mean() - 0.9) < 1e-9
    # the core feature's sign always encodes the label
    np.testing.assert_array_equal(data["x"][:, 0] < 0, data["y"] == 1)


# ------------------------------------------------------------------------------------------------------------------
# DeMem and DP-SGD.
# ------------------------------------------------------------------------------------------------------------------
def test_penalty_on_hand_built_losses():
    loss = jnp.asarray([0.1, 0.5, 1.5, 3.0, 0.2])
    flag = jnp.asarray([1.0, 1.0, 1.0, 1.0, 0.0])
    got = demem.penalized_loss(loss, flag, 1.0, 2.0)
    np.testing.assert_allclose(got, [0.1 + 1.8, 0.5 + 1.0, 1.5, 3.0, 0.2], rtol=1e-6)
    np.testing.assert_allclose(got[:4], jnp.abs(loss[:4] - 1.0) + 1.0, rtol=1e-6)  # lambda = 2 is flooding
    grad = jax.vmap(jax.grad(lambda x, f: demem.penalized_loss(x, f, 1.0, 2.0)))(loss, flag)
    np.testing.assert_allclose(grad, [-1.0, -1.0, 1.0, 1.0, 1.0])  # reversed below the floor, unflagged untouched


def test_compare_scorers_cross_fit():
    rng = np.random.default_rng(0)
    r, n, k = 8, 40, 3
    in_RxN = np.stack([rng.permutation(r) < r // 2 for _ in range(n)], axis=1)  # every example: 4 in, 4 out
    y = rng.integers(k, size=n)
    y[:k] = np.arange(k)
    hard = np.zeros(n, bool)
    hard[:8] = True
    # Held-out models predict the label except on the hard rows; members always fit their label.
    logits = np.where(np.eye(k)[y][None] > 0, 3.0, 0.0) * np.where(hard[None, :, None] & ~in_RxN[:, :, None], -1, 1)
    lira_RxN = in_RxN * hard[None] * 5.0 + rng.normal(size=(r, n)) * 0.1
    d = hard + rng.random(n) * 0.1
    m = rng.random(n)
    out = demem.compare_scorers(logits, y, in_RxN, lira_RxN, d, m, hard)
    # Reference: each example's held-out models averaged in probability space, then the public get_shift.
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    p_out = np.stack([probs[~in_RxN[:, i], i].mean(0) for i in range(n)])
    p_ho = 1 - np.exp(_get_shift_numpy(y, np.log(p_out), 1.0))[np.arange(n), y]
    exposure = np.array([lira_RxN[in_RxN[:, i], i].mean() - lira_RxN[~in_RxN[:, i], i].mean() for i in range(n)])
    np.testing.assert_allclose(out["auroc_hard_1_minus_p_ho"], metrics.roc_auc_score(hard, p_ho), atol=1e-9)
    np.testing.assert_allclose(
        out["spearman_exposure_1_minus_p_ho"], scipy.stats.spearmanr(p_ho, exposure)[0], atol=1e-6
    )
    np.testing.assert_allclose(out["spearman_exposure_m"], scipy.stats.spearmanr(m, exposure)[0], atol=1e-12)
    assert out["auroc_hard_1_minus_p_ho"] == 1.0 and out["auroc_hard_d"] == 1.0


def test_halves():
    in_RxN = demem.halves(40, 6, seed=0)
    np.testing.assert_array_equal(in_RxN.sum(1), 20)
    assert len({tuple(r) for r in in_RxN}) == 6


# ------------------------------------------------------------------------------------------------------------------
# LiRA and the loss attack.
# ------------------------------------------------------------------------------------------------------------------
def test_logit_confidence():
    logits = np.random.default_rng(0).normal(size=(7, 4)) * 4
    y = np.arange(7) % 4
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    py = p[np.arange(7), y]
    np.testing.assert_allclose(
        lira.logit_confidence(jnp.asarray(logits), jnp.asarray(y)), np.log(py / (1 - py)), rtol=1e-5
    )


def test_lira_scores_against_loop_reference():
    rng = np.random.default_rng(1)
    r, n = 6, 30
    in_RxN = rng.random((r, n)) < 0.5
    phi = rng.normal(size=(r, n)) + 2.0 * in_RxN
    got = lira.lira_scores(phi, in_RxN)
    t = 2
    sh = [s for s in range(r) if s != t]

    def centres(side):
        pooled = np.median([phi[s, j] for s in sh for j in range(n) if in_RxN[s, j] == side])
        return np.array(
            [
                np.median([phi[s, i] for s in sh if in_RxN[s, i] == side])
                if any(in_RxN[s, i] == side for s in sh)
                else pooled
                for i in range(n)
            ]
        )

    mu_in, mu_out = centres(True), centres(False)
    sd_in = np.std([phi[s, i] - mu_in[i] for s in sh for i in range(n) if in_RxN[s, i]])
    sd_out = np.std([phi[s, i] - mu_out[i] for s in sh for i in range(n) if not in_RxN[s, i]])
    want = scipy.stats.norm.logpdf(phi[t], mu_in, sd_in) - scipy.stats.norm.logpdf(phi[t], mu_out, sd_out)
    np.testing.assert_allclose(got["lira"][t], want, rtol=1e-10)
    # Offline: one-sided, the log-probability that an out shadow's phi lies below the target's.
    want_off = scipy.special.log_ndtr((phi[t] - mu_out) / sd_out)
    np.testing.assert_allclose(got["lira_offline"][t], want_off, rtol=1e-10)
    # Members score higher on this separable construction.
    assert metrics.roc_auc_score(in_RxN.ravel(), got["lira"].ravel()) > 0.85


def test_pooled_metrics_equal_direct_roc():
    rng = np.random.default_rng(2)
    in_RxN = rng.random((4, 50)) < 0.5
    score = rng.normal(size=(4, 50)) + in_RxN
    sub = rng.random(50) < 0.4
    got = lira.pooled_metrics(score, in_RxN, sub, prefix="x")
    keep = np.broadcast_to(sub, in_RxN.shape)
    want = mia.roc_metrics(score[in_RxN & keep], score[~in_RxN & keep], "x")
    assert got == want
    np.testing.assert_allclose(got["x_auc"], metrics.roc_auc_score(in_RxN[keep], score[keep]))


# ------------------------------------------------------------------------------------------------------------------
# Config errors and end-to-end runs.
# ------------------------------------------------------------------------------------------------------------------
def _config(name, **overrides):
    import importlib

    c = importlib.import_module(f"configs.{name}").get_config("quick")
    for k, v in overrides.items():
        c.classify[k] = v
    return c


@pytest.mark.parametrize(
    "name, field, value, needle",
    [
        ("mat_toy", "majority_train", 1.0, "classify.majority_train"),
        ("mat_toy", "seeds", (0, 0), "classify.seeds"),
        ("demem", "batch_size", 7, "classify.batch_size"),
        ("demem", "noise_multipliers", (0.0,), "classify.noise_multipliers"),
        ("demem", "target_epsilons", (0.0,), "classify.target_epsilons"),
        ("demem", "delta", 0.5, "classify.delta"),
        ("fairness", "quadrants", ("Hot",), "classify.quadrants"),
        ("fairness", "epochs", 0, "classify.epochs"),
    ],
)
def test_config_errors_name_the_field(name, field, value, needle):
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        classify_config.from_mapping(_config(name, **{field: value}))


def test_config_unknown_part_and_field():
    c = _config("mat_toy").to_dict()
    c["classify"]["part"] = "unit_mem"
    with pytest.raises(ConfigError, match="classify.part"):
        classify_config.from_mapping(c)
    c["classify"]["part"] = "mat"
    c["classify"]["floor"] = 1.0
    with pytest.raises(ConfigError, match="classify.floor is not a known field; part 'mat' allows"):
        classify_config.from_mapping(c)


def test_diverged_run_raises():
    with pytest.raises(FloatingPointError, match="diverged"):
        common.check_finite("x", np.array([1.0, np.nan]))
    common.check_finite("x", np.array([1.0, 2.0]))
    net = common.mlp(4, 3, 8, 1, seed=0)
    rng = np.random.default_rng(0)
    data = {"x": rng.normal(size=(20, 4)).astype(np.float32) * 1e3, "y": rng.integers(3, size=20).astype(np.int32)}
    with pytest.raises(FloatingPointError):
        common.probe(net, data, jax.random.key(0), lr=1e30, epochs=3, batch_size=5, early_epochs=1, eps=0.5)


def test_launch_registers_family():
    from gdc import studies
    from gdc.studies import classify

    assert studies.family_of({"seed": 0, "classify": {}}) == ("classify", classify)


@pytest.mark.parametrize("name, part", [("mat_toy", "mat"), ("fairness", "fairness"), ("demem", "demem")])
def test_quick_end_to_end(tmp_path, name, part):
    import gdc.studies.classify

    # DP-SGD and the extra loss arms are left out here to keep the test short (tests/test_privacy.py covers DP-SGD).
    extra = {"noise_multipliers": (), "target_epsilons": (), "loss_fractions": ()} if part == "demem" else {}
    c = _config(name, seeds=(0,), **extra)
    summary = gdc.studies.classify.run(c, str(tmp_path), mode="all", command="cmd")
    with open(tmp_path / "results.json") as f:
        results = json.load(f)
    assert set(results) == {part} and results[part]["command"] == "cmd"
    assert os.path.exists(tmp_path / part / "seed_0.json")
    for png in summary["plots"]:
        assert os.path.getsize(tmp_path / png) > 1000
    report = (tmp_path / "report.md").read_text()
    assert "cmd" in report
    if part == "fairness":
        for q in summary["seeds"][0]["quadrants"].values():
            if "lookup" in q:
                assert q["lookup"]["identity_max_abs_error"] < 1e-12
    if part == "demem":
        arms = summary["seeds"][0]["arms"]
        assert set(arms) == {"erm", "demem_loss", "demem_hotspot", "untrained"}
        assert all(0.0 <= arm["lira_offline_all_auc"] <= 1.0 for arm in arms.values())
        assert all(arm["epsilon_rdp"] == "inf" for arm in arms.values())  # no formal guarantee without DP-SGD
    # Resumable: a second run keeps the seed, and --mode=report re-renders without training.
    mtime = os.path.getmtime(tmp_path / part / "seed_0.json")
    gdc.studies.classify.run(c, str(tmp_path), mode="report", command="other")
    assert os.path.getmtime(tmp_path / part / "seed_0.json") == mtime
    assert "    cmd" in (tmp_path / "report.md").read_text()  # the command that ran it, not the re-render's
    with pytest.raises(ConfigError, match="not run"):
        gdc.studies.classify.run(_config(name, seeds=(5,), **extra), str(tmp_path), mode="report")


@pytest.mark.slow
def test_mat_toy_reproduces_minority_gain():
    res = mat.run_seed(classify_config.MatConfig(), seed=0)
    assert res["erm"]["test_minority"] < 0.3
    assert res["mat"]["early_stop_test_minority"] > 0.9 and res["mat"]["test_minority"] > 0.8
    assert res["erm_no_noise"]["test_minority"] > 0.99
