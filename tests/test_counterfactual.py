"""gdc.influence.counterfactual against references: separate runs, a hand-written step loop, numpy loops, hand
computations, a ridge lookup model with a closed-form answer, and a memorizing classifier."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.stats

from gdc import models, sharding
from gdc.data import canaries
from gdc.influence import counterfactual as cf
from gdc.train.state import TrainConfig


@pytest.fixture(autouse=True)
def fast_compile():
    """XLA's light optimisation: these programs are tiny and compile-bound (3x less compile time, same semantics)."""
    before = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", before)


def _mlp_setup(k=4, n=48, seed=0):
    rng = np.random.default_rng(seed)
    data = {"x": rng.normal(size=(n, 5)).astype(np.float32), "y": rng.integers(0, 3, n).astype(np.int32)}
    graphdef, params_K = cf.init_ensemble(
        models.ModelConfig(name="mlp", width=8), range(10, 10 + k), num_features=5, num_classes=3
    )
    return graphdef, params_K, data


def _gru_setup(k=3, n=24, length=8, vocab=16, seed=0):
    rng = np.random.default_rng(seed)
    data = {
        "tokens": rng.integers(0, vocab, (n, length + 1)).astype(np.int32),
        "token_mask": rng.random((n, length)) < 0.9,
    }
    graphdef, params_K = cf.init_ensemble(models.ModelConfig(name="gru", width=8), range(k), vocab_size=vocab)
    return graphdef, params_K, data


def _allclose_tree(got, want, rtol, atol):
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=rtol, atol=atol)


# ----------------------------------------------------------------------------------------------------- subsets


def test_subset_masks_reproducible_half_and_independent():
    k, n = 32, 4000
    in_KxN = cf.subset_masks(3, k, n)
    assert in_KxN.dtype == bool and in_KxN.shape == (k, n)
    np.testing.assert_array_equal(in_KxN, cf.subset_masks(3, k, n))
    assert (in_KxN != cf.subset_masks(4, k, n)).mean() > 0.4
    np.testing.assert_array_equal(cf.subset_masks(3, 8, n), in_KxN[:8])  # growing K keeps the first models
    # Each model ~ half (4 sigma of Binomial(n, 1/2)), each example ~ half of the models on average.
    assert np.abs(in_KxN.mean(axis=1) - 0.5).max() < 4 * 0.5 / np.sqrt(n)
    assert abs(in_KxN.mean() - 0.5) < 4 * 0.5 / np.sqrt(k * n)
    # Independence across models: pairwise correlations of the rows are at noise level, agreements at 1/2.
    corr_KxK = np.corrcoef(in_KxN.astype(np.float64))
    off = corr_KxK[~np.eye(k, dtype=bool)]
    assert np.abs(off).max() < 5 / np.sqrt(n)
    assert abs(off.mean()) < 4 / np.sqrt(n * k * (k - 1) / 2)

    key = jax.random.key(5)
    in_jax = cf.subset_masks(key, k, n)
    np.testing.assert_array_equal(in_jax, cf.subset_masks(key, k, n))
    np.testing.assert_array_equal(cf.subset_masks(key, 4, n), in_jax[:4])
    assert np.abs(in_jax.mean(axis=1) - 0.5).max() < 4 * 0.5 / np.sqrt(n)
    assert np.abs(np.corrcoef(in_jax.astype(np.float64))[~np.eye(k, dtype=bool)]).max() < 5 / np.sqrt(n)


def test_epoch_order_visits_each_member_once_then_pads():
    n, b = 37, 4
    in_N = np.random.default_rng(0).random(n) < 0.5
    steps = -(-int(in_N.sum() + 6) // b)  # more slots than members
    orders = [np.asarray(cf.epoch_order(jax.random.PRNGKey(e), jnp.asarray(in_N), steps, b)) for e in range(3)]
    for idx_SxB in orders:
        flat = idx_SxB.reshape(-1)
        count = int(in_N.sum())
        assert sorted(flat[:count].tolist()) == np.flatnonzero(in_N).tolist()
        assert (flat[count:] == n).all()
    assert not np.array_equal(orders[0], orders[1])


# ---------------------------------------------------------------------------------------------------- training


@pytest.mark.parametrize("setup", ["mlp", "gru"])
def test_ensemble_equals_separate_runs(setup):
    graphdef, params_K, data = _mlp_setup() if setup == "mlp" else _gru_setup()
    k, n = jax.tree.leaves(params_K)[0].shape[0], next(iter(data.values())).shape[0]
    in_KxN = cf.subset_masks(1, k, n)
    assert len(set(in_KxN.sum(axis=1).tolist())) > 1  # subsets of different sizes: some models get padded steps
    cfg = TrainConfig(batch_size=4 if setup == "gru" else 8, num_epochs=2, learning_rate=1e-2, schedule="cosine")
    ens = cf.train_ensemble(graphdef, params_K, data, in_KxN, cfg, seed=7)
    seq = cf.train_sequential(graphdef, params_K, data, in_KxN, cfg, seed=7)
    _allclose_tree(ens.params, seq.params, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(ens.loss_KxE, seq.loss_KxE, rtol=1e-5)
    assert ens.loss_KxE.shape == (k, 2)
    if setup == "mlp":  # groups of 3 of the 4 models: a group of 3, then a remainder of 1
        grouped = cf.train_ensemble(graphdef, params_K, data, in_KxN, cfg, seed=7, vmap_size=3)
        _allclose_tree(grouped.params, seq.params, rtol=1e-4, atol=1e-6)
    assert all(not np.allclose(a[0], a[1]) for a in jax.tree.leaves(ens.params))  # the models differ


def test_one_model_matches_a_hand_written_step_loop():
    """Model 1 has 9 members, model 0 has 20: with B = 4 model 1 sees a part-padded batch and two empty ones."""
    graphdef, params_K, data = _mlp_setup(k=2, n=30)
    in_KxN = np.zeros((2, 30), bool)
    in_KxN[0, :20] = True
    in_KxN[1, [1, 4, 6, 9, 12, 17, 21, 25, 29]] = True
    cfg = TrainConfig(batch_size=4, num_epochs=2, learning_rate=3e-2, schedule="cosine", grad_clip=1.0)
    got = cf.train_sequential(graphdef, params_K, data, in_KxN, cfg, seed=3)

    steps = 5  # ceil(20 / 4)
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(optax.cosine_decay_schedule(3e-2, 2 * steps)))

    @jax.jit
    def update(params, opt_state, x_B, y_B):
        def objective(p):
            return models.per_example_loss(graphdef, p, {"x": x_B, "y": y_B})[0].mean()

        loss, grads = jax.value_and_grad(objective)(params)
        upd, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, upd), opt_state, loss

    key_1 = jax.random.fold_in(jax.random.PRNGKey(3), 1)
    params = jax.tree.map(lambda a: a[1], params_K)
    opt_state = tx.init(params)
    loss_E = []
    for e in range(2):
        order_key = jax.random.fold_in(jax.random.fold_in(key_1, 0), e)
        order = np.asarray(cf.epoch_order(order_key, jnp.asarray(in_KxN[1]), steps, 4))
        total = 0.0
        for idx_B in order:
            rows = idx_B[idx_B < 30]  # drop the padding
            if rows.size == 0:
                continue
            params, opt_state, loss = update(params, opt_state, data["x"][rows], data["y"][rows])
            total += float(loss) * rows.size
        loss_E.append(total / 9)
    _allclose_tree(jax.tree.map(lambda a: a[1], got.params), params, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(got.loss_KxE[1], loss_E, rtol=1e-5)


def test_models_split_over_devices_train_as_on_one():
    graphdef, params_K, data = _mlp_setup(k=8, n=40)
    in_KxN = cf.subset_masks(4, 8, 40)
    cfg = TrainConfig(batch_size=8, num_epochs=2, learning_rate=1e-2)
    mesh = sharding.make_mesh(jax.devices()[:4])  # two models per device
    split = cf.train_ensemble(graphdef, params_K, data, in_KxN, cfg, seed=1, mesh=mesh)
    one = cf.train_ensemble(graphdef, params_K, data, in_KxN, cfg, seed=1)
    assert jax.tree.leaves(split.params)[0].sharding.spec == jax.sharding.PartitionSpec(sharding.DATA)
    _allclose_tree(split.params, one.params, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(split.loss_KxE, one.loss_KxE, rtol=1e-5)
    perf_split, perf_one = cf.performance(graphdef, split.params, data), cf.performance(graphdef, one.params, data)
    np.testing.assert_allclose(perf_split["loss_KxN"], perf_one["loss_KxN"], rtol=1e-5)
    one_at_a_time = cf.train_ensemble(graphdef, params_K, data, in_KxN, cfg, seed=1, mesh=mesh, vmap_size=1)
    _allclose_tree(one_at_a_time.params, one.params, rtol=1e-5, atol=1e-7)
    placed = cf._place(mesh, params_K, in_KxN, cf.model_keys(1, 8), data)
    steps = cf.steps_per_epoch(in_KxN, 8)
    lowered = cf._ensemble_program.lower(*placed, graphdef=graphdef, cfg=cfg, steps=steps, vmap_size=0, mesh=mesh)
    hlo = lowered.compile().as_text()
    assert not [op for op in ("all-gather", "all-reduce", "all-to-all", "collective-permute") if op in hlo]
    with pytest.raises(ValueError, match="split evenly"):
        cf.train_ensemble(graphdef, params_K, data, in_KxN, cfg, seed=1, mesh=sharding.make_mesh(jax.devices()[:3]))


def test_non_members_never_touch_a_model():
    graphdef, params_K, data = _mlp_setup(k=3, n=40)
    in_KxN = cf.subset_masks(2, 3, 40)
    cfg = TrainConfig(batch_size=8, num_epochs=2, learning_rate=1e-2)
    base = cf.train_ensemble(graphdef, params_K, data, in_KxN, cfg, seed=0)
    out_of_0 = ~in_KxN[0]
    changed = {"x": np.where(out_of_0[:, None], 100.0, data["x"]).astype(np.float32), "y": (data["y"] + 1) % 3}
    changed["y"] = np.where(out_of_0, changed["y"], data["y"]).astype(np.int32)
    moved = cf.train_ensemble(graphdef, params_K, changed, in_KxN, cfg, seed=0)
    for a, b in zip(jax.tree.leaves(base.params), jax.tree.leaves(moved.params), strict=True):
        np.testing.assert_array_equal(np.asarray(a[0]), np.asarray(b[0]))
        assert not np.allclose(a[1:], b[1:])  # the other models did train on some of the changed rows


# ------------------------------------------------------------------------------------------------- performance


def test_performance_matches_per_model_passes_and_a_numpy_span_accuracy():
    graphdef, params_K, data = _gru_setup(k=2, n=13)
    span_NxL = np.zeros((13, 8), bool)
    span_NxL[::2, 2:5] = True  # odd rows have no span
    got = cf.performance(graphdef, params_K, data, span_mask_NxL=span_NxL, batch_size=4)  # 13 rows: a padded chunk
    for k in range(2):
        params = jax.tree.map(lambda a, k=k: a[k], params_K)
        loss_N, acc_N = models.per_example_loss(graphdef, params, {n: jnp.asarray(v) for n, v in data.items()})
        np.testing.assert_allclose(got["loss_KxN"][k], loss_N, rtol=1e-5)
        np.testing.assert_allclose(got["acc_KxN"][k], acc_N, rtol=1e-6)
        logits = np.asarray(models.forward(graphdef, params, {"tokens": jnp.asarray(data["tokens"])}), np.float64)
        for i in range(13):
            cols = [t for t in range(8) if span_NxL[i, t] and data["token_mask"][i, t]]
            if not cols:
                assert np.isnan(got["span_acc_KxN"][k, i]) and np.isnan(got["span_loss_KxN"][k, i])
                continue
            targets = data["tokens"][i, 1:][cols]
            want_acc = np.mean([np.argmax(logits[i, t]) == data["tokens"][i, t + 1] for t in cols])
            logp = logits[i, cols] - np.log(np.exp(logits[i, cols]).sum(-1, keepdims=True))
            want_loss = -np.mean(logp[np.arange(len(cols)), targets])
            np.testing.assert_allclose(got["span_acc_KxN"][k, i], want_acc, rtol=1e-6)
            np.testing.assert_allclose(got["span_loss_KxN"][k, i], want_loss, rtol=1e-4)


def test_canary_span_mask_covers_the_secret_digits():
    tokens = np.random.default_rng(0).integers(97, 123, (30, 65)).astype(np.int32)
    tokens, _, meta = canaries.insert_canaries(
        tokens, num_canaries=3, canary_repeats=2, secret_digits=6, num_control_canaries=0, seed=1,
        placement="random_offset",
    )  # fmt: skip
    span_NxL = cf.canary_span_mask(meta, 30, 64)
    assert span_NxL.sum() == 3 * 2 * 6
    for c in meta["inserted"]:
        for row in c["ids"]:
            assert bytes(tokens[row, 1:][span_NxL[row]].astype(np.uint8)).decode() == c["secret"]


# -------------------------------------------------------------------------------------------------- estimator


def _estimate_loop(perf_KxN, in_KxN, sign):
    mem, se = [], []
    for i in range(perf_KxN.shape[1]):
        a, b = perf_KxN[in_KxN[:, i], i], perf_KxN[~in_KxN[:, i], i]
        mem.append(sign * (a.mean() - b.mean()) if len(a) and len(b) else np.nan)
        se.append(np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b)) if len(a) > 1 and len(b) > 1 else np.nan)
    return np.array(mem), np.array(se)


@pytest.mark.parametrize("lower_is_better", [True, False])
def test_estimate_matches_a_numpy_loop(lower_is_better):
    rng = np.random.default_rng(0)
    perf_KxN = rng.normal(size=(7, 60))
    in_KxN = rng.random((7, 60)) < 0.5
    in_KxN[:, 0], in_KxN[:, 1] = True, False  # never out, never in
    in_KxN[:, 2] = [True] + [False] * 6  # one model in: a mean but no variance
    with np.errstate(all="ignore"):
        want_mem, want_se = _estimate_loop(perf_KxN, in_KxN, -1.0 if lower_is_better else 1.0)
    got = cf.estimate(perf_KxN, in_KxN, lower_is_better=lower_is_better)
    np.testing.assert_allclose(got.mem_N, want_mem, rtol=1e-12)  # NaNs in the same places
    np.testing.assert_allclose(got.se_N, want_se, rtol=1e-12)
    np.testing.assert_array_equal(got.n_in_N, in_KxN.sum(0))
    assert np.isnan(got.mem_N[:2]).all() and np.isfinite(got.mem_N[2]) and np.isnan(got.se_N[2])


def test_standard_error_by_hand():
    perf = np.array([[1.0], [2.0], [3.0], [10.0], [14.0]])
    member = np.array([[True], [True], [True], [False], [False]])
    # in: mean 2, var 1 (ddof 1); out: mean 12, var 8; se = sqrt(1/3 + 8/2).
    got = cf.estimate(perf, member, lower_is_better=True)
    assert got.mem_N[0] == pytest.approx(10.0) and got.se_N[0] == pytest.approx(np.sqrt(1 / 3 + 4.0))
    got = cf.estimate(perf, member, lower_is_better=False)
    assert got.mem_N[0] == pytest.approx(-10.0)
    perf_nan = perf.copy()
    perf_nan[0, 0] = np.nan  # an empty span on one model makes the example's estimate NaN
    assert np.isnan(cf.estimate(perf_nan, member, lower_is_better=True).mem_N[0])


def test_ridge_lookup_has_its_closed_form_memorization():
    """Ridge on one-hot keys: example i of a key with d copies has loss (y lam / (c + lam))^2, c the copies trained
    on, so mem_i = E[loss(Bin(d-1, 1/2))] - E[loss(1 + Bin(d-1, 1/2))]: y^2 (1 - lam^2/(1+lam)^2) for a unique key,
    a few percent of that for a key with 8 copies. Fitted by a general linear solve per subset, not by the one-hot
    shortcut."""
    lam = 0.5
    copies = [1, 1, 1, 2, 4, 8]
    key_N = np.repeat(np.arange(len(copies)), copies)
    y_key = np.array([1.0, -2.0, 1.5, 2.0, -1.0, 3.0])
    x_NxD, y_N = np.eye(len(copies))[key_N], y_key[key_N]
    k = 3000
    in_KxN = cf.subset_masks(0, k, len(key_N))
    perf_KxN = np.empty(in_KxN.shape)
    for r in range(k):
        xs, ys = x_NxD[in_KxN[r]], y_N[in_KxN[r]]
        w_D = np.linalg.solve(xs.T @ xs + lam * np.eye(x_NxD.shape[1]), xs.T @ ys)
        perf_KxN[r] = (x_NxD @ w_D - y_N) ** 2
    got = cf.estimate(perf_KxN, in_KxN, lower_is_better=True)

    def exact(d, y):
        pmf = scipy.stats.binom.pmf(np.arange(d), d - 1, 0.5)
        loss = (y * lam / (np.arange(d + 1) + lam)) ** 2
        return pmf @ loss[:-1] - pmf @ loss[1:]

    want_N = np.array([exact(copies[j], y_key[j]) for j in key_N])
    unique = np.array([copies[j] == 1 for j in key_N])
    np.testing.assert_allclose(got.mem_N[unique], want_N[unique], rtol=1e-10)  # no randomness: exact
    np.testing.assert_allclose(got.mem_N[unique], y_N[unique] ** 2 * (1 - lam**2 / (1 + lam) ** 2), rtol=1e-10)
    z_N = (got.mem_N[~unique] - want_N[~unique]) / got.se_N[~unique]
    assert np.abs(z_N).max() < 4.5, z_N  # the estimate is within its standard error of the truth
    per_unit_N = got.mem_N / y_N**2  # a copy of 8 is far less memorized than a unique example of the same label
    assert per_unit_N[key_N == 5].max() < 0.05 * per_unit_N[unique].min()


def test_memorizing_classifier_marks_unique_examples_not_duplicated_ones():
    """An MLP on one-hot keys with random labels can only memorize: a key seen once has a large counterfactual
    memorization, a key with 8 copies ~ none (all 7 other copies are out with probability 1/128)."""
    rng = np.random.default_rng(0)
    n_unique, n_dup, copies, classes = 16, 3, 8, 4
    key_N = np.concatenate([np.arange(n_unique), np.repeat(np.arange(n_unique, n_unique + n_dup), copies)])
    labels = rng.integers(0, classes, n_unique + n_dup)
    data = {"x": np.eye(n_unique + n_dup, dtype=np.float32)[key_N], "y": labels[key_N].astype(np.int32)}
    k = 16
    graphdef, params_K = cf.init_ensemble(
        models.ModelConfig(name="mlp", width=32), range(k), num_features=n_unique + n_dup, num_classes=classes
    )
    in_KxN = cf.subset_masks(0, k, len(key_N))
    cfg = TrainConfig(batch_size=len(key_N), num_epochs=60, learning_rate=0.1)
    ens = cf.train_ensemble(graphdef, params_K, data, in_KxN, cfg, seed=0)
    perf = cf.performance(graphdef, ens.params, data)
    assert np.where(in_KxN, perf["acc_KxN"], 1.0).min() == 1.0  # every model fits all its members
    mem = cf.estimate(perf["loss_KxN"], in_KxN, lower_is_better=True).mem_N
    mem_acc = cf.estimate(perf["acc_KxN"], in_KxN, lower_is_better=False).mem_N
    unique = np.arange(len(key_N)) < n_unique
    assert np.nanmean(mem[unique]) > 1.0
    assert np.abs(mem[~unique]).max() < 0.05 * np.nanmean(mem[unique])
    assert np.nanmean(mem_acc[unique]) > 0.5 and np.abs(mem_acc[~unique]).max() < 0.1


# ----------------------------------------------------------------------------------------------- stability


def test_split_half_stability_consistent_signal_and_noise():
    rng = np.random.default_rng(0)
    k, n = 16, 3000
    in_KxN = cf.subset_masks(1, k, n)
    true_N = rng.exponential(size=n)
    base_N = rng.normal(size=n)
    consistent = cf.split_half_stability(base_N - in_KxN * true_N, in_KxN, 0, lower_is_better=True)
    assert consistent["models"] == [4, 8, 16]
    np.testing.assert_allclose(consistent["curve"], 1.0, rtol=1e-12)
    assert consistent["spearman"] == pytest.approx(1.0)
    noise = cf.split_half_stability(rng.normal(size=(k, n)), in_KxN, 0, lower_is_better=True, repeats=4)
    assert np.abs(noise["curve"]).max() < 0.06
    # A signal under noise: the split-half agreement grows with the models per half.
    noisy = cf.split_half_stability(
        base_N - in_KxN * true_N + rng.normal(size=(k, n)) * 2.0, in_KxN, 0, lower_is_better=True, repeats=4
    )
    assert noisy["curve"][0] < noisy["curve"][1] < noisy["curve"][2] < 1.0
    # An example has an estimate from m models iff it is neither in all nor out of all of them, in both halves.
    np.testing.assert_allclose(noisy["examples"], n * (1 - 2.0 ** (1 - np.array([2, 4, 8]))) ** 2, rtol=0.05)
