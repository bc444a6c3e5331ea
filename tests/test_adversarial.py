"""gdc.studies.classify adversarial training: FGSM against a hand computation, PGD's eps-ball and loss increase on a
trained model, the DeMem penalty's gradient against jax.grad of the hand-written objective, flags, the summary's
intervals, config errors, and (slow) the quick end-to-end run."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from gdc.errors import ConfigError
from gdc.studies.classify import adversarial, common, robust, robust_report
from gdc.studies.classify import config as classify_config
from gdc.theory import sgd


def _hand_ce(logits_K, y):
    """Cross-entropy of one row written out: logsumexp by hand minus the label's logit."""
    top = jnp.max(logits_K)
    return jnp.log(jnp.sum(jnp.exp(logits_K - top))) + top - logits_K[y]


def _linear_net(w_KxD, b_K):
    """A bias-carrying linear softmax model as a common.Net, so the input gradient has a closed form."""
    k, d = w_KxD.shape
    theta_P = jnp.concatenate([jnp.asarray(w_KxD).ravel(), jnp.asarray(b_K)])

    def logits_fn(theta, x_BxD):
        return x_BxD @ theta[: k * d].reshape(k, d).T + theta[None, k * d :]

    def loss_fn(theta, batch):
        return -jnp.take_along_axis(jax.nn.log_softmax(logits_fn(theta, batch["x"])), batch["y"][:, None], 1)[:, 0]

    return common.Net(theta0_P=theta_P, logits_fn=logits_fn, loss_fn=loss_fn, acc_fn=loss_fn)


def _digits_batch(n=64, seed=0):
    x, y = robust.load_digits()
    ids = np.random.default_rng(seed).choice(len(y), n, replace=False)
    return jnp.asarray(x[ids]), jnp.asarray(y[ids])


def test_fgsm_linear_model_against_closed_form():
    rng = np.random.default_rng(0)
    w, b = rng.normal(size=(3, 5)), rng.normal(size=3)
    net = _linear_net(w, b)
    x = rng.random((20, 5)).astype(np.float32)
    x[:4] = np.where(rng.random((4, 5)) < 0.5, 0.0, 1.0)  # rows on the box's faces: the clip must act
    y = rng.integers(3, size=20)
    got = adversarial.fgsm(net, net.theta0_P, jnp.asarray(x), jnp.asarray(y, jnp.int32), 0.3)
    z = x @ w.T + b[None]
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    grad_x = (p - np.eye(3)[y]) @ w  # d CE / d x of a linear softmax model
    want = np.clip(x + 0.3 * np.sign(grad_x), 0.0, 1.0)
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-6)
    assert (np.asarray(got) != x + 0.3 * np.sign(grad_x)).any()  # the clip changed some entries


def test_fgsm_mlp_against_jax_grad_of_hand_written_loss(trained):
    net, theta, x, y = trained
    got = np.asarray(jax.jit(adversarial.fgsm, static_argnums=0)(net, theta, x, y, 0.1))

    def row_grad(xi, yi):  # one row alone: the batched input gradient must not mix rows
        return jax.grad(lambda z: _hand_ce(net.logits_fn(theta, z[None])[0], yi))(xi)

    g = np.asarray(jax.jit(jax.vmap(row_grad))(x, y))
    np.testing.assert_allclose(got, np.clip(np.asarray(x) + 0.1 * np.sign(g), 0, 1), atol=1e-6)


@pytest.fixture(scope="module")
def trained():
    """An MLP trained 30 epochs on 256 digits rows (about 1 s)."""
    net = common.mlp(64, 10, 32, 1, seed=0)
    x, y = _digits_batch(256, seed=1)
    theta = jax.jit(
        lambda t: sgd.train(net.loss_fn, t, {"x": x, "y": y}, jax.random.key(0), lr=0.5, epochs=30, batch_size=32)[
            "theta_P"
        ]
    )(net.theta0_P)
    return net, theta, x, y


def test_pgd_inside_ball_and_above_clean_loss(trained):
    net, theta, x, y = trained
    eps = 0.1
    x_adv = jax.jit(lambda t: adversarial.pgd(net, t, x, y, eps=eps, step_size=2.5 * eps / 10, steps=10))(theta)
    clean_B = np.asarray(net.loss_fn(theta, {"x": x, "y": y}))
    adv_B = np.asarray(net.loss_fn(theta, {"x": x_adv, "y": y}))
    assert np.abs(np.asarray(x_adv - x)).max() <= eps + 1e-6
    assert np.asarray(x_adv).min() >= 0.0 and np.asarray(x_adv).max() <= 1.0
    assert np.all(adv_B >= clean_B)  # the highest-loss iterate, start included
    assert np.mean(adv_B - clean_B) > 0.5 and np.mean(adv_B > clean_B + 1e-3) > 0.9
    x_fgsm = jax.jit(adversarial.fgsm, static_argnums=0)(net, theta, x, y, eps)
    fgsm_B = np.asarray(net.loss_fn(theta, {"x": x_fgsm, "y": y}))
    assert adv_B.mean() >= fgsm_B.mean()  # ten steps of PGD find at least FGSM's loss on average


def test_project_nearest_point():
    x = jnp.asarray([[0.05, 0.5, 0.95]])
    z = jnp.asarray([[-0.2, 0.58, 1.4]])
    np.testing.assert_allclose(adversarial.project(z, x, 0.1), [[0.0, 0.58, 1.0]], atol=1e-7)
    np.testing.assert_allclose(
        adversarial.project(jnp.asarray([[0.3, 0.1, 0.5]]), x, 0.1), [[0.15, 0.4, 0.85]], atol=1e-7
    )


def test_penalty_gradient_against_hand_written_objective(trained):
    net, theta, x, y = trained
    x, y = x[:64], y[:64]
    b, lam = 1.0, 2.0
    flag = jnp.asarray(np.arange(64) % 2, jnp.float32)
    batch = {"x": x, "y": y, "flag": flag}
    kw = dict(eps=0.1, step_size=0.05, steps=2)
    loss = adversarial.objective(net, "pgd", floor=b, penalty=lam, **kw)
    erm = adversarial.objective(net, "erm", floor=b, penalty=lam, **kw)

    def hand_row(t, xi, yi, fi):
        ce = _hand_ce(net.logits_fn(t, xi[None])[0], yi)
        return ce + lam * fi * jnp.maximum(b - ce, 0.0)

    @jax.jit
    def grads(t):
        x_adv = adversarial.pgd(net, t, x, y, **kw)  # a constant below: the gradient is taken at the attack point
        got = jax.grad(lambda u: loss(u, batch).mean())(t)
        want = jax.grad(lambda u: jax.vmap(hand_row, in_axes=(None, 0, 0, 0))(u, x_adv, y, flag).mean())(t)
        return got, want, x_adv, net.loss_fn(t, {"x": x_adv, "y": y})

    got, want, x_adv, adv_B = grads(theta)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-6)
    below = (np.asarray(flag) == 1) & (np.asarray(adv_B) < b)
    assert below.sum() >= 3  # the hinge is active on some flagged rows

    # With lambda = 2 a flagged row below the floor is pushed up: its gradient is minus its cross-entropy's (the
    # penalty's path through the erm objective at the attack point, one row).
    @jax.jit
    def row(t, xi, yi):
        g_got = jax.grad(lambda u: erm(u, {"x": xi[None], "y": yi[None], "flag": jnp.ones((1,))})[0])(t)
        return g_got, jax.grad(lambda u: _hand_ce(net.logits_fn(u, xi[None])[0], yi))(t)

    i = int(np.flatnonzero(below)[0])
    g_got, g_ce = row(theta, x_adv[i], y[i])
    np.testing.assert_allclose(np.asarray(g_got), -np.asarray(g_ce), rtol=1e-4, atol=1e-6)


def test_trades_objective_against_hand_formula(trained):
    net, theta, x, y = trained
    noise = jnp.asarray(np.random.default_rng(0).normal(size=x.shape), jnp.float32)
    batch = {"x": x, "y": y, "noise": noise}
    trades = adversarial.objective(net, "trades", eps=0.1, step_size=0.05, steps=3, beta=6.0)
    got = np.asarray(jax.jit(trades)(theta, batch))
    p = jax.nn.softmax(net.logits_fn(theta, x))
    x_adv = jax.jit(
        lambda t: adversarial.pgd(
            net,
            t,
            x,
            y,
            eps=0.1,
            step_size=0.05,
            steps=3,
            loss_at=lambda z: adversarial.kl_rows(net.logits_fn(t, x), net.logits_fn(t, z)),
            start_BxD=x + 0.001 * noise,
        )
    )(theta)
    q = jax.nn.softmax(net.logits_fn(theta, x_adv))
    kl = np.sum(np.asarray(p) * (np.log(np.asarray(p)) - np.log(np.asarray(q))), axis=1)
    ce = np.asarray(net.loss_fn(theta, {"x": x, "y": y}))
    np.testing.assert_allclose(got, ce + 6.0 * kl, rtol=1e-4, atol=1e-5)
    assert kl.mean() > 1e-3  # the inner attack moved the prediction


def test_flags_matched_count():
    cfg = robust.RobustConfig(pool=10, batch_size=5)
    d = np.array([0.1, 0.9, 0.5, 0.8, 0.2, 0.3, 0.7, 0.4, 0.6, 0.0])
    m = np.zeros(10)
    quadrant = np.array([2, 0, 2, 1, 2, 0, 0, 3, 0, 0], np.int8)
    sets = robust.flags(cfg, d, m, quadrant, seed=0)
    np.testing.assert_array_equal(np.flatnonzero(sets["hotspot"]), [0, 2, 4])
    np.testing.assert_array_equal(np.flatnonzero(sets["top_loss"]), [1, 3, 6])  # the 3 highest d
    assert sets["random"].sum() == 3 and sets["all"].all()


def test_summary_intervals_and_paired_differences():
    def seed(s, pgd_tpr, top_tpr):
        arm = {"natural_accuracy": 0.9, "robust_accuracy_eps0.2": 0.5, "loss_all_auc": 0.6, "lira_all_auc": 0.6}
        arm.update(adv_lira_all_tpr_at_1pct_fpr=0.1)
        arms = {"pgd_at": {**arm, "lira_all_tpr_at_1pct_fpr": pgd_tpr}}
        arms["pgd_at+demem_top_loss"] = {**arm, "lira_all_tpr_at_1pct_fpr": top_tpr}
        arms["pgd_at+demem_random"] = {**arm, "lira_all_tpr_at_1pct_fpr": top_tpr + 0.01 * s}
        return {"seed": s, "flagged": 10 + s, "overlap_hotspot_top_loss": 0, "arms": arms}

    seeds = [seed(0, 0.10, 0.07), seed(1, 0.20, 0.18), seed(2, 0.30, 0.26)]
    s = robust_report.summarize(seeds)
    half = scipy.stats.t.ppf(0.975, 2) * np.std([0.1, 0.2, 0.3], ddof=1) / np.sqrt(3)
    got = s["pgd_at.lira_all_tpr_at_1pct_fpr"]
    np.testing.assert_allclose([got["mean"], got["lo"], got["hi"]], [0.2, 0.2 - half, 0.2 + half], rtol=1e-12)
    diff = s["diff.pgd_at+demem_top_loss.lira_all_tpr_at_1pct_fpr"]
    d = np.array([-0.03, -0.02, -0.04])
    half = scipy.stats.t.ppf(0.975, 2) * d.std(ddof=1) / np.sqrt(3)
    np.testing.assert_allclose([diff["mean"], diff["lo"], diff["hi"]], [d.mean(), d.mean() - half, d.mean() + half])
    assert robust_report.verdict(diff) == "lower"
    assert robust_report.verdict(s["diff.pgd_at+demem_top_loss.natural_accuracy"]) == "interval includes 0"
    np.testing.assert_allclose(
        s["vsrandom.pgd_at+demem_top_loss.lira_all_tpr_at_1pct_fpr"]["values"], [0, -0.01, -0.02]
    )
    assert "vsrandom.pgd_at+demem_random.natural_accuracy" not in s
    rel = s["rel.pgd_at+demem_top_loss.lira_all_tpr_at_1pct_fpr"]["mean"]
    np.testing.assert_allclose(rel, np.mean([-0.3, -0.1, -4 / 30]))


def _config(**overrides):
    import importlib

    c = importlib.import_module("configs.demem_robust").get_config("quick")
    for k, v in overrides.items():
        c.classify[k] = v
    return c


@pytest.mark.parametrize(
    "field, value",
    [
        ("attack_eps", 0.0),
        ("attack_eps", 1.5),
        ("eval_eps", ()),
        ("baselines", ("pgd",)),
        ("penalty_sets", ("hotspot", "hotspot")),
        ("pool", 1790),
        ("batch_size", 7),
        ("floor", 0.0),
    ],
)
def test_config_errors_name_the_field(field, value):
    with pytest.raises(ConfigError, match=rf"classify\.{field}"):
        classify_config.from_mapping(_config(**{field: value}))


@pytest.mark.slow
def test_quick_end_to_end(tmp_path):
    import gdc.studies.classify

    c = _config(seeds=(0, 1))
    summary = gdc.studies.classify.run(c, str(tmp_path), mode="all", command="cmd")
    with open(tmp_path / "results.json") as f:
        assert set(json.load(f)) == {"demem_robust"}
    arms = summary["seeds"][0]["arms"]
    assert set(arms) == {"erm", "pgd_at", "pgd_at+demem_hotspot", "pgd_at+demem_all"}
    assert all(0.0 <= a["lira_all_auc"] <= 1.0 and 0.0 <= a["robust_accuracy_eps0.2"] <= 1.0 for a in arms.values())
    for png in summary["plots"]:
        assert os.path.getsize(tmp_path / png) > 1000
    report = (tmp_path / "report.md").read_text()
    assert "DeMem's penalty inside adversarial training" in report and "    cmd" in report
    mtime = os.path.getmtime(tmp_path / "demem_robust" / "seed_0.json")
    gdc.studies.classify.run(c, str(tmp_path), mode="report", command="other")
    assert os.path.getmtime(tmp_path / "demem_robust" / "seed_0.json") == mtime
