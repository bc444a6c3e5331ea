"""gdc.influence against ground truth: Python loops of jax.grad, jax.hessian, jnp.linalg.solve, exact LOO."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from gdc import influence, models
from gdc.influence import grads
from gdc.theory import convex


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def _logistic(n=40, d=5, k=3, seed=0):
    train, test = convex.teacher_data(n, 30, d, k, 0.1, seed)
    theta_P = jnp.asarray(np.random.default_rng(seed).normal(size=convex.num_params(d, k)))
    return convex.loss_fn(k), theta_P, convex.model_batch(train), convex.model_batch(test)


def _mlp(n=10, seed=0):
    graphdef, params = models.build(models.ModelConfig(name="mlp", width=6), seed=seed, num_features=4, num_classes=3)
    params = jax.tree.map(lambda a: a.astype(jnp.float64), params)
    theta_P, unravel = influence.flatten(params)
    rng = np.random.default_rng(seed)
    batch = {"x": jnp.asarray(rng.normal(size=(n, 4))), "y": jnp.asarray(rng.integers(0, 3, n), jnp.int32)}

    def loss_fn(t, b):
        logits = models.forward(graphdef, unravel(t), b).astype(jnp.float64)
        logp = jax.nn.log_softmax(logits)
        return -jnp.take_along_axis(logp, b["y"][:, None], axis=-1)[:, 0]

    return loss_fn, theta_P, batch


@functools.cache
def _grad_one(loss_fn):
    return jax.jit(jax.grad(lambda t, ex: loss_fn(t, ex)[0]))


def _loop_grads(loss_fn, theta_P, batch):
    """A Python loop of jax.grad, one example (as a batch of one) at a time."""
    rows = [jax.tree.map(lambda a, i=i: a[i : i + 1], batch) for i in range(batch["y"].shape[0])]
    return np.stack([np.asarray(_grad_one(loss_fn)(theta_P, row)) for row in rows])


@pytest.mark.parametrize("model", ["logistic", "mlp"])
def test_per_example_grads_match_python_loop(model):
    loss_fn, theta_P, batch = _logistic()[:3] if model == "logistic" else _mlp()
    want = _loop_grads(loss_fn, theta_P, batch)
    for batch_size in (1, 4, 64):  # 4 leaves a remainder chunk
        got = influence.per_example_grads(loss_fn, theta_P, batch, batch_size=batch_size)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_chunked_reductions_match_materialised():
    loss_fn, theta_P, batch, test = _logistic()
    g_NxP = _loop_grads(loss_fn, theta_P, batch)
    v_MxP = _loop_grads(loss_fn, theta_P, test)[:3]
    np.testing.assert_allclose(influence.grad_sq_norms(loss_fn, theta_P, batch, 7), (g_NxP**2).sum(1), rtol=1e-12)
    np.testing.assert_allclose(influence.grad_dots(loss_fn, theta_P, batch, v_MxP, 7), g_NxP @ v_MxP.T, rtol=1e-12)
    a_PxP = np.random.default_rng(1).normal(size=(theta_P.size, theta_P.size))
    got = influence.self_influence(loss_fn, theta_P, batch, lambda g: a_PxP @ g, 7)
    np.testing.assert_allclose(got, np.einsum("np,pq,nq->n", g_NxP, a_PxP, g_NxP), rtol=1e-10)


def test_chunks_never_hold_all_gradients():
    """The jitted reduction's largest intermediate is one chunk of gradients, not [N, P]."""
    loss_fn, theta_P, batch = _mlp(n=64)
    lowered = grads.map_examples.lower(loss_fn, theta_P, batch, grads._sq_norm, 8)
    text = lowered.as_text()
    assert f"64x{theta_P.size}" not in text and f"8x{theta_P.size}" in text


def test_tracin_matches_explicit_sum():
    loss_fn, theta_P, batch, test = _logistic()
    thetas_ExP = jnp.stack([theta_P, 0.5 * theta_P, -theta_P])
    lrs_E = jnp.asarray([0.1, 0.2, 0.3])
    want_NxM = sum(
        lr * _loop_grads(loss_fn, t, batch) @ _loop_grads(loss_fn, t, test).T
        for t, lr in zip(thetas_ExP, lrs_E, strict=True)
    )
    np.testing.assert_allclose(influence.tracin(loss_fn, thetas_ExP, lrs_E, batch, test, 16), want_NxM, rtol=1e-10)
    want_N = sum(lr * (_loop_grads(loss_fn, t, batch) ** 2).sum(1) for t, lr in zip(thetas_ExP, lrs_E, strict=True))
    np.testing.assert_allclose(influence.tracin(loss_fn, thetas_ExP, lrs_E, batch), want_N, rtol=1e-10)


@pytest.mark.parametrize("model", ["logistic", "mlp"])
def test_hvp_matches_hessian(model):
    loss_fn, theta_P, batch = _logistic()[:3] if model == "logistic" else _mlp()

    def f(t):
        return loss_fn(t, batch).mean() + 0.01 * t @ t

    v_P = jnp.asarray(np.random.default_rng(2).normal(size=theta_P.size))
    h_PxP = jax.jit(jax.hessian(f))(theta_P)
    np.testing.assert_allclose(
        jax.jit(influence.hvp, static_argnums=0)(f, theta_P, v_P), h_PxP @ v_P, rtol=1e-10, atol=1e-12
    )
    np.testing.assert_allclose(jax.jit(influence.exact_hessian, static_argnums=0)(f, theta_P), h_PxP, rtol=1e-12)


def test_gauss_newton_product_matches_jacobians():
    loss_fn, theta_P, batch = _mlp()
    graphdef, params = models.build(models.ModelConfig(name="mlp", width=6), seed=0, num_features=4, num_classes=3)
    _, unravel = influence.flatten(jax.tree.map(lambda a: a.astype(jnp.float64), params))

    def out_fn(t):
        return models.forward(graphdef, unravel(t), batch).astype(jnp.float64)

    def out_loss(logits):
        logp = jax.nn.log_softmax(logits)
        return -jnp.take_along_axis(logp, batch["y"][:, None], axis=-1)[:, 0].mean()

    v_P = jnp.asarray(np.random.default_rng(3).normal(size=theta_P.size))
    out = out_fn(theta_P)
    j_OxP = jax.jit(jax.jacobian(out_fn))(theta_P).reshape(out.size, -1)
    h_OxO = jax.jit(jax.hessian(out_loss))(out).reshape(out.size, out.size)
    got = jax.jit(influence.gnhvp, static_argnums=(0, 1))(out_fn, out_loss, theta_P, v_P)
    np.testing.assert_allclose(got, j_OxP.T @ (h_OxO @ (j_OxP @ v_P)), rtol=1e-10, atol=1e-13)
    # Gauss-Newton equals the Hessian for a model linear in its parameters (logistic regression).
    lf, theta_P, b = _logistic()[:3]
    out_lin = lambda t: convex.logits(t, b["x"], 3)  # noqa: E731
    ce = lambda z: -jnp.take_along_axis(jax.nn.log_softmax(z), b["y"][:, None], axis=-1).mean()  # noqa: E731
    v_P = jnp.ones_like(theta_P)
    np.testing.assert_allclose(
        influence.gnhvp(out_lin, ce, theta_P, v_P), influence.hvp(lambda t: lf(t, b).mean(), theta_P, v_P), rtol=1e-10
    )


def test_cg_and_lissa_match_solve():
    rng = np.random.default_rng(4)
    a = rng.normal(size=(12, 12))
    a_PxP = jnp.asarray(a @ a.T / 12 + 0.1 * np.eye(12))
    b_P = jnp.asarray(rng.normal(size=12))
    damping = 0.05
    want = jnp.linalg.solve(a_PxP + damping * jnp.eye(12), b_P)
    cg = influence.cg_solve(lambda v: a_PxP @ v, b_P, damping=damping, tol=1e-13, maxiter=200)
    np.testing.assert_allclose(cg, want, rtol=1e-10)
    scale = 1.05 * float(jnp.linalg.eigvalsh(a_PxP).max() + damping)
    lissa = jax.jit(lambda b: influence.lissa_solve(lambda v: a_PxP @ v, b, damping=damping, scale=scale, depth=3000))(
        b_P
    )
    np.testing.assert_allclose(lissa, want, rtol=1e-9)
    # The stochastic form (a different matvec per iteration) converges to the average system's solution.
    lissa_t = influence.lissa_solve(
        lambda v, t: a_PxP @ v * (1.0 + 0.0 * t), b_P, damping=damping, scale=scale, depth=3000, indexed=True
    )
    np.testing.assert_allclose(lissa_t, want, rtol=1e-9)
    lam = influence.power_max_eig(lambda v: a_PxP @ v, 12, iters=500, dtype=jnp.float64)
    np.testing.assert_allclose(lam, jnp.linalg.eigvalsh(a_PxP).max(), rtol=1e-8)


def test_influence_predicts_exact_loo():
    """Issue 5: influence vs exact LOO on L-BFGS logistic regression, Pearson and Spearman > 0.9."""
    n, d = 120, 8
    train, test = convex.teacher_data(n, 300, d, 2, 0.05, seed=1)
    batch, test_batch = convex.model_batch(train), convex.model_batch(test)
    obj, lf = convex.objective(2, 1e-2), convex.loss_fn(2)
    theta_P, info = influence.fit_lbfgs(obj, np.zeros(d + 1), jnp.ones((n,)), batch, gtol=1e-11)
    assert info["grad_norm"] < 1e-9
    theta_P = jnp.asarray(theta_P)
    h_PxP = influence.exact_hessian(lambda t: obj(t, jnp.ones((n,)), batch), theta_P)
    thetas_NxP, norms_N = influence.loo_retrain(obj, theta_P, jnp.ones((n,)), jnp.arange(n), batch, tol=1e-12)
    assert float(norms_N.max()) < 1e-10
    # One LOO retrain against an independent scipy fit. Both are certified by their gradient norm g: with the
    # objective l2-strongly convex, each is within g / l2 of the true optimum.
    w_N = np.ones(n)
    w_N[7] = 0
    ref_P, ref = influence.fit_lbfgs(obj, np.asarray(theta_P), jnp.asarray(w_N), batch, gtol=1e-12)
    bound = (ref["grad_norm"] + float(norms_N[7])) / 1e-2
    assert np.linalg.norm(np.asarray(thetas_NxP[7]) - ref_P) <= bound < 1e-7

    g_test_P = jax.grad(lambda t: lf(t, test_batch).mean())(theta_P)
    pred_N = influence.grad_dots(lf, theta_P, batch, jnp.linalg.solve(h_PxP, g_test_P)[None])[:, 0] / n
    actual_N = jax.vmap(lambda t: lf(t, test_batch).mean())(thetas_NxP) - lf(theta_P, test_batch).mean()
    assert scipy.stats.pearsonr(pred_N, actual_N).statistic > 0.9
    assert scipy.stats.spearmanr(pred_N, actual_N).statistic > 0.9
    self_N = influence.self_influence(lf, theta_P, batch, lambda g: jnp.linalg.solve(h_PxP, g))
    own_N = jax.vmap(lambda t, i: lf(t, batch)[i])(thetas_NxP, jnp.arange(n)) - lf(theta_P, batch)
    assert scipy.stats.pearsonr(self_N / n, own_N).statistic > 0.9
    assert scipy.stats.spearmanr(self_N, own_N).statistic > 0.9
