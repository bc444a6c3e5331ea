"""DP-SGD accounting and Poisson sampling (gdc.studies.classify.dpsgd) and LiRA online / offline
(gdc.studies.classify.lira) against hand-computed references."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
import scipy.stats
from dp_accounting.rdp import rdp_privacy_accountant

from gdc.studies.classify import common, demem, dpsgd, lira
from gdc.studies.classify.config import DememConfig


def _rdp_to_eps(orders, rdp_values, delta):
    """The (eps, delta) conversion of Canonne, Kamath & Steinke 2020 (Prop. 12 of arXiv 2004.00010), by hand."""
    return min(
        r + math.log1p(-1.0 / a) - math.log(delta * a) / (a - 1.0) for a, r in zip(orders, rdp_values, strict=True)
    )


# ------------------------------------------------------------------------------------------------------------------
# Accountant.
# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sigma", [0.8, 2.0, 5.0])
def test_one_gaussian_step_rdp_closed_form(sigma):
    # One full-batch Gaussian step (q = 1): RDP at order a is a / (2 sigma^2) (Mironov 2017, Prop. 7).
    orders = rdp_privacy_accountant.DEFAULT_RDP_ORDERS
    want = _rdp_to_eps(orders, [a / (2 * sigma**2) for a in orders], 1e-5)
    np.testing.assert_allclose(dpsgd.epsilon(sigma, 1.0, 1, 1e-5, "rdp"), want, rtol=1e-9)
    # Composition over T steps multiplies the RDP curve by T.
    want_t = _rdp_to_eps(orders, [7 * a / (2 * sigma**2) for a in orders], 1e-5)
    np.testing.assert_allclose(dpsgd.epsilon(sigma, 1.0, 7, 1e-5, "rdp"), want_t, rtol=1e-9)


@pytest.mark.parametrize("sigma", [1.0, 2.0])
def test_one_gaussian_step_pld_matches_analytic_gaussian(sigma):
    # Exact privacy profile of the Gaussian mechanism with sensitivity 1 (Balle & Wang 2018, Thm. 8):
    # delta(eps) = Phi(1 / (2 sigma) - eps sigma) - e^eps Phi(-1 / (2 sigma) - eps sigma); solve for delta = 1e-5.
    def profile(eps):
        return (
            scipy.stats.norm.cdf(0.5 / sigma - eps * sigma)
            - math.exp(eps) * scipy.stats.norm.cdf(-0.5 / sigma - eps * sigma)
            - 1e-5
        )

    exact = scipy.optimize.brentq(profile, 1e-6, 50.0)
    got = dpsgd.epsilon(sigma, 1.0, 1, 1e-5, "pld")
    assert exact - 1e-9 <= got <= exact + 0.01  # PLD discretisation is pessimistic, never optimistic
    assert got <= dpsgd.epsilon(sigma, 1.0, 1, 1e-5, "rdp")


def test_poisson_subsampled_rdp_order_two_closed_form():
    # Integer-order RDP of the Poisson-subsampled Gaussian (Mironov, Talwar & Zhang 2019, Sec. 3.3):
    # A_2 = (1 - q)^2 + 2 q (1 - q) + q^2 exp(1 / sigma^2), RDP(2) = log A_2 per step.
    q, sigma, steps, delta = 0.1, 1.5, 300, 1e-5
    acc = rdp_privacy_accountant.RdpAccountant(orders=[2.0])
    acc.compose(dpsgd.dp_event(q, sigma, steps))
    a2 = (1 - q) ** 2 + 2 * q * (1 - q) + q**2 * math.exp(1 / sigma**2)
    np.testing.assert_allclose(acc.get_epsilon(delta), _rdp_to_eps([2.0], [steps * math.log(a2)], delta), rtol=1e-9)


def test_sigma_for_epsilon_is_the_smallest_that_reaches_the_target():
    q, steps, delta = 0.1, 600, 1e-5
    sigma = dpsgd.sigma_for_epsilon(4.0, q, steps, delta)
    assert dpsgd.epsilon(sigma, q, steps, delta) <= 4.0 < dpsgd.epsilon(sigma - 2e-4, q, steps, delta)
    # The earlier setting's sigma = 1 (no accounting then) is far from epsilon 4.
    assert dpsgd.epsilon(1.0, q, steps, delta) > 15.0


def test_padded_batch_tail_bound():
    n, q, steps = 500, 0.1, 600
    b = dpsgd.padded_batch_size(n, q, steps, 1e-12)
    assert steps * scipy.stats.binom.sf(b, n, q) <= 1e-12 < steps * scipy.stats.binom.sf(b - 1, n, q)
    acc = dpsgd.describe(1.0, q, steps, 1e-5, n)  # epsilon ~20: the padded batch grows so the extra delta stays small
    assert acc["delta_truncation_term"] <= dpsgd.TAIL_SHARE * 1e-5 and acc["padded_batch"] > b


# ------------------------------------------------------------------------------------------------------------------
# Poisson sampling and the DP-SGD update.
# ------------------------------------------------------------------------------------------------------------------
def test_poisson_batch_inclusion_rate():
    n, q, b_max, draws = 200, 0.1, 60, 3000
    keys = jax.random.split(jax.random.key(0), draws)
    idx_SxB, mask_SxB, overflow_S = jax.jit(jax.vmap(lambda k: dpsgd.poisson_batch(k, n, q, b_max)))(keys)
    idx_SxB, mask_SxB = np.asarray(idx_SxB), np.asarray(mask_SxB)
    assert not np.asarray(overflow_S).any()
    size_S = mask_SxB.sum(1)
    np.testing.assert_array_equal(mask_SxB, np.arange(b_max)[None] < size_S[:, None])  # included rows first
    hits_SxN = np.zeros((draws, n), int)
    np.add.at(hits_SxN, (np.repeat(np.arange(draws), b_max), idx_SxB.ravel()), mask_SxB.ravel())
    assert hits_SxN.max() == 1  # no example twice in a step
    counts_N = hits_SxN.sum(0)
    # Every example's inclusion count is Binomial(draws, q): the overall rate within 4 sd, and a chi-square test.
    rate = counts_N.sum() / (n * draws)
    assert abs(rate - q) < 4 * math.sqrt(q * (1 - q) / (n * draws))
    chi2 = ((counts_N - draws * q) ** 2 / (draws * q * (1 - q))).sum()
    assert scipy.stats.chi2.sf(chi2, n) > 1e-3
    # Batch sizes: mean q n, variance n q (1 - q).
    assert abs(size_S.mean() - n * q) < 4 * math.sqrt(n * q * (1 - q) / draws)
    assert 0.85 < size_S.var() / (n * q * (1 - q)) < 1.15
    # Too small a padded batch: the overflow is reported and the batch keeps b_max included rows.
    _, mask_B, overflow = dpsgd.poisson_batch(jax.random.key(1), 100, 0.5, 5)
    assert bool(overflow) and np.asarray(mask_B).all()


def test_noisy_clipped_mean_against_loop():
    rng = np.random.default_rng(0)
    g = rng.normal(size=(6, 5)) * np.array([0.1, 3.0, 0.5, 2.0, 10.0, 0.01])[:, None]
    mask = np.array([True, True, False, True, True, False])
    noise = rng.normal(size=5)
    clip, denom = 0.7, 4.5
    want = clip * noise
    for i in range(6):
        if mask[i]:
            want = want + g[i] * min(1.0, clip / np.linalg.norm(g[i]))
    got = dpsgd.noisy_clipped_mean(jnp.asarray(g), jnp.asarray(mask), jnp.asarray(noise), clip, denom)
    np.testing.assert_allclose(got, want / denom, rtol=1e-5)


@functools.cache
def _dp_setup():
    # One Net (jit keys on it), shape and (steps, b_max) for the DP-SGD tests below: they share one compilation.
    net = common.mlp(4, 3, 32, 1, seed=0)
    rng = np.random.default_rng(1)
    data = {"x": jnp.asarray(rng.normal(size=(1, 12, 4)), jnp.float32), "y": jnp.asarray(rng.integers(3, size=(1, 12)))}
    # Reference: the gradient of the hand-written objective sum_i w_i loss_i (w = 1 on the examples of a step).
    rows = {"x": data["x"][0], "y": data["y"][0]}
    grad_w = jax.jit(jax.grad(lambda t, w_N: (w_N * net.loss_fn(t, rows)).sum()))
    return net, data, dict(lr=0.1, steps=2, b_max=12), grad_w


def test_dp_train_without_noise_or_clipping_is_full_batch_gd():
    # q = 1 and b_max = n: every example every step; clip 1e6, sigma 0: two steps of theta -= lr * mean gradient.
    net, data, kw, grad_w = _dp_setup()
    key = jax.random.key(0)[None]
    got, overflow, included = dpsgd.train(net, data, net.theta0_P[None], key, q=1.0, clip=1e6, sigma=0.0, **kw)
    want = net.theta0_P
    for _ in range(2):
        want = want - 0.1 * grad_w(want, jnp.full((12,), 1.0 / 12))
    np.testing.assert_allclose(got[0], want, rtol=1e-4, atol=1e-6)
    assert int(overflow[0]) == 0 and int(included[0]) == 24
    # Clipping at a tiny norm moves the parameters by at most lr * steps * clip * n / (q n) = 0.2 * clip.
    clipped, _, _ = dpsgd.train(net, data, net.theta0_P[None], key, q=1.0, clip=1e-3, sigma=0.0, **kw)
    assert float(jnp.linalg.norm(clipped[0] - net.theta0_P)) <= 0.2 * 1e-3 * (1 + 1e-4)


def test_dp_train_poisson_steps_and_noise_scale():
    # q = 0.5: each step moves theta by lr * (sum of the included examples' gradients) / (q n), the fixed
    # denominator (not the realised batch size); with sigma > 0 each step adds lr * clip * sigma * N(0, I) / (q n).
    net, data, kw, grad_w = _dp_setup()
    n, q, lr, key = 12, 0.5, 0.1, jax.random.key(3)
    got, _, included = dpsgd.train(net, data, net.theta0_P[None], key[None], q=q, clip=1e6, sigma=0.0, **kw)
    want, sizes = net.theta0_P, []
    for step in range(2):
        idx_B, mask_B, _ = dpsgd.poisson_batch(jax.random.split(jax.random.fold_in(key, step))[0], n, q, n)
        w_N = np.zeros(n, np.float32)
        w_N[np.asarray(idx_B)[np.asarray(mask_B)]] = 1.0
        sizes.append(int(w_N.sum()))
        want = want - lr * grad_w(want, jnp.asarray(w_N)) / (q * n)
    assert int(included[0]) == sum(sizes) and sizes != [6, 6]  # a realised size differs from q n = 6
    np.testing.assert_allclose(got[0], want, rtol=1e-4, atol=1e-6)
    clip, sigma = 1e-6, 30.0  # the clipped gradients move theta < 3% of what the noise does
    noisy, _, _ = dpsgd.train(net, data, net.theta0_P[None], key[None], q=q, clip=clip, sigma=sigma, **kw)
    z = np.asarray(noisy[0] - net.theta0_P) / (lr * clip * sigma / (q * n) * math.sqrt(2))
    assert z.size > 200 and 0.85 < z.std() < 1.15 and abs(z.mean()) < 0.2


def test_shadows_are_independently_initialised():
    cfg = DememConfig(num_features=4, num_classes=3, width=8, depth=1, models=3)
    theta0 = np.asarray(demem.init_params(cfg, seed=0))
    assert theta0.shape[0] == 3 and len({row.tobytes() for row in theta0}) == 3
    np.testing.assert_array_equal(theta0, np.asarray(demem.init_params(cfg, seed=0)))
    assert not np.array_equal(theta0, np.asarray(demem.init_params(cfg, seed=1)))


# ------------------------------------------------------------------------------------------------------------------
# LiRA on a toy with known member / non-member distributions.
# ------------------------------------------------------------------------------------------------------------------
def _toy_phi(delta, r=48, n=800, seed=0):
    rng = np.random.default_rng(seed)
    in_RxN = demem.halves(n, r, seed)
    mu_out_N = rng.normal(size=n) * 2.0  # examples differ a lot: per-example calibration matters
    return mu_out_N[None] + delta * in_RxN + rng.normal(size=(r, n)), in_RxN


def test_lira_online_and_offline_reach_the_analytic_tpr():
    # phi ~ N(mu_i + 3 in, 1). With the medians known, both tests threshold phi - mu_i: TPR at FPR a is
    # Phi(3 - z_{1-a}). Each median over m ~ r/2 shadows adds variance pi / (2 m) (online: a quarter from each side).
    delta, r = 3.0, 48
    phi, in_RxN = _toy_phi(delta, r=r)
    scores = lira.lira_scores(phi, in_RxN)
    m = (r - 1) / 2
    for name, inflation in (("lira", 1 + math.pi / (4 * m)), ("lira_offline", 1 + math.pi / (2 * m))):
        met = lira.pooled_metrics(scores[name], in_RxN, prefix=name)
        for fpr in (0.01, 0.001):
            want = scipy.stats.norm.cdf(delta / math.sqrt(inflation) - scipy.stats.norm.ppf(1 - fpr))
            assert abs(met[f"{name}_tpr_at_{fpr * 100:g}pct_fpr"] - want) < 0.04, (name, fpr, want)
            assert met[f"{name}_tpr_at_{fpr * 100:g}pct_fpr"] < scipy.stats.norm.cdf(
                delta - scipy.stats.norm.ppf(1 - fpr)
            )
        want_auc = scipy.stats.norm.cdf(delta / math.sqrt(2 * inflation))
        assert abs(met[f"{name}_auc"] - want_auc) < 0.01
    # Without per-example calibration (the raw phi) the spread of mu_i hides membership: a much lower TPR.
    raw = lira.pooled_metrics(phi, in_RxN, prefix="raw")
    assert raw["raw_tpr_at_1pct_fpr"] < 0.5 * lira.pooled_metrics(scores["lira"], in_RxN)["mia_tpr_at_1pct_fpr"]


def test_lira_without_membership_signal_is_chance():
    phi, in_RxN = _toy_phi(0.0, seed=1)
    scores = lira.lira_scores(phi, in_RxN)
    for name in ("lira", "lira_offline"):
        met = lira.pooled_metrics(scores[name], in_RxN, prefix="x")
        assert abs(met["x_auc"] - 0.5) < 0.02
        assert met["x_tpr_at_1pct_fpr"] < 0.02


def test_side_stats_uses_the_median():
    phi = np.array([[0.0, 1.0], [1.0, 2.0], [100.0, 3.0], [5.0, 7.0]])
    mask = np.array([[True, True], [True, True], [True, False], [False, False]])
    mu, sd = lira.side_stats(phi, mask)
    np.testing.assert_allclose(mu, [1.0, 1.5])  # the outlier 100 does not move the first centre
    resid = np.array([0.0 - 1.0, 1.0 - 1.0, 100.0 - 1.0, 1.0 - 1.5, 2.0 - 1.5])
    np.testing.assert_allclose(sd, resid.std())
    mu, _ = lira.side_stats(phi, np.array([[True, False], [True, False], [False, False], [False, False]]))
    np.testing.assert_allclose(mu, [0.5, 0.5])  # no shadow on this side for example 1: the median over all pairs
