"""Independent references for lines where a plausible one-line bug would leave every other test green.

Each test computes its expected value by a route that shares no code with the line it covers: ``jax.grad`` of a
hand-weighted objective for the train step, ``roc_metrics`` of hand-built calibrated scores for the MIA, numpy
permutations for the per-shard shuffle, a hand count for the prune sizes, a numpy Hessian for self-influence and a
numpy conjugate-gradient loop for the CG stopping rule.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import tiny_config

from gdc import influence, models, sharding
from gdc import interventions as iv
from gdc import tracker as tracker_lib
from gdc.data import sources
from gdc.data.pipeline import EpochIterator, shard_bounds
from gdc.evaluation import mia
from gdc.evaluation.common import EvalContext
from gdc.studies.carto.arms import StudyConfig, build_arms
from gdc.theory import convex, lower_bound
from gdc.theory.config import TheoryConfig
from gdc.train import step as step_lib
from gdc.train.state import create_train_state


# --------------------------------------------------------------------------------------------------------------
# The train step weights each row's loss by batch["weight"].
# --------------------------------------------------------------------------------------------------------------
def _linear_loss(params, batch, keys_B):
    del keys_B
    logp_BxK = jax.nn.log_softmax(batch["x"] @ params["w"])
    loss_B = -jnp.take_along_axis(logp_BxK, batch["y"][:, None], axis=-1)[:, 0]
    return loss_B, (jnp.argmax(logp_BxK, -1) == batch["y"]).astype(jnp.float32)


def _one_step(params, batch):
    """One SGD step at learning rate 1 through ``step.train_step``: returns the new params (= params - grad)."""
    tx = optax.sgd(1.0)
    state = create_train_state(params, tx, 0)
    tracker = tracker_lib.ExampleTracker.create(8, 1)
    new_state, _, metrics = step_lib.train_step(
        state,
        tracker,
        batch,
        loss_fn=_linear_loss,
        tx=tx,
        schedule=optax.constant_schedule(1.0),
        tracker_cfg=tracker_lib.TrackerConfig(enabled=False),
        steps_per_epoch=1,
    )
    return new_state.params, metrics


def test_weighted_step_follows_grad_of_the_hand_weighted_mean():
    rng = np.random.default_rng(0)
    x_BxD = jnp.asarray(rng.normal(size=(6, 4)), jnp.float32)
    y_B = jnp.asarray([0, 1, 2, 1, 0, 2], jnp.int32)
    w_B = jnp.asarray([1.0, 0.5, 0.0, 2.0, 0.25, 0.0], jnp.float32)
    params = {"w": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)}
    batch = {"x": x_BxD, "y": y_B, "index": jnp.arange(6, dtype=jnp.int32), "mask": jnp.ones(6, bool), "weight": w_B}

    def hand_objective(p):  # written out here, not losses.weighted_mean
        z = x_BxD @ p["w"]
        nll = jax.nn.logsumexp(z, axis=1) - z[jnp.arange(6), y_B]
        return jnp.sum(w_B * nll) / jnp.sum(w_B)

    want = jax.tree.map(lambda p, g: p - g, params, jax.grad(hand_objective)(params))
    got, metrics = _one_step(params, batch)
    np.testing.assert_allclose(got["w"], want["w"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(metrics["loss"], hand_objective(params), rtol=1e-5)

    # Zero weight is the same as removing the row.
    keep = np.flatnonzero(np.asarray(w_B) > 0)
    pruned = {"x": x_BxD[keep], "y": y_B[keep], "index": jnp.arange(len(keep), dtype=jnp.int32)}
    pruned |= {"mask": jnp.ones(len(keep), bool), "weight": w_B[keep]}
    removed, _ = _one_step(params, pruned)
    np.testing.assert_allclose(got["w"], removed["w"], rtol=1e-5, atol=1e-6)
    # And the weights matter: the unweighted step differs (so the test would notice them being dropped).
    unweighted, _ = _one_step(params, {k: v for k, v in batch.items() if k != "weight"})
    assert np.abs(np.asarray(unweighted["w"] - got["w"])).max() > 1e-3


# --------------------------------------------------------------------------------------------------------------
# The calibrated MIA uses the reference model's losses.
# --------------------------------------------------------------------------------------------------------------
def test_calibrated_mia_uses_the_reference_model():
    cfg = tiny_config("mlp")
    ds = sources.build_dataset(cfg.data)
    kw = dict(num_features=cfg.data.num_features, num_classes=cfg.data.num_classes)
    graphdef, target = models.build(cfg.model, seed=0, **kw)
    _, reference = models.build(cfg.model, seed=1, **kw)
    mesh = sharding.make_mesh(jax.devices()[:1])
    ctx = EvalContext(graphdef, target, mesh, ds, batch_size=32, reference_params=reference)
    out = mia.evaluate(ctx)

    def losses(params, arrays):  # the whole split in one unpadded forward pass, outside the evaluator's batching
        batch = {k: jnp.asarray(arrays[k]) for k in ("x", "y")}
        return np.asarray(models.per_example_loss(graphdef, params, batch)[0], np.float64)

    s_m = losses(reference, ds.train) - losses(target, ds.train)
    s_n = losses(reference, ds.heldout) - losses(target, ds.heldout)
    assert np.abs(s_m).min() > 0, "the reference must differ from the target for this test to mean anything"
    np.testing.assert_allclose(out["mia_calibrated_scores_members"], s_m, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out["mia_calibrated_scores_nonmembers"], s_n, rtol=1e-4, atol=1e-5)
    want = mia.roc_metrics(s_m, s_n, "mia_calibrated")
    for k, v in want.items():
        assert out[k] == pytest.approx(v, abs=1e-6), k


# --------------------------------------------------------------------------------------------------------------
# Each data shard has its own shuffle, pinned to (seed, epoch, shard).
# --------------------------------------------------------------------------------------------------------------
def test_each_shard_is_shuffled_by_its_own_seed():
    n, b, shards, seed = 40, 8, 4, 5
    arrays = {"x": np.arange(n)[:, None], "y": np.zeros(n, np.int32)}
    it = EpochIterator(arrays, b, seed, shards=shards)
    bounds = shard_bounds(n, shards)
    part = b // shards
    for epoch in range(2):
        for s in range(shards):
            ids = np.arange(bounds[s], bounds[s + 1])
            want = ids[np.random.default_rng([seed, epoch, s]).permutation(len(ids))]
            got = np.concatenate([it.batch_ids(epoch, t)[s * part : (s + 1) * part] for t in range(it.steps_per_epoch)])
            np.testing.assert_array_equal(got[got < n], want, err_msg=f"epoch {epoch} shard {s}")
    # The shards' orders are not one permutation shifted: positions within the shards differ.
    first = [it.batch_ids(0, 0)[s * part : (s + 1) * part] - bounds[s] for s in range(shards)]
    assert len({tuple(f) for f in first}) > 1


# --------------------------------------------------------------------------------------------------------------
# Every prune arm of a fraction removes the same number of ids, k = round(n f) with halves up.
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("n", "fraction", "k"), [(25, 0.1, 3), (45, 0.1, 5), (30, 0.05, 2)])
def test_every_prune_arm_removes_the_same_count(n, fraction, k):
    rng = np.random.default_rng(n)
    scores = {
        "m_N": rng.random(n),
        "m_rank_N": rng.integers(0, 3, n).astype(float),  # ties at the cut
        "m_sweep_N": rng.random(n),
        "uv_N": rng.random(n),
        "d_N": rng.random(n),
        "final_loss_N": rng.random(n),
        "quadrant_N": rng.integers(0, 4, n),
    }
    prune = tuple(m for m in StudyConfig().methods if m.startswith("prune_"))
    cfg = StudyConfig(methods=prune, prune_fractions=(fraction,), random_controls=2, token_matched=False)
    arms = [a for a, _ in build_arms(scores, cfg, seed=0)]
    assert len(arms) == len(prune) + 1  # two random replicates
    for a in arms:
        assert len(a.affected_ids) == k, a.name
        assert len(a.keep_idx) == n - k, a.name
    assert len(iv.prune_random(n, fraction, "r", seed=3).affected_ids) == k


# --------------------------------------------------------------------------------------------------------------
# The lower-bound check's self-influence is g^T H^-1 g with the exact Hessian; CG honours its tolerance.
# --------------------------------------------------------------------------------------------------------------
def test_lower_bound_self_influence_against_numpy():
    n, d, l2 = 30, 3, 1e-2
    with jax.enable_x64(True):
        train, test = convex.teacher_data(n, 20, d, 2, 0.1, seed=2)
        theta_P = np.random.default_rng(1).normal(size=d + 1)
        probe = {
            "batch": convex.model_batch(train),
            "test_batch": convex.model_batch(test),
            "theta_hat_P": theta_P,
        }
        ex = lower_bound.exact_influence(probe, TheoryConfig(num_train=n, l2=l2, gtol=1e-8), 2)
    # Binary logistic regression by hand: z = x w + b, p = sigmoid(z), g_i = (p_i - y_i) (x_i, 1),
    # H = (1/n) sum_i p_i (1 - p_i) (x_i, 1)(x_i, 1)^T + l2 I.
    xt_NxP = np.c_[train["x"], np.ones(n)]
    p_N = 1.0 / (1.0 + np.exp(-xt_NxP @ theta_P))
    g_NxP = (p_N - train["y"])[:, None] * xt_NxP
    h_PxP = (xt_NxP * (p_N * (1 - p_N))[:, None]).T @ xt_NxP / n + l2 * np.eye(d + 1)
    want_N = np.einsum("np,np->n", g_NxP, np.linalg.solve(h_PxP, g_NxP.T).T)
    np.testing.assert_allclose(ex["self_influence_N"], want_N, rtol=1e-8)
    assert not np.allclose(want_N, (g_NxP**2).sum(1), rtol=1e-2)  # H^-1 is not close to the identity here
    xs_MxP = np.c_[test["x"], np.ones(len(test["y"]))]
    q_M = 1.0 / (1.0 + np.exp(-xs_MxP @ theta_P))
    g_test_P = ((q_M - test["y"])[:, None] * xs_MxP).mean(0)
    np.testing.assert_allclose(ex["pred_test_N"], g_NxP @ np.linalg.solve(h_PxP, g_test_P) / n, rtol=1e-8)


def _numpy_cg(a, b, tol):
    """Textbook CG from x = 0, stopping once ||r|| <= tol ||b|| (jax.scipy's rule with atol = 0)."""
    x, r = np.zeros_like(b), b.copy()
    p, rs = r.copy(), r @ r
    while np.sqrt(rs) > tol * np.linalg.norm(b):
        ap = a @ p
        alpha = rs / (p @ ap)
        x, r = x + alpha * p, r - alpha * ap
        rs, rs_old = r @ r, rs
        p = r + (rs / rs_old) * p
    return x


@pytest.mark.parametrize("tol", [1e-1, 1e-2, 1e-12])
def test_cg_solve_stops_at_its_tolerance(tol):
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(20, 20)))
    a = q @ np.diag(np.logspace(-1, 1, 20)) @ q.T  # condition number 100: 9, 14 and 25 iterations at these tols
    b = rng.normal(size=20)
    damping = 1e-3
    want = _numpy_cg(a + damping * np.eye(20), b, tol)
    with jax.enable_x64(True):
        got = influence.cg_solve(lambda v: jnp.asarray(a) @ v, jnp.asarray(b), damping=damping, tol=tol, maxiter=1000)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-8 * np.abs(want).max())
    exact = np.linalg.solve(a + damping * np.eye(20), b)
    err = np.linalg.norm(np.asarray(got) - exact) / np.linalg.norm(exact)
    assert (err > 1e-3) == (tol > 1e-3)  # a loose tolerance really stops early
