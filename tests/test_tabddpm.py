"""TabDDPM's hybrid diffusion (gdc.models.tabddpm) against hand-built transition matrices, and the sharpness sweep
(gdc.studies.tabular.sharp_sweep) on a Gaussian whose Hessian eigenvalues are known in closed form."""

import functools
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy import stats

from gdc import models
from gdc.errors import ConfigError
from gdc.models import tabddpm
from gdc.studies.tabular import data, sharp_sweep, sharpness
from gdc.train.step import example_keys

T = 12
_POST = jax.jit(tabddpm.cat_posterior_log)
_KL = jax.jit(tabddpm.cat_kl)
LAYOUT = types.SimpleNamespace(num_steps=T, num_numeric=2, cards=(3, 2))  # what the pure functions read of a model


def _q(alpha: float, k: int) -> np.ndarray:
    """One forward step's transition matrix, Q[i, j] = q(x_s = j | x_{s-1} = i)."""
    return alpha * np.eye(k) + (1.0 - alpha) / k * np.ones((k, k))


def _cumulative(k: int) -> list[np.ndarray]:
    """M_s = Q_0 Q_1 ... Q_s, the product of the steps' matrices (q(x_s | x_0) by rows), for s = 0..T-1."""
    _, alpha, _ = tabddpm.schedule(T)
    out, m = [], np.eye(k)
    for s in range(T):
        m = m @ _q(alpha[s], k)
        out.append(m)
    return out


def test_forward_marginal_is_the_product_of_transition_matrices():
    k = 4
    ab, _, _ = tabddpm.schedule(T)
    for s, m in enumerate(_cumulative(k)):
        x0 = np.eye(k, dtype=np.float32)  # every start category at once
        got = tabddpm.cat_marginal(jnp.asarray(x0), jnp.full((k,), ab[s], jnp.float32))
        np.testing.assert_allclose(np.asarray(got), m, rtol=1e-5, atol=1e-7)


def test_posterior_is_bayes_rule_for_three_categories():
    k = 3
    _, alpha, ab_prev = tabddpm.schedule(T)
    cum = _cumulative(k)
    p0 = np.array([0.5, 0.3, 0.2])
    a_R, b_R = np.repeat(np.arange(k), k), np.tile(np.arange(k), k)  # every (x_0, x_s) pair
    for s in (0, 1, 5, T - 1):
        prev = np.eye(k) if s == 0 else cum[s - 1]  # q(x_{s-1} | x_0); x_{-1} is x_0 itself
        q = _q(alpha[s], k)
        sched = (jnp.full((2 * k * k,), alpha[s], jnp.float32), jnp.full((2 * k * k,), ab_prev[s], jnp.float32))
        x0 = np.concatenate([np.eye(k)[a_R], np.tile(p0, (k * k, 1))])
        got = np.exp(np.asarray(_POST(jnp.asarray(x0, jnp.float32), jnp.asarray(np.eye(k)[np.tile(b_R, 2)]), *sched)))
        for r, (a, b) in enumerate(zip(a_R, b_R, strict=True)):
            # q(x_{s-1} = j | x_s = b, x_0 = a) = q(x_s = b | x_{s-1} = j) q(x_{s-1} = j | x_0 = a) / q(x_s = b | a)
            ref = np.array([q[j, b] * prev[a, j] for j in range(k)]) / (prev[a] @ q[:, b])
            np.testing.assert_allclose(got[r], ref, rtol=1e-5, atol=1e-7)
            # With x_0 drawn from p0: the posterior of the joint, sum over x_0 of p0(x_0) q(x_{s-1}, x_s | x_0).
            joint = np.array([sum(p0[c] * prev[c, j] for c in range(k)) * q[j, b] for j in range(k)])
            np.testing.assert_allclose(got[k * k + r], joint / joint.sum(), rtol=1e-5, atol=1e-7)


def test_categorical_loss_is_zero_at_the_true_x0_and_the_kl_otherwise():
    k = 3
    _, alpha, ab_prev = tabddpm.schedule(T)
    cum = _cumulative(k)
    x0, xt = np.eye(k)[[0, 2]], np.eye(k)[[0, 1]]  # row 0: x_s agrees with x_0; row 1: it does not
    for s in (0, 1):
        args = (jnp.asarray(x0, jnp.float32), jnp.asarray(xt, jnp.float32))
        sched = (jnp.full((2,), alpha[s], jnp.float32), jnp.full((2,), ab_prev[s], jnp.float32))
        exact = _KL(jnp.asarray(40.0 * x0, jnp.float32), *args, *sched)
        np.testing.assert_allclose(np.asarray(exact), 0.0, atol=1e-6)
        logits = np.log(np.array([[0.2, 0.5, 0.3], [0.6, 0.3, 0.1]]))
        got = np.asarray(_KL(jnp.asarray(logits, jnp.float32), *args, *sched))
        prev = np.eye(k) if s == 0 else cum[s - 1]
        q = _q(alpha[s], k)
        for i in range(2):
            a, b = int(x0[i].argmax()), int(xt[i].argmax())
            true = np.array([q[j, b] * prev[a, j] for j in range(k)])
            p0 = np.exp(logits[i])
            pred = np.array([q[j, b] * (p0 @ prev[:, j]) for j in range(k)])
            true, pred = true / true.sum(), pred / pred.sum()
            ref = sum(t * np.log(t / p) for t, p in zip(true, pred, strict=True) if t > 0)
            if s == 0:  # the decoder term -log p(x_0 | x_1)
                np.testing.assert_allclose(ref, -np.log(pred[a]), rtol=1e-9)
            assert ref > 0.01
            np.testing.assert_allclose(got[i], ref, rtol=1e-4)


@functools.cache
def _model(num_numeric=2, cards=(3, 2)):
    cfg = models.ModelConfig(name="tabddpm", width=16, depth=2, diffusion_steps=T, score_draws=3)
    cfg.validate()
    d = num_numeric + sum(cards)
    return models.build(cfg, seed=0, num_features=d, num_numeric=num_numeric, cards=cards)


def _rows(n, seed=0):
    rng = np.random.default_rng(seed)
    return np.concatenate(
        [rng.normal(size=(n, 2)), np.eye(3)[rng.integers(0, 3, n)], np.eye(2)[rng.integers(0, 2, n)]], axis=1
    ).astype(np.float32)


def test_loss_terms_combine_numeric_mse_and_categorical_kl():
    model = LAYOUT  # loss_terms reads only the layout and T
    x0 = jnp.asarray(_rows(4))
    eps = jnp.asarray(np.random.default_rng(1).normal(size=(4, 7)), jnp.float32)
    t = jnp.array([0, 1, 0, 1], jnp.int32)
    xt = jnp.concatenate([x0[:, :2] * 0.9, x0[:, 2:]], axis=1)
    perfect = jnp.concatenate([eps[:, :2], 40.0 * x0[:, 2:]], axis=1)
    terms = jax.jit(functools.partial(tabddpm.loss_terms, model))
    num, cat = terms(perfect, x0, xt, eps, t)
    np.testing.assert_allclose(np.asarray(num), 0.0, atol=1e-12)
    np.testing.assert_allclose(np.asarray(cat), 0.0, atol=1e-6)
    off = perfect.at[:, 0].add(0.5).at[:, 2:5].set(0.0)  # numeric error 0.5 on one of 2 columns; uniform block 1
    num, cat = terms(off, x0, xt, eps, t)
    np.testing.assert_allclose(np.asarray(num), 0.125, rtol=1e-5)
    _, alpha, ab_prev = tabddpm.schedule(T)
    kl = _KL(off[:, 2:5], x0[:, 2:5], xt[:, 2:5], jnp.asarray(alpha, jnp.float32)[t],
                        jnp.asarray(ab_prev, jnp.float32)[t])  # fmt: skip
    np.testing.assert_allclose(np.asarray(cat), np.asarray(kl) / 2, rtol=1e-4, atol=1e-7)  # mean over 2 blocks
    assert np.all(np.asarray(cat) > 0)


def test_noisy_rows_follow_the_forward_marginal():
    # x_s's categories follow q(x_s | x_0) = ab x_0 + (1 - ab) / K: chi-square on 6000 draws of one row.
    x = _rows(1)
    n, s = 6000, 5
    u = jax.random.uniform(jax.random.PRNGKey(4), (n, 7), minval=1e-6, maxval=1 - 1e-6)
    x0 = jnp.asarray(np.repeat(x, n, axis=0))
    eps = jnp.ones((n, 7))
    xt = np.asarray(jax.jit(functools.partial(tabddpm.noisy, LAYOUT))(x0, jnp.full((n,), s, jnp.int32), eps, u))
    ab = tabddpm.schedule(T)[0][s]
    np.testing.assert_allclose(xt[:, :2], np.tile(np.sqrt(ab) * x[:, :2] + np.sqrt(1 - ab), (n, 1)), rtol=1e-5)
    np.testing.assert_array_equal(xt[:, 2:].sum(1), 2.0)
    for a, b in ((2, 5), (5, 7)):
        expected = ab * x[0, a:b] + (1 - ab) / (b - a)
        assert stats.chisquare(xt[:, a:b].sum(0), expected * n).pvalue > 1e-3


@pytest.mark.slow
def test_per_example_loss_draws():
    graphdef, params = _model()
    loss = jax.jit(functools.partial(models.per_example_loss, graphdef))
    x = _rows(6)
    idx = np.arange(6, dtype=np.int32)
    perm = np.array([3, 0, 5, 1, 4, 2])
    batch, batch_p = ({"x": jnp.asarray(x[p]), "index": jnp.asarray(idx[p])} for p in (np.arange(6), perm))
    key = jax.random.PRNGKey(0)
    l0, acc = loss(params, batch, example_keys(key, jnp.int32(3), batch["index"]))
    lp, _ = loss(params, batch_p, example_keys(key, jnp.int32(3), batch_p["index"]))
    np.testing.assert_allclose(np.asarray(lp), np.asarray(l0)[perm], rtol=1e-5, atol=1e-6)
    assert np.all(np.isfinite(l0)) and np.all(np.asarray(acc) == 0)
    s0, _ = loss(params, batch, None)
    sp, _ = loss(params, batch_p, None)
    np.testing.assert_allclose(np.asarray(sp), np.asarray(s0)[perm], rtol=1e-5, atol=1e-6)
    assert not np.allclose(s0, l0)
    # The scoring loss is the mean over the row's 3 stratified draws, each draw scored on its own.
    model = nnx.merge(graphdef, params)
    t_BxZ, eps_BxZxD, u_BxZxD = (np.asarray(a) for a in tabddpm._draws(model, batch["index"], None))
    assert np.all(t_BxZ // 4 == np.arange(3)[None])  # T = 12, 3 draws: one per stratum of 4 steps

    @jax.jit
    def one_draw(x1, t1, e1, u1):
        xt = tabddpm.noisy(model, x1, t1, e1, u1)
        num, cat = tabddpm.loss_terms(model, model(xt, t1), x1, xt, e1, t1)
        return (num + cat)[0]

    ref = np.zeros(6)
    for i in range(6):
        for z in range(3):
            sl = slice(z, z + 1)
            ref[i] += float(one_draw(x[i : i + 1], t_BxZ[i, sl], eps_BxZxD[i, sl], u_BxZxD[i, sl])) / 3
    np.testing.assert_allclose(np.asarray(s0), ref, rtol=1e-4, atol=1e-6)


def test_sampling_with_a_fixed_prediction_yields_its_frequencies():
    pi_a, pi_b = np.array([0.6, 0.3, 0.1]), np.array([0.85, 0.15])
    n = 4000

    def predict(x_BxD, t_B):
        # eps_hat of data at 0 (x_s = sqrt(1 - ab) eps exactly); x_0's distribution fixed to (pi_a, pi_b).
        ab = jnp.asarray(tabddpm.schedule(T)[0], jnp.float32)[t_B]
        logits = jnp.log(jnp.asarray(np.concatenate([pi_a, pi_b]), jnp.float32))
        return jnp.concatenate([x_BxD[:, :1] / jnp.sqrt(1 - ab)[:, None], jnp.broadcast_to(logits, (len(t_B), 5))], 1)

    x = np.asarray(jax.jit(lambda k: tabddpm.sample_rows(predict, k, n, 1, (3, 2), T))(jax.random.PRNGKey(0)))
    assert x.shape == (n, 6)
    np.testing.assert_allclose(x[:, 0], 0.0, atol=1e-4)  # the numeric part lands on the data's single point
    np.testing.assert_array_equal(x[:, 1:].sum(1), 2.0)  # one-hot blocks
    assert stats.chisquare(x[:, 1:4].sum(0), pi_a * n).pvalue > 1e-3
    assert stats.chisquare(x[:, 4:6].sum(0), pi_b * n).pvalue > 1e-3
    wrong = np.array([1 / 3, 1 / 3, 1 / 3])
    assert stats.chisquare(x[:, 1:4].sum(0), wrong * n).pvalue < 1e-6  # the check has power


@pytest.mark.slow
def test_model_sample_score_and_numeric_sharpness():
    graphdef, params = _model()
    model = nnx.merge(graphdef, params)
    x = np.asarray(jax.jit(lambda k: tabddpm.sample(model, k, 5))(jax.random.PRNGKey(1)))
    assert x.shape == (5, 7) and np.isfinite(x).all()
    np.testing.assert_array_equal(x[:, 2:5].sum(1), 1.0)
    rows = _rows(3, seed=2)
    eigs = sharpness.eigenvalues(graphdef, params, rows, t=2, chunk=2)
    assert eigs.shape == (3, 2)  # the numeric columns only
    h = 1e-3
    score = jax.jit(lambda x_BxD: tabddpm.score(model, x_BxD, 2))
    for i in range(3):
        # Central differences in the numeric columns, the categorical ones held: rows (+e0, -e0, +e1, -e1).
        probe = np.tile(rows[i], (4, 1))
        probe[:, :2] += h * np.array([[1, 0], [-1, 0], [0, 1], [0, -1]])
        out = np.asarray(score(jnp.asarray(probe)))
        jac = np.stack([(out[0] - out[1]) / (2 * h), (out[2] - out[3]) / (2 * h)], axis=1)
        np.testing.assert_allclose(eigs[i], np.linalg.eigvalsh(0.5 * (jac + jac.T)), rtol=2e-2, atol=2e-2)


def test_tabddpm_needs_the_tables_layout(tmp_path):
    cfg = models.ModelConfig(name="tabddpm", width=8, depth=1)
    with pytest.raises(ConfigError, match="layout"):
        models.build(cfg, seed=0, num_features=7)
    from gdc.data import sources

    train = data.synthetic_table(40, seed=0)
    enc = data.Encoder.fit(train)
    assert enc.layout == (6, (4, 4, 4, 2))  # 3 categoricals of 4 levels, a binary label
    path = data.save(str(tmp_path / "t.npz"), enc.encode(train), train.y_N, enc.encode(train), train.y_N, enc.layout)
    meta = sources.build_dataset(sources.DataConfig(source="tabular", path=path)).meta
    assert meta["num_numeric"] == 6 and meta["cards"] == [4, 4, 4, 2] and meta["num_features"] == 20


def test_sharpness_of_a_gaussian_matches_its_closed_form():
    # p_0 = N(mu, U diag(var) U^T); p_t = N(sqrt(ab) mu, ab Sigma + (1 - ab) I): Hessian eigenvalues
    # -1 / (ab var_i + 1 - ab), the same at every x.
    rng = np.random.default_rng(0)
    d, ab = 4, 0.7
    u, _ = np.linalg.qr(rng.normal(size=(d, d)))
    var = np.array([0.01, 0.1, 1.0, 4.0])
    cov_t = ab * (u * var) @ u.T + (1 - ab) * np.eye(d)
    prec = jnp.asarray(np.linalg.inv(cov_t), jnp.float32)
    mu = jnp.asarray(rng.normal(size=d), jnp.float32)

    def score_one(x_D):
        return -prec @ (x_D - np.sqrt(ab) * mu)

    x = jnp.asarray(rng.normal(size=(5, d + 1)), jnp.float32)  # one extra column, held fixed
    eigs = np.asarray(sharpness.spectrum(lambda x_D: score_one(x_D[:d]), x, d))
    closed = np.sort(-1.0 / (ab * var + 1 - ab))
    np.testing.assert_allclose(eigs, np.broadcast_to(closed, (5, d)), rtol=1e-4)
    # kappa between the 2nd and 3rd magnitudes: two eigenvalues lie below -kappa at every row.
    kappa = 0.5 * (1 / (ab * 0.1 + 1 - ab) + 1 / (ab * 1.0 + 1 - ab))
    np.testing.assert_array_equal(sharpness.summary(eigs, kappa)["count_below"], 2)
    np.testing.assert_allclose(sharpness.summary(eigs, kappa)["neg_sum"], closed.sum(), rtol=1e-4)
    # The sweep's statistics: replicas sit on a narrower Gaussian (sharper), others on a wider one.
    wide = np.sort(-1.0 / (ab * 4 * var + 1 - ab))
    eigs_QxD = np.concatenate([np.tile(closed, (3, 1)), np.tile(wide, (5, 1))])
    replica_Q = np.array([True] * 3 + [False] * 5)
    st = sharp_sweep.at_step(eigs_QxD, replica_Q, (0.25, 0.5))
    np.testing.assert_allclose(st["kappa"], np.quantile(-eigs_QxD.ravel(), (0.25, 0.5)))
    assert st["auroc_neg_sum"] == 1.0 and st["auroc_neg_trace"] == 1.0
    np.testing.assert_allclose(st["spectrum_replica"], closed)
    np.testing.assert_allclose(st["spectrum_other"], wide)
    counts = [(eigs_QxD < -k).sum(1) for k in st["kappa"]]
    ref = [stats.mannwhitneyu(c[replica_Q], c[~replica_Q]).statistic / 15 for c in counts]
    np.testing.assert_allclose(st["auroc_count"], ref)


def test_sweep_section_and_bad_fields(tmp_path):
    from configs import tabular_ddpm
    from gdc.studies import tabular

    st = sharp_sweep.at_step(np.array([[-5.0, 1.0], [-0.1, 2.0], [-3.0, 0.5]]), np.array([True, False, False]), (0.5,))
    assert st["kappa"] == [3.0]  # median of the magnitudes 5, 0.1, 3
    loc = sharp_sweep.location_control(np.array([[3.0, 4.0], [0.0, 1.0], [1.0, 1.0]]), np.array([True, False, False]))
    assert loc["auroc_row_norm"] == 1.0  # norms 5, 1, 1.41: the replica is farthest out
    seeds = [{"sharpness_sweep": {"0": {"trained": st, "untrained": st}}, "sharpness_location": loc}] * 3
    text = "\n".join(sharp_sweep.markdown(seeds, {"sharp_quantiles": (0.5,), "model": "multinomial"}))
    assert "| 0 | 0.5 | 3 | 1.000 [1.000, 1.000] | above chance |" in text
    assert "row's norm: 1.000 [1.000, 1.000] (above chance)" in text
    assert sharp_sweep.plot(seeds, str(tmp_path), {"sharp_quantiles": (0.5,)})[0].endswith("spectrum.png")
    for field, value in (("model", "gumbel"), ("sharp_steps", (0, 99)), ("sharp_quantiles", (1.0,))):
        c = tabular_ddpm.get_config("quick")
        c.tabular[field] = value
        with pytest.raises(ConfigError, match=f"tabular.{field}"):
            tabular.run(c, str(tmp_path / "run"))


@pytest.mark.slow
def test_quick_study_with_the_multinomial_model(tmp_path):
    from configs import tabular_ddpm
    from gdc.studies import tabular

    config = tabular_ddpm.get_config("quick")
    config.tabular.model, config.tabular.arms, config.tabular.sizes = "multinomial", ("baseline",), (64,)
    if "datasets" in config.tabular:  # a config with a list of tables: the synthetic one only
        config.tabular.datasets = ("synthetic",)
    out = tabular.run(config, str(tmp_path), command="test")
    res = (out["per_seed"] if "per_seed" in out else out["tables"]["synthetic"]["per_seed"])[0]
    # The table carries its layout; generated rows are exactly one-hot in every categorical block.
    seed_dir = next(tmp_path.glob("**/seed_0/table.npz")).parent
    meta = np.load(seed_dir / "table.npz")
    f, cards = int(meta["num_numeric"]), [int(c) for c in meta["cards"]]
    enc = data.Encoder.fit(data.synthetic_table(40, seed=0))  # the synthetic generator's column layout
    assert (f, tuple(cards)) == enc.layout and f + sum(cards) == meta["x"].shape[1]
    stops = np.load(seed_dir / "probe_stops.npz")
    x_gen = stops[max((k for k in stops.files if k.startswith("x_gen_")), key=lambda k: int(k.split("_")[-1]))]
    starts = np.cumsum([f, *cards])
    for a, b in zip(starts[:-1], starts[1:], strict=True):
        np.testing.assert_array_equal(x_gen[:, a:b].sum(1), 1.0)  # each block exactly one-hot
    assert set(res["sharpness_location"]) == {"auroc_row_norm"}
    sweep = res["sharpness_sweep"]
    assert list(sweep) == [str(t) for t in config.tabular.sharp_steps]
    for st in sweep.values():
        assert len(st["trained"]["kappa"]) == len(config.tabular.sharp_quantiles)
        assert len(st["trained"]["spectrum_other"]) == f  # the numeric columns
        assert np.all(np.diff(st["trained"]["kappa"]) >= 0)
    text = (tmp_path / "report.md").read_text()
    assert "Sharpness sweep" in text and "over the numeric columns (categories held at the row's)" in text
    assert any(tmp_path.glob("*sharpness_spectrum.png"))
