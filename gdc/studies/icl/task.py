"""The minimal in-context task of Nguyen & Reddy (ICLR 2025): K item-label pairs, N context tokens, one query.

Items x_k ~ N(0, I/D), labels l_k in {-1, +1}, drawn once per (seed, K). A sequence is N context tokens x ⊕ l
followed by the query token x_q ⊕ 0; the target is l_q. Our sampling (the paper's exact burstiness and in-context
probabilities were not retrieved, so these are our choices, documented in the report):
  * training: query q ~ U{0..K-1}; the N context items are drawn uniformly from the K; with probability
    ``p_bursty`` the context is bursty: ``copies`` distinct random positions are overwritten with the query's pair
    (so the query's label is always readable in context when p_bursty = 1);
  * IWL evaluation: query from the K trained items, context drawn from the other K - 1 items (no copy of the query):
    only weights can give its label;
  * ICL evaluation: N novel items with fresh random labels, the query a copy of one of them, placed as in training
    (``copies`` positions): only the context can give its label.
All samplers are pure functions of a key, with K a traced value so that ``jax.vmap`` runs several K at once
(items are drawn for ``k_max`` and only the first K are used).
"""

import jax
import jax.numpy as jnp


def items(key: jax.Array, k_max: int, dim: int) -> tuple[jax.Array, jax.Array]:
    """(x_KxD, label_K): k_max Gaussian items of variance 1/D and random +-1 labels."""
    k_x, k_l = jax.random.split(key)
    x_KxD = jax.random.normal(k_x, (k_max, dim)) / jnp.sqrt(dim)
    label_K = jnp.where(jax.random.bernoulli(k_l, 0.5, (k_max,)), 1.0, -1.0)
    return x_KxD, label_K


def tokens(x_LxD: jax.Array, label_L: jax.Array) -> jax.Array:
    """Token rows x ⊕ label; the last row's label slot is zeroed (the query)."""
    label_L = label_L.at[-1].set(0.0)
    return jnp.concatenate([x_LxD, label_L[:, None]], axis=1)


def _burst(key: jax.Array, ctx_M: jax.Array, q: jax.Array, copies: int) -> jax.Array:
    pos = jax.random.permutation(key, ctx_M.shape[0])[:copies]
    return ctx_M.at[pos].set(q)


def train_sequence(key, x_KxD, label_K, k, n: int, copies: int, p_bursty: float):
    """One training sequence: (tokens_Lx(D+1), target, query id, bursty flag) with L = n + 1."""
    k_q, k_c, k_b, k_p = jax.random.split(key, 4)
    q = jax.random.randint(k_q, (), 0, k)
    ctx_M = jax.random.randint(k_c, (n,), 0, k)
    bursty = jax.random.bernoulli(k_b, p_bursty)
    ctx_M = jnp.where(bursty, _burst(k_p, ctx_M, q, copies), ctx_M)
    ids_L = jnp.concatenate([ctx_M, q[None]])
    return tokens(x_KxD[ids_L], label_K[ids_L]), label_K[q], q, bursty


def iwl_sequence(key, x_KxD, label_K, k, n: int, q=None):
    """IWL probe: query q (random if None) from the K items, context from the other K - 1 (never a copy of q)."""
    k_q, k_c = jax.random.split(key)
    q = jax.random.randint(k_q, (), 0, k) if q is None else q
    ctx_M = (q + 1 + jax.random.randint(k_c, (n,), 0, jnp.maximum(k - 1, 1))) % k
    ids_L = jnp.concatenate([ctx_M, jnp.asarray(q)[None]])
    return tokens(x_KxD[ids_L], label_K[ids_L]), label_K[q]


def icl_sequence(key, n: int, dim: int, copies: int):
    """ICL probe: novel items, fresh labels; the query item sits at exactly ``copies`` of the n context positions."""
    k_i, k_p = jax.random.split(key)
    x_LxD, label_L = items(k_i, n + 1, dim)  # item n is the query; items 0..n-1 fill the other positions
    q = jnp.asarray(n)
    ctx_M = _burst(k_p, jnp.arange(n), q, copies)
    ids_L = jnp.concatenate([ctx_M, q[None]])
    return tokens(x_LxD[ids_L], label_L[ids_L]), label_L[q]


def batch(fn, key: jax.Array, size: int, *args):
    """``size`` sequences of ``fn(key_i, *args)`` with independent keys."""
    return jax.vmap(lambda kk: fn(kk, *args))(jax.random.split(key, size))


def accuracy(logit_B: jax.Array, target_B: jax.Array) -> jax.Array:
    """Share of sequences whose logit has the target's sign (a zero logit counts as wrong)."""
    return jnp.mean(jnp.sign(logit_B) == target_B)


def logistic_loss(logit_B: jax.Array, target_B: jax.Array) -> jax.Array:
    """loss_B = log(1 + exp(-target logit)); below log 2 exactly when the sign is right."""
    return jax.nn.softplus(-target_B * logit_B)


def eval_accuracy(predict, key, x_KxD, label_K, k, n: int, dim: int, copies: int, size: int):
    """(IWL accuracy, ICL accuracy) of ``predict(tokens_BxLx(D+1)) -> logit_B`` on ``size`` probes each."""
    k_iwl, k_icl = jax.random.split(key)
    toks, tgt = batch(iwl_sequence, k_iwl, size, x_KxD, label_K, k, n)
    iwl = accuracy(predict(toks), tgt)
    toks, tgt = batch(icl_sequence, k_icl, size, n, dim, copies)
    return iwl, accuracy(predict(toks), tgt)
