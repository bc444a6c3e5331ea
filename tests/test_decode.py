"""Incremental decoding (gdc/models/decode.py) against each model's own full forward ``__call__``."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gdc import models

VOCAB = 32
SEQ_LEN = 12
LM_NAMES = ("lstm", "gru", "transformer")
ATOL, RTOL = 1e-5, 1e-5


@functools.cache
def _build(name: str):
    cfg = models.ModelConfig(name=name, width=16, depth=2, num_heads=2)
    return models.build(cfg, seed=0, vocab_size=VOCAB, seq_len=SEQ_LEN)


@functools.cache
def _jitted(name: str):
    """Jitted full forward and decode functions of one model (eager dispatch costs seconds on 2 cores)."""
    g, _ = _build(name)
    return {
        "forward": jax.jit(lambda p, x: nnx.merge(g, p)(x)),
        "init": jax.jit(functools.partial(models.decode_init, g), static_argnums=(1, 2)),
        "step": jax.jit(functools.partial(models.decode_step, g)),
        "prefill": jax.jit(functools.partial(models.prefill, g), static_argnums=3),
        "branch": jax.jit(functools.partial(models.branch_step, g)),
    }


def _tokens(b: int, t: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, VOCAB, (b, t)).astype(np.int32)


@pytest.mark.parametrize("name", LM_NAMES)
def test_steps_match_full_forward_with_ragged_prefixes(name):
    """Fed one column at a time, row b only while t < len_b, then free decoding: every step's logits equal the
    full forward's at that row's position."""
    _, params = _build(name)
    fn = _jitted(name)
    b, t = 4, SEQ_LEN
    tokens_BxT = _tokens(b, t, seed=1)
    len_B = np.array([3, 1, 7, 5], np.int32)
    want_BxTxV = np.asarray(fn["forward"](params, tokens_BxT))

    # Phase 1: the prefixes, fed with a validity mask.
    carry = fn["init"](params, b, t)
    p = int(len_B.max())
    last_BxV = np.zeros((b, VOCAB), np.float32)
    for col in range(p):
        valid_B = col < len_B
        carry, logits_BxV = fn["step"](params, carry, jnp.asarray(tokens_BxT[:, col]), jnp.asarray(valid_B))
        logits_BxV = np.asarray(logits_BxV)
        for row in np.flatnonzero(valid_B):
            np.testing.assert_allclose(logits_BxV[row], want_BxTxV[row, col], rtol=RTOL, atol=ATOL)
        last_BxV[valid_B] = logits_BxV[valid_B]
    # Phase 2: every row continues from its own position, with the next column of its own tokens.
    for k in range(t - p):
        cols_B = len_B + k
        carry, logits_BxV = fn["step"](params, carry, jnp.asarray(tokens_BxT[np.arange(b), cols_B]))
        np.testing.assert_allclose(logits_BxV, want_BxTxV[np.arange(b), cols_B], rtol=RTOL, atol=ATOL)

    # The same prefixes through prefill, then the same continuation.
    carry, logits_BxV = fn["prefill"](params, jnp.asarray(tokens_BxT[:, :p]), jnp.asarray(len_B), t)
    np.testing.assert_allclose(logits_BxV, want_BxTxV[np.arange(b), len_B - 1], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(logits_BxV, last_BxV, rtol=RTOL, atol=ATOL)
    for k in range(t - p):
        cols_B = len_B + k
        carry, logits_BxV = fn["step"](params, carry, jnp.asarray(tokens_BxT[np.arange(b), cols_B]))
        np.testing.assert_allclose(logits_BxV, want_BxTxV[np.arange(b), cols_B], rtol=RTOL, atol=ATOL)
        assert logits_BxV.dtype == jnp.float32


@pytest.mark.parametrize("name", LM_NAMES)
def test_decoding_is_causal(name):
    """Invalid steps leave the carry bit for bit; what lies past a row's prefix in the prefill buffer (the
    transformer writes it into its cache) changes nothing that follows."""
    _, params = _build(name)
    fn = _jitted(name)
    b, t, p = 3, SEQ_LEN, 6
    tokens_BxT = _tokens(b, t, seed=2)
    len_B = np.array([2, 6, 4], np.int32)
    carry, _ = fn["prefill"](params, jnp.asarray(tokens_BxT[:, :p]), jnp.asarray(len_B), t)
    skipped, _ = fn["step"](params, carry, jnp.asarray(tokens_BxT[:, p]), jnp.zeros(b, jnp.bool_))
    jax.tree.map(np.testing.assert_array_equal, skipped, carry)

    def continuation(prefix_BxP):
        carry, logits_BxV = fn["prefill"](params, jnp.asarray(prefix_BxP), jnp.asarray(len_B), t)
        out = [np.asarray(logits_BxV)]
        for k in range(t - p):
            carry, logits_BxV = fn["step"](params, carry, jnp.asarray(tokens_BxT[:, p + k]))
            out.append(np.asarray(logits_BxV))
        return np.stack(out)

    changed_BxP = tokens_BxT[:, :p].copy()
    pad_BxP = np.arange(p)[None, :] >= len_B[:, None]
    changed_BxP[pad_BxP] = (changed_BxP[pad_BxP] + 1) % VOCAB
    np.testing.assert_array_equal(continuation(changed_BxP), continuation(tokens_BxT[:, :p]))
    # A changed prefix token does change the first prediction.
    changed_BxP[np.arange(b), len_B - 1] = (changed_BxP[np.arange(b), len_B - 1] + 1) % VOCAB
    first_BxV = continuation(changed_BxP)[0]
    assert not np.equal(first_BxV, continuation(tokens_BxT[:, :p])[0]).all(axis=1).any()


@pytest.mark.parametrize("name", LM_NAMES)
def test_branch_steps_walk_the_token_tree(name):
    """Two roots with different prefix lengths, three levels of 3 children: node logits equal the full forward
    of root prefix + the node's path."""
    _, params = _build(name)
    fn = _jitted(name)
    prefixes_BxP = _tokens(2, 5, seed=3)
    len_B = np.array([5, 2], np.int32)
    children_Vc = np.array([4, 0, 17], np.int32)
    carry, _ = fn["prefill"](params, jnp.asarray(prefixes_BxP), jnp.asarray(len_B), 5)
    for level in range(1, 4):
        carry, logits_NtxV = fn["branch"](params, carry, jnp.asarray(children_Vc))
        m = len(children_Vc) ** level
        assert logits_NtxV.shape == (2 * m, VOCAB)
        paths_NdxJ = np.stack(np.unravel_index(np.arange(m), (len(children_Vc),) * level), axis=1)
        for root in range(2):
            seq_NdxL = np.concatenate(
                [np.repeat(prefixes_BxP[root : root + 1, : len_B[root]], m, axis=0), children_Vc[paths_NdxJ]], axis=1
            )
            want_NdxV = np.asarray(fn["forward"](params, seq_NdxL))[:, -1]
            np.testing.assert_allclose(logits_NtxV[root * m : (root + 1) * m], want_NdxV, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("name", LM_NAMES)
def test_ablation_matches_full_forward(name):
    _, params = _build(name)
    fn = _jitted(name)
    u_D = np.random.default_rng(4).normal(size=16).astype(np.float32)
    ablate = (1, jnp.asarray(u_D / np.linalg.norm(u_D)), 1.0)
    tokens_BxT = _tokens(2, 6, seed=5)
    g, _ = _build(name)
    want_BxTxV = np.asarray(jax.jit(lambda p, x: nnx.merge(g, p)(x, ablate=ablate))(params, tokens_BxT))
    step = jax.jit(functools.partial(models.decode_step, g, ablate=ablate))
    carry = fn["init"](params, 2, SEQ_LEN)
    for col in range(6):
        carry, logits_BxV = step(params, carry, jnp.asarray(tokens_BxT[:, col]))
        np.testing.assert_allclose(logits_BxV, want_BxTxV[:, col], rtol=RTOL, atol=ATOL)


def test_transformer_cache_is_bounded_by_its_positions():
    g, params = _build("transformer")
    with pytest.raises(ValueError, match="1 to 12"):
        models.decode_init(g, params, 2, SEQ_LEN + 1)
    assert not models.can_decode(*_build_mlp())
    assert all(models.can_decode(*_build(n)) for n in LM_NAMES)


@functools.cache
def _build_mlp():
    return models.build(models.ModelConfig(name="mlp", width=8), seed=0, num_features=3, num_classes=2)
