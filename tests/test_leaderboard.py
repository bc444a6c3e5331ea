"""gdc.scoring.alternatives and gdc.scoring.leaderboard against numpy loops, jax.grad, scipy, sklearn, hand values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from sklearn.metrics import roc_auc_score

from gdc import models
from gdc.scoring import alternatives, leaderboard

# ---------------------------------------------------------------------------------------------------- alternatives


def _el2n_reference(logits, labels):
    """Loop: ||softmax(z) - onehot(y)||_2 for one example's logits z."""
    z = np.asarray(logits, np.float64)
    p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    onehot = np.zeros_like(p)
    onehot[labels] = 1.0
    return np.sqrt(np.sum((p - onehot) ** 2))


def test_el2n_classifier_matches_numpy_loop():
    rng = np.random.default_rng(0)
    logits_RxNxK = rng.normal(size=(3, 5, 4)) * 3.0
    labels_N = rng.integers(0, 4, 5)
    want_N = np.array([np.mean([_el2n_reference(logits_RxNxK[r, i], labels_N[i]) for r in range(3)]) for i in range(5)])
    np.testing.assert_allclose(alternatives.el2n(logits_RxNxK, labels_N), want_N, rtol=1e-10)
    one_N = [_el2n_reference(logits_RxNxK[0, i], labels_N[i]) for i in range(5)]
    np.testing.assert_allclose(alternatives.el2n(logits_RxNxK[0], labels_N), one_N, rtol=1e-10)
    # A confident correct prediction scores ~0, a confident wrong one ~sqrt(2).
    sure = alternatives.el2n(np.array([[50.0, 0.0], [0.0, 50.0]]), np.array([0, 0]))
    np.testing.assert_allclose(sure, [0.0, np.sqrt(2.0)], atol=1e-10)


def test_el2n_lm_mean_over_valid_tokens():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2, 3, 4, 5))
    targets = rng.integers(0, 5, (3, 4))
    mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0], [0, 0, 0, 0]], bool)
    got = alternatives.el2n(logits, targets, mask)
    for i in range(2):
        per_model = [
            np.mean([_el2n_reference(logits[r, i, t], targets[i, t]) for t in np.flatnonzero(mask[i])])
            for r in range(2)
        ]
        np.testing.assert_allclose(got[i], np.mean(per_model), rtol=1e-10)
    assert np.isnan(got[2])  # no valid token


def test_grand_matches_jax_grad_of_handwritten_mlp():
    cfg = models.ModelConfig(name="mlp", width=6, depth=1)
    rng = np.random.default_rng(2)
    batch = {"x": jnp.asarray(rng.normal(size=(5, 4)), jnp.float32), "y": jnp.asarray(rng.integers(0, 3, 5))}

    def reference(params):
        w = {
            "w1": params["hidden"][0]["kernel"][...],
            "b1": params["hidden"][0]["bias"][...],
            "w2": params["head"]["kernel"][...],
            "b2": params["head"]["bias"][...],
        }

        def loss(w, x, y):  # cross-entropy of relu(x W1 + b1) W2 + b2, written out
            z = jnp.maximum(x @ w["w1"] + w["b1"], 0.0) @ w["w2"] + w["b2"]
            return jnp.log(jnp.sum(jnp.exp(z - z.max()))) + z.max() - z[y]

        norms = []
        for x, y in zip(batch["x"], batch["y"], strict=True):
            g = jax.grad(loss)(w, x, y)
            norms.append(np.sqrt(sum(float(np.sum(np.asarray(a, np.float64) ** 2)) for a in jax.tree.leaves(g))))
        return np.array(norms)

    params = [models.build(cfg, seed=s, num_features=4, num_classes=3)[1] for s in (0, 1)]
    graphdef = models.build(cfg, seed=0, num_features=4, num_classes=3)[0]
    ref = [reference(p) for p in params]
    np.testing.assert_allclose(alternatives.grand(graphdef, params, batch), (ref[0] + ref[1]) / 2, rtol=1e-5)
    np.testing.assert_allclose(alternatives.grand(graphdef, params[0], batch, method="grads"), ref[0], rtol=1e-5)


def test_aum_matches_numpy_loop():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(4, 6, 3))
    labels = rng.integers(0, 3, 6)
    logits[1, 2] = np.nan  # example 2 not observed at epoch 1
    logits[:, 5] = np.nan  # example 5 never observed
    want = []
    for i in range(6):
        margins = []
        for e in range(4):
            z = logits[e, i]
            if np.isnan(z).any():
                continue
            margins.append(z[labels[i]] - max(z[k] for k in range(3) if k != labels[i]))
        want.append(np.mean(margins) if margins else np.nan)
    np.testing.assert_allclose(alternatives.aum(logits, labels), want, rtol=1e-12)
    # Hand value: logits (2, 0, 1) with label 0 -> margin 1; with label 1 -> -2.
    np.testing.assert_allclose(alternatives.aum(np.array([[[2.0, 0.0, 1.0]] * 2]), np.array([0, 1])), [1.0, -2.0])


def test_trace_features_on_hand_built_traces():
    nan = np.nan
    loss_NxE = np.array(
        [
            [3.0, 1.0, 2.0, 0.5],  # A
            [1.0, nan, 2.0, 3.0],  # B: a gap, never drops
            [nan, nan, 0.7, nan],  # C: one observation
            [nan, nan, nan, nan],  # D: never observed
            [2.0, 1.0, 2.0, 1.0],  # E: two equal drops (the first wins)
        ]
    )
    f = alternatives.trace_features(loss_NxE.T)
    assert set(f) == set(alternatives.TRACE_FEATURES)
    np.testing.assert_allclose(f["area"], [4.75 / 3, 5.5 / 3, 0.7, nan, 1.5])
    np.testing.assert_allclose(f["drop_epoch"], [1, nan, nan, nan, 1])
    np.testing.assert_allclose(f["drop"], [2.0, nan, nan, nan, 1.0])
    np.testing.assert_allclose(f["final_minus_min"], [0.0, 2.0, 0.0, nan, 0.0])
    np.testing.assert_allclose(f["variance"], [0.921875, 2.0 / 3.0, 0.0, nan, 0.25])


# ---------------------------------------------------------------------------------------------------- leaderboard


def test_spearman_matches_scipy_drops_nan_and_interval_covers():
    rng = np.random.default_rng(4)
    truth = rng.normal(size=300)
    score = truth + rng.normal(size=300)
    score[:5] = np.round(score[:5])  # a few ties
    score[10], truth[20] = np.nan, np.nan
    got = leaderboard.spearman(score, truth, n_boot=300, seed=0)
    keep = ~(np.isnan(score) | np.isnan(truth))
    want = scipy.stats.spearmanr(score[keep], truth[keep]).statistic
    np.testing.assert_allclose(got["value"], want, rtol=1e-12)
    assert got["dropped"] == 2 and got["n"] == 298
    assert got["lo"] < got["value"] < got["hi"] and got["hi"] - got["lo"] < 0.3
    assert leaderboard.spearman(score, truth, n_boot=300, seed=0) == got  # seeded


def test_auroc_matches_sklearn_and_interval_covers():
    rng = np.random.default_rng(5)
    positive = np.zeros(400, bool)
    positive[:20] = True
    score = rng.normal(size=400) + positive * 1.5
    got = leaderboard.auroc(score, positive, n_boot=300, seed=0)
    np.testing.assert_allclose(got["value"], roc_auc_score(positive, score), rtol=1e-12)
    assert got["lo"] < got["value"] < got["hi"] and got["positives"] == 20
    # The rank form used in the bootstrap equals sklearn's, ties included.
    tied = np.round(score)
    np.testing.assert_allclose(leaderboard._auroc_ranks(tied, positive), roc_auc_score(positive, tied), rtol=1e-12)
    score[0], score[1] = np.nan, -np.inf  # NaN dropped, -inf kept as the lowest score
    got = leaderboard.auroc(score, positive, n_boot=10)
    keep = ~np.isnan(score)
    want = roc_auc_score(positive[keep], np.where(np.isinf(score), -1e9, score)[keep])
    assert got["dropped"] == 1 and got["value"] == pytest.approx(want, rel=1e-12)
    assert np.isnan(leaderboard.auroc(score, np.zeros(400, bool))["value"])


def test_precision_at_perfect_reversed_random_and_positives():
    rng = np.random.default_rng(6)
    truth = rng.normal(size=1000)
    fr = (0.01, 0.05, 0.1)
    assert [v["precision"] for v in leaderboard.precision_at(truth, truth_N=truth, fractions=fr).values()] == [1, 1, 1]
    assert [v["precision"] for v in leaderboard.precision_at(-truth, truth_N=truth, fractions=fr).values()] == [0, 0, 0]
    rand = [
        leaderboard.precision_at(rng.normal(size=1000), truth_N=truth, fractions=(0.1,))[0.1]["precision"]
        for _ in range(50)
    ]
    assert abs(np.mean(rand) - 0.1) < 0.02  # k / N
    # Positives, by hand: 10 examples, positives {0, 1, 2}; the score ranks 0, 1, 5, 2, ... first.
    positive = np.zeros(10, bool)
    positive[:3] = True
    score = np.array([9.0, 8.0, 6.0, 0, 0, 7.0, 0, 0, 0, 0])
    got = leaderboard.precision_at(score, positive_N=positive, fractions=(0.2, 0.3, 0.4, 0.5))
    assert [got[f]["hits"] for f in (0.2, 0.3, 0.4, 0.5)] == [2, 2, 3, 3]
    assert got[0.3]["precision"] == pytest.approx(2 / 3) and got[0.5]["ceiling"] == pytest.approx(3 / 5)


def test_precision_ties_seeded_and_curve_matches_brute_force():
    # Ties: every score equal -> the top-k is the seeded permutation's first k, so seeds differ but each is stable.
    flat = np.zeros(100)
    positive = np.arange(100) < 50
    hits = {
        s: leaderboard.precision_at(flat, positive_N=positive, fractions=(0.1,), seed=s)[0.1]["hits"] for s in range(20)
    }
    assert hits[3] == leaderboard.precision_at(flat, positive_N=positive, fractions=(0.1,), seed=3)[0.1]["hits"]
    assert len(set(hits.values())) > 1 and abs(np.mean(list(hits.values())) - 5) < 1.5
    rng = np.random.default_rng(7)
    truth, score = rng.normal(size=60), rng.normal(size=60)
    curve = leaderboard.precision_curve(score, truth_N=truth)
    top = lambda x, k: set(np.argsort(-x)[:k].tolist())  # noqa: E731 (no ties in continuous draws)
    want = [len(top(score, k) & top(truth, k)) / k for k in range(1, 61)]
    np.testing.assert_allclose(curve["precision_K"], want, rtol=1e-12)
    np.testing.assert_allclose(curve["random_K"], np.arange(1, 61) / 60)
    pos = truth > 1.0
    curve = leaderboard.precision_curve(score, positive_N=pos, ks=[1, 7, 60])
    want = [pos[np.argsort(-score)[:k]].mean() for k in (1, 7, 60)]
    np.testing.assert_allclose(curve["precision_K"], want, rtol=1e-12)


def test_table_orders_by_spearman_with_intervals_and_cost():
    rng = np.random.default_rng(8)
    truth = rng.normal(size=200)
    positive = truth > np.quantile(truth, 0.95)
    noisy = truth + rng.normal(size=200)
    noisy[0] = np.nan
    scores = {"reversed": -truth, "noisy": noisy, "oracle": truth.copy()}
    rows = leaderboard.table(scores, truth, positive, cost={"oracle": 30.0, "noisy": 3.0}, train_cost=10.0, n_boot=50)
    assert [r["name"] for r in rows] == ["oracle", "noisy", "reversed"]
    oracle, noisy_row, rev = rows
    assert oracle["spearman"] == pytest.approx(1.0) and rev["spearman"] == pytest.approx(-1.0)
    assert oracle["auroc"] == 1.0 and oracle["precision@0.05"] == 1.0 and oracle["precision_pos@0.05"] == 1.0
    assert noisy_row["dropped"] == 1 and noisy_row["n"] == 199
    for m in leaderboard.metrics(noisy_row):
        assert noisy_row[f"{m}_lo"] <= noisy_row[m] <= noisy_row[f"{m}_hi"], m
    assert oracle["cost"] == 3.0 and noisy_row["cost"] == pytest.approx(0.3) and np.isnan(rev["cost"])


def test_pool_t_interval_over_seeds():
    a = [{"name": "x", "spearman": 0.5, "spearman_lo": 0.4, "spearman_hi": 0.6, "cost": 1.0}]
    b = [{"name": "x", "spearman": 0.7, "spearman_lo": 0.6, "spearman_hi": 0.8, "cost": 3.0}]
    c = [{"name": "y", "spearman": 0.9, "spearman_lo": 0.8, "spearman_hi": 1.0}]
    rows = leaderboard.pool([a, b + c])
    assert [r["name"] for r in rows] == ["y", "x"]
    x = rows[1]
    half = 12.706204736174698 * np.std([0.5, 0.7], ddof=1) / np.sqrt(2)  # t_{0.975, 1} from tables
    assert x["spearman"] == pytest.approx(0.6) and x["spearman_hi"] == pytest.approx(0.6 + half)
    assert x["seeds"] == 2 and x["cost"] == 2.0
    assert rows[0]["seeds"] == 1 and np.isnan(rows[0]["spearman_lo"])
