"""Models and per-example losses: shapes, per-example invariance, causality, token masks, weighting."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gdc import losses, models
from gdc.train.step import example_keys

VOCAB = 32
SEQ_LEN = 8  # inputs per LM example; rows store SEQ_LEN + 1 tokens
NUM_FEATURES = 5
NUM_CLASSES = 3
WIDTH = 16
MODEL_NAMES = ("mlp", "lstm", "gru", "transformer")
LM_NAMES = ("lstm", "gru", "transformer")
ATOL, RTOL = 1e-5, 1e-4  # composite models


@functools.cache
def _build(name: str, dropout: float = 0.25):
    """(graphdef, params) of a small model, built once per module run."""
    cfg = models.ModelConfig(name=name, width=WIDTH, depth=2, num_heads=2, dropout=dropout)
    cfg.validate()
    return models.build(
        cfg, seed=0, vocab_size=VOCAB, seq_len=SEQ_LEN, num_features=NUM_FEATURES, num_classes=NUM_CLASSES
    )


@functools.cache
def _jitted(name: str):
    """(params, jitted per_example_loss, jitted forward), shared by the tests to compile each shape once."""
    graphdef, params = _build(name)
    loss_fn = jax.jit(functools.partial(models.per_example_loss, graphdef))
    forward = jax.jit(functools.partial(models.forward, graphdef))
    return params, loss_fn, forward


def _examples(name: str, n: int, seed: int) -> dict[str, np.ndarray]:
    """``n`` random examples of the model's kind (no ``index`` / ``mask``)."""
    rng = np.random.default_rng(seed)
    if models.KIND[name] == "classification":
        return {
            "x": rng.normal(size=(n, NUM_FEATURES)).astype(np.float32),
            "y": rng.integers(0, NUM_CLASSES, n).astype(np.int32),
        }
    token_mask_NxL = rng.random((n, SEQ_LEN)) < 0.8
    token_mask_NxL[:, 0] = True
    return {
        "tokens": rng.integers(0, VOCAB, (n, SEQ_LEN + 1)).astype(np.int32),
        "token_mask": token_mask_NxL,
    }


def _take(examples: dict[str, np.ndarray], rows) -> dict[str, jax.Array]:
    return {k: jnp.asarray(v[np.asarray(rows)]) for k, v in examples.items()}


# ------------------------------------------------------------------------------------------------------------
# Shapes, dtypes, finiteness; jit vs no jit.
# ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("with_keys", [False, True])
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_per_example_loss_shapes_and_jit(name, with_keys):
    graphdef, _ = _build(name)
    params, jit_loss_fn, jit_forward = _jitted(name)
    b = 8
    batch = _take(_examples(name, b, seed=1), range(b))
    keys_B = example_keys(jax.random.PRNGKey(0), jnp.int32(2), jnp.arange(b, dtype=jnp.int32)) if with_keys else None
    loss_B, acc_B = models.per_example_loss(graphdef, params, batch, keys_B)
    jit_loss_B, jit_acc_B = jit_loss_fn(params, batch, keys_B)
    for x_B in (loss_B, acc_B, jit_loss_B, jit_acc_B):
        assert x_B.shape == (b,)
        assert x_B.dtype == jnp.float32
        assert np.isfinite(np.asarray(x_B)).all()
    assert (np.asarray(loss_B) > 0).all()
    assert ((np.asarray(acc_B) >= 0) & (np.asarray(acc_B) <= 1)).all()
    np.testing.assert_allclose(jit_loss_B, loss_B, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(jit_acc_B, acc_B, rtol=1e-5, atol=1e-5)
    logits = jit_forward(params, batch, keys_B)
    want_shape = (b, NUM_CLASSES) if name == "mlp" else (b, SEQ_LEN, VOCAB)
    assert logits.shape == want_shape and logits.dtype == jnp.float32


# ------------------------------------------------------------------------------------------------------------
# Per-example invariance: an example's loss does not depend on its batch-mates or position.
# ------------------------------------------------------------------------------------------------------------
def test_example_keys_depend_only_on_key_step_and_id():
    key = jax.random.PRNGKey(3)
    idx_B = jnp.array([5, 0, 17, 2], jnp.int32)
    keys_B = example_keys(key, jnp.int32(7), idx_B)
    for b, i in enumerate(np.asarray(idx_B)):
        want = jax.random.fold_in(jax.random.fold_in(key, 7), int(i))
        np.testing.assert_array_equal(keys_B[b], want)
    perm = np.array([2, 0, 3, 1])
    np.testing.assert_array_equal(example_keys(key, jnp.int32(7), idx_B[perm]), keys_B[perm])
    np.testing.assert_array_equal(example_keys(key, jnp.int32(7), idx_B[:1]), keys_B[:1])
    assert not np.array_equal(example_keys(key, jnp.int32(8), idx_B), keys_B)
    assert not np.array_equal(example_keys(jax.random.PRNGKey(4), jnp.int32(7), idx_B), keys_B)


@pytest.mark.parametrize("with_keys", [False, True])
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_per_example_invariance(name, with_keys):
    params, loss_fn, _ = _jitted(name)
    key, step = jax.random.PRNGKey(0), jnp.int32(3)
    examples = _examples(name, 24, seed=2)
    ids_N = np.arange(100, 124, dtype=np.int32)  # an example's id travels with it

    def losses_of(rows):
        rows = np.asarray(rows)
        batch = _take(examples, rows)
        keys_B = example_keys(key, step, jnp.asarray(ids_N[rows])) if with_keys else None
        loss_B, acc_B = loss_fn(params, batch, keys_B)
        return np.asarray(loss_B), np.asarray(acc_B)

    base = np.arange(8)
    loss_8, acc_8 = losses_of(base)
    close = functools.partial(np.testing.assert_allclose, rtol=RTOL, atol=ATOL)
    # Different positions.
    perm = np.random.default_rng(0).permutation(8)
    loss_p, acc_p = losses_of(base[perm])
    close(loss_p, loss_8[perm])
    close(acc_p, acc_8[perm])
    # Alone, as a batch of one.
    for i in base:
        loss_1, acc_1 = losses_of([i])
        close(loss_1, loss_8[i : i + 1])
        close(acc_1, acc_8[i : i + 1])
    # In a bigger batch, at the end.
    loss_16, _ = losses_of(np.concatenate([np.arange(16, 24), base]))
    close(loss_16[8:], loss_8)
    # In a different batch: half of them with new batch-mates, interleaved.
    rows = np.array([3, 20, 0, 21, 22, 6, 5, 23])
    loss_d, _ = losses_of(rows)
    close(loss_d[[0, 2, 5, 6]], loss_8[[3, 0, 6, 5]])
    if with_keys:
        batch = _take(examples, base)
        # The keys are used: dropout changes the loss, and a different step or id gives a different mask.
        no_dropout_B = np.asarray(loss_fn(params, batch, None)[0])
        assert np.abs(no_dropout_B - loss_8).max() > 1e-3
        other_step_B = np.asarray(loss_fn(params, batch, example_keys(key, step + 1, jnp.asarray(ids_N[base])))[0])
        assert np.abs(other_step_B - loss_8).max() > 1e-3
        other_id_B = np.asarray(loss_fn(params, batch, example_keys(key, step, jnp.asarray(ids_N[base] + 50)))[0])
        assert np.abs(other_id_B - loss_8).max() > 1e-3


# ------------------------------------------------------------------------------------------------------------
# Causality of the language models.
# ------------------------------------------------------------------------------------------------------------
def _perturb(tokens_BxT: np.ndarray, positions, rng) -> np.ndarray:
    """A copy of the tokens with every token at ``positions`` replaced by a different one."""
    out = tokens_BxT.copy()
    shift = rng.integers(1, VOCAB, size=out[:, positions].shape)
    out[:, positions] = (out[:, positions] + shift) % VOCAB
    return out


@pytest.mark.parametrize("with_keys", [False, True])
@pytest.mark.parametrize("name", LM_NAMES)
def test_causality_token_changes(name, with_keys):
    params, _, forward = _jitted(name)
    b = 8
    batch = _take(_examples(name, b, seed=4), range(b))
    keys_B = example_keys(jax.random.PRNGKey(1), jnp.int32(0), jnp.arange(b, dtype=jnp.int32)) if with_keys else None
    tokens = np.asarray(batch["tokens"])
    logits = np.asarray(forward(params, batch, keys_B))
    rng = np.random.default_rng(0)
    for t in range(SEQ_LEN):
        # Inputs are tokens[:, :-1]; logits at t see inputs 0..t. Change every token after t.
        changed = _perturb(tokens, np.arange(t + 1, SEQ_LEN + 1), rng)
        new = np.asarray(forward(params, {**batch, "tokens": jnp.asarray(changed)}, keys_B))
        np.testing.assert_array_equal(new[:, : t + 1], logits[:, : t + 1], err_msg=f"t={t}")
        if t + 1 < SEQ_LEN:
            assert not np.array_equal(new[:, t + 1 :], logits[:, t + 1 :])
    for s in range(SEQ_LEN):
        # Changing input s leaves positions < s exactly as they were and changes position s.
        changed = _perturb(tokens, [s], rng)
        new = np.asarray(forward(params, {**batch, "tokens": jnp.asarray(changed)}, keys_B))
        np.testing.assert_array_equal(new[:, :s], logits[:, :s], err_msg=f"s={s}")
        for row in range(b):
            assert not np.array_equal(new[row, s], logits[row, s]), (s, row)
    # The last stored token is only a target: it changes no logits.
    changed = _perturb(tokens, [SEQ_LEN], rng)
    new = np.asarray(forward(params, {**batch, "tokens": jnp.asarray(changed)}, keys_B))
    np.testing.assert_array_equal(new, logits)


class _Shifted(nnx.Module):
    """An embedding followed by an additive ``[B, L, D]`` shift (differentiated through in the test below)."""

    def __init__(self, embed, shift_BxLxD):
        self.embed = embed
        self.shift_fn = lambda: shift_BxLxD

    def __call__(self, inputs_BxL):
        return self.embed(inputs_BxL) + self.shift_fn()


@pytest.mark.parametrize("name", LM_NAMES)
def test_causality_gradient_wrt_embeddings(name):
    """d logits[b, t] / d embedding[b', s] is exactly zero for s > t and for b' != b, non-zero for s == t.

    Without dropout keys (the token-change test above covers them; they add a costly compile here).
    """
    graphdef, params = _build(name)
    b = 2
    batch = _take(_examples(name, b, seed=5), range(b))
    keys_B = None
    attr = "tok" if name == "transformer" else "embed"

    def logits_fn(shift_BxLxD):
        model = nnx.merge(graphdef, params)
        setattr(model, attr, _Shifted(getattr(model, attr), shift_BxLxD))
        return model(batch["tokens"][:, :-1], keys_B)

    shift = jnp.zeros((b, SEQ_LEN, WIDTH), jnp.float32)
    np.testing.assert_array_equal(logits_fn(shift), models.forward(graphdef, params, batch, keys_B))
    # jac[b, t, b', s, d] of the logits summed over the vocabulary.
    jac = np.asarray(jax.jit(jax.jacrev(lambda s: logits_fn(s).sum(-1)))(shift))
    assert jac.shape == (b, SEQ_LEN, b, SEQ_LEN, WIDTH)
    norm_BxTxBxS = np.abs(jac).max(-1)
    for row in range(b):
        for other in range(b):
            for t in range(SEQ_LEN):
                for s in range(SEQ_LEN):
                    if other != row or s > t:
                        assert norm_BxTxBxS[row, t, other, s] == 0.0, (row, t, other, s)
                    elif s == t:
                        assert norm_BxTxBxS[row, t, other, s] > 0.0, (row, t, s)


# ------------------------------------------------------------------------------------------------------------
# Token masks and the loss functions.
# ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", LM_NAMES)
def test_token_mask_selects_the_targets(name):
    params, loss_fn, forward = _jitted(name)
    examples = _examples(name, 8, seed=6)
    token_mask = np.zeros((8, SEQ_LEN), bool)
    token_mask[0, [1, 4, 7]] = True
    token_mask[1] = True
    token_mask[2, [0]] = True
    token_mask[4:] = np.random.default_rng(1).random((4, SEQ_LEN)) < 0.5
    token_mask[3] = False  # no valid target
    batch = {"tokens": jnp.asarray(examples["tokens"]), "token_mask": jnp.asarray(token_mask)}
    loss_B, acc_B = loss_fn(params, batch, None)
    logits = forward(params, batch, None)
    nll_BxL = np.asarray(losses.token_nll(logits, batch["tokens"][:, 1:]))
    correct_BxL = np.asarray(jnp.argmax(logits, -1) == batch["tokens"][:, 1:])
    for row in [0, 1, 2, 4, 5, 6, 7]:
        np.testing.assert_allclose(loss_B[row], nll_BxL[row, token_mask[row]].mean(), rtol=1e-5)
        np.testing.assert_allclose(acc_B[row], correct_BxL[row, token_mask[row]].mean(), rtol=1e-5)
    assert loss_B[3] == 0.0 and acc_B[3] == 0.0
    # The masked rows really differ from the all-token mean.
    assert abs(float(loss_B[0]) - nll_BxL[0].mean()) > 1e-4
    # Changing a masked-out final target leaves the loss exactly unchanged; a counted one changes it.
    tokens = np.asarray(examples["tokens"]).copy()
    tokens[:, SEQ_LEN] = (tokens[:, SEQ_LEN] + 1) % VOCAB
    new_loss_B, _ = loss_fn(params, {**batch, "tokens": jnp.asarray(tokens)}, None)
    last_counted_B = token_mask[:, SEQ_LEN - 1]
    assert last_counted_B.any() and not last_counted_B.all()
    np.testing.assert_array_equal(new_loss_B[~last_counted_B], loss_B[~last_counted_B])
    assert (new_loss_B[last_counted_B] != loss_B[last_counted_B]).all()


# ------------------------------------------------------------------------------------------------------------
# The GRU against its equations.
# ------------------------------------------------------------------------------------------------------------
def _random_gru_params():
    """The test GRU's params replaced by random values (its biases start at zero, which would hide their role)."""
    graphdef, params = _build("gru")
    leaves, treedef = jax.tree.flatten(params)
    rng = np.random.default_rng(0)
    leaves = [jnp.asarray(rng.normal(0.0, 0.5, x.shape), jnp.float32) for x in leaves]
    return graphdef, jax.tree.unflatten(treedef, leaves)


def _gru_logits_np(params, tokens_BxL: np.ndarray) -> np.ndarray:
    """The GRU's logits from its equations, one time step and one layer at a time, in float64 numpy:
    z, r = sigmoid(x W_zr + b_zr + h U_zr + c_zr), n = tanh(x W_n + b_n + r * (h U_n + c_n)), h' = (1 - z) n + z h."""
    p = jax.tree.map(lambda x: np.asarray(x, np.float64), params.to_pure_dict())
    sigmoid = lambda x: 1.0 / (1.0 + np.exp(-x))  # noqa: E731
    b, length = tokens_BxL.shape
    d = WIDTH
    h = [np.zeros((b, d)) for _ in p["w_in"]]
    logits = np.zeros((b, length, VOCAB))
    for t in range(length):
        x = p["embed"]["embedding"][tokens_BxL[:, t]]
        for i in range(len(h)):
            gx = x @ p["w_in"][i]["kernel"] + p["w_in"][i]["bias"]
            gh = h[i] @ p["w_rec"][i]["kernel"] + p["w_rec"][i]["bias"]
            z = sigmoid(gx[:, :d] + gh[:, :d])
            r = sigmoid(gx[:, d : 2 * d] + gh[:, d : 2 * d])
            n = np.tanh(gx[:, 2 * d :] + r * gh[:, 2 * d :])
            h[i] = (1.0 - z) * n + z * h[i]
            x = h[i]
        logits[:, t] = x @ p["head"]["kernel"] + p["head"]["bias"]
    return logits


def test_gru_matches_its_equations():
    graphdef, params = _random_gru_params()
    tokens = _examples("gru", 4, seed=8)["tokens"]
    got = jax.jit(functools.partial(models.forward, graphdef))(params, {"tokens": jnp.asarray(tokens)})
    np.testing.assert_allclose(got, _gru_logits_np(params, tokens[:, :-1]), rtol=RTOL, atol=ATOL)


def test_gru_step_from_initial_carry_matches_full_forward():
    graphdef, params = _random_gru_params()
    tokens_BxL = jnp.asarray(_examples("gru", 4, seed=9)["tokens"][:, :-1])

    @jax.jit
    def stepped(params, tokens_BxL):
        model = nnx.merge(graphdef, params)
        carry, out = model.initial_carry(tokens_BxL.shape[0]), []
        for t in range(tokens_BxL.shape[1]):
            carry, x_BxD = model.step(carry, model.w_in[0](model.embed(tokens_BxL[:, t])))
            out.append(model.head(x_BxD))
        return jnp.stack(out, axis=1)

    want = models.forward(graphdef, params, {"tokens": jnp.pad(tokens_BxL, ((0, 0), (0, 1)))})
    np.testing.assert_allclose(stepped(params, tokens_BxL), want, rtol=RTOL, atol=ATOL)


def test_sequence_nll_hand_example():
    ln = np.log
    logits_BxLxV = jnp.array([[[0.0, 0.0], [0.0, ln(3.0)], [5.0, 0.0]]], jnp.float32)
    targets_BxL = jnp.array([[0, 1, 1]], jnp.int32)
    mask_BxL = jnp.array([[True, True, False]])
    loss_B, acc_B = losses.sequence_nll(logits_BxLxV, targets_BxL, mask_BxL)
    # Position 0: p = 1/2 (argmax ties go to 0: correct). Position 1: p = 3/4, correct. Position 2 is masked.
    np.testing.assert_allclose(loss_B, [(ln(2.0) + ln(4.0 / 3.0)) / 2], rtol=1e-5)
    np.testing.assert_allclose(acc_B, [1.0], rtol=1e-5)
    np.testing.assert_allclose(
        losses.token_nll(logits_BxLxV, targets_BxL),
        [[ln(2.0), ln(4.0 / 3.0), 5.0 + ln(1.0 + np.exp(-5.0))]],
        rtol=1e-5,
    )
    loss_B, acc_B = losses.sequence_nll(logits_BxLxV, targets_BxL, jnp.zeros((1, 3), bool))
    assert float(loss_B[0]) == 0.0 and float(acc_B[0]) == 0.0


def test_classification_nll_hand_example():
    logits_BxK = jnp.array([[0.0, np.log(3.0)], [2.0, 0.0]], jnp.float32)
    loss_B, acc_B = losses.classification_nll(logits_BxK, jnp.array([0, 0], jnp.int32))
    np.testing.assert_allclose(loss_B, [np.log(4.0), np.log(1.0 + np.exp(-2.0))], rtol=1e-5)
    np.testing.assert_array_equal(acc_B, np.float32([0.0, 1.0]))


def test_weighted_mean():
    loss_B = jnp.array([1.0, 2.0, 4.0, np.nan, np.inf], jnp.float32)
    mask_B = jnp.array([True, True, True, False, False])
    # Unweighted: the mean over the real rows.
    np.testing.assert_allclose(losses.weighted_mean(loss_B, mask_B), 7.0 / 3.0, rtol=1e-5)
    weight_B = jnp.array([1.0, 0.5, 0.25, 1.0, 2.0], jnp.float32)
    # sum(w * mask * l) / sum(w * mask) = (1 + 1 + 1) / 1.75
    np.testing.assert_allclose(losses.weighted_mean(loss_B, mask_B, weight_B), 3.0 / 1.75, rtol=1e-5)
    # Weights summing to less than one are renormalised too: (0.1 + 0.2 + 0.8) / 0.4.
    small_B = jnp.array([0.1, 0.1, 0.2, 0.0, 0.0], jnp.float32)
    np.testing.assert_allclose(losses.weighted_mean(loss_B, mask_B, small_B), 2.75, rtol=1e-5)
    # A zero-weight real row with a NaN loss does not poison it either.
    nan_row_B = loss_B.at[2].set(np.nan)
    zero_w_B = weight_B.at[2].set(0.0)
    np.testing.assert_allclose(losses.weighted_mean(nan_row_B, mask_B, zero_w_B), 2.0 / 1.5, rtol=1e-5)
    # No real rows: zero.
    assert float(losses.weighted_mean(loss_B, jnp.zeros(5, bool), weight_B)) == 0.0
    # Random check against the formula, and a finite gradient equal to w * mask / sum(w * mask).
    rng = np.random.default_rng(0)
    l_B = rng.uniform(0, 3, 16).astype(np.float32)
    m_B = rng.random(16) < 0.7
    w_B = rng.uniform(0, 2, 16).astype(np.float32)
    l_B[~m_B] = np.nan
    want = np.nansum(np.where(m_B, w_B * l_B, 0.0)) / (w_B * m_B).sum()
    got = losses.weighted_mean(jnp.asarray(l_B), jnp.asarray(m_B), jnp.asarray(w_B))
    np.testing.assert_allclose(got, want, rtol=1e-5)
    grad_B = jax.grad(losses.weighted_mean)(jnp.asarray(l_B), jnp.asarray(m_B), jnp.asarray(w_B))
    assert np.isfinite(np.asarray(grad_B)).all()
    np.testing.assert_allclose(grad_B, w_B * m_B / (w_B * m_B).sum(), rtol=1e-5, atol=1e-7)


def test_transformer_rejects_inputs_longer_than_its_positions():
    graphdef, params = models.build(
        models.ModelConfig(name="transformer", width=16, depth=1, num_heads=2), seed=0, seq_len=8
    )
    batch = {"tokens": jnp.zeros((1, 12), jnp.int32), "token_mask": jnp.ones((1, 11), bool)}
    with pytest.raises(ValueError, match="at most 8 input tokens"):
        models.per_example_loss(graphdef, params, batch)
