"""Incremental decoding of the character LMs: one token per step, the model's state carried along.

Pure functions of ``(graphdef, params)``, one API for ``CharLSTM``, ``CharGRU`` and ``CharTransformer``:

  * ``decode_init(graphdef, params, batch_size, max_len) -> carry``: the state before any token.
  * ``decode_step(graphdef, params, carry, tokens_B, valid_B=None) -> (carry, logits_BxV)``: feeds one token per
    row; rows with ``valid_B`` False keep their carry unchanged (their logits are meaningless), so prefixes of
    different lengths can be fed one column at a time.
  * ``prefill(graphdef, params, tokens_BxT, len_B, max_len) -> (carry, logits_BxV)``: feeds row b's first
    ``len_B[b] >= 1`` tokens at once and returns the distribution after its last one. The transformer fills its
    cache with one causal pass; recurrent models scan their cell.
  * ``branch_step(graphdef, params, carry, tokens_Vc) -> (carry, logits_NtxV)``: gives every carry row Vc
    children, child ``r * Vc + m`` being row r fed ``tokens_Vc[m]`` (Nt = rows * Vc); repeated calls walk a token
    tree level by level (exact exposure enumerates secrets this way).

The carry of a recurrent model is its ``initial_carry`` state. The transformer's is a KV cache,
``{"k", "v": one [B, T, H, Dh] array per block, "pos": int32 [B]}`` with T = ``max_len`` (at most the position
table) and ``pos_B`` each row's next position: the token fed at ``pos`` attends to cache slots ``<= pos``, so slots
beyond a row's position (prefill padding, stale writes) are never read. After ``branch_step`` it is a tree,
``{"root": that cache, "levels": one {"k", "v"} per level}``, level j holding only its own token's K/V per node,
``[rows_j, H, Dh]``; a node attends to its root's cache and to its ancestors' entries, found by reshaping its
level's rows, so memory grows by one token's K/V per node and no prefix is copied. A tree carry is only for
``branch_step``.

All logits are f32. No dropout. ``ablate = (layer, u_D, alpha)`` is applied as the models' ``__call__`` does.
The attention arithmetic mirrors ``char_lm.Block``; tests/test_decode.py holds every path equal to ``__call__``.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from gdc.models.char_lm import Ablation, CharGRU, CharLSTM, CharTransformer, ablate_direction

Carry = tuple | dict
DECODABLE = (CharLSTM, CharGRU, CharTransformer)


def can_decode(graphdef: nnx.GraphDef, params: nnx.State) -> bool:
    """Whether the model has the incremental-decoding API (the three character LMs)."""
    return isinstance(nnx.merge(graphdef, params), DECODABLE)


def _model(graphdef: nnx.GraphDef, params: nnx.State) -> CharLSTM | CharGRU | CharTransformer:
    model = nnx.merge(graphdef, params)
    if not isinstance(model, DECODABLE):
        raise TypeError(f"{type(model).__name__} has no incremental decoding; use its full forward.")
    return model


def _where_rows(keep_B: jax.Array, new, old):
    """``new`` on rows where ``keep_B``, ``old`` elsewhere (leaves with a leading batch axis)."""
    return jax.tree.map(lambda n, o: jnp.where(keep_B.reshape((-1,) + (1,) * (n.ndim - 1)), n, o), new, old)


# ------------------------------------------------------------------------------------------------------------
# Transformer pieces.
# ------------------------------------------------------------------------------------------------------------
def _qkv(block, x_BxD: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    n, d = x_BxD.shape
    h = block.num_heads
    qkv_Bx3HxDh = block.qkv(block.ln1(x_BxD)).reshape(n, 3 * h, d // h)
    return tuple(jnp.split(qkv_Bx3HxDh, 3, axis=1))


def _mlp(block, x_BxD: jax.Array, y_BxHxDh: jax.Array) -> jax.Array:
    x_BxD = x_BxD + block.proj(y_BxHxDh.reshape(x_BxD.shape))
    return x_BxD + block.out(jax.nn.gelu(block.fc(block.ln2(x_BxD))))


def _masked_softmax(scores_BxHxT: jax.Array, see_BxT: jax.Array, head_dim: int) -> jax.Array:
    scores_BxHxT = scores_BxHxT.astype(jnp.float32) / jnp.sqrt(head_dim)
    scores_BxHxT = jnp.where(see_BxT[:, None], scores_BxHxT, jnp.finfo(jnp.float32).min)
    return jax.nn.softmax(scores_BxHxT, axis=-1)


def _logits(model, x_BxD: jax.Array) -> jax.Array:
    if isinstance(model, CharTransformer):
        x_BxD = model.ln_f(x_BxD)
    return model.head(x_BxD).astype(jnp.float32)


def _transformer_init(model: CharTransformer, batch_size: int, max_len: int) -> dict:
    limit = model.pos.num_embeddings
    if not 1 <= max_len <= limit:
        raise ValueError(f"max_len={max_len}: the transformer's cache takes 1 to {limit} positions (its table).")
    d = model.tok.features
    caches = []
    for block in model.blocks:
        h = block.num_heads
        caches.append(jnp.zeros((batch_size, max_len, h, d // h), model.tok.embedding.dtype))
    return {"k": tuple(caches), "v": tuple(caches), "pos": jnp.zeros((batch_size,), jnp.int32)}


def _transformer_step(model: CharTransformer, carry: dict, tokens_B, valid_B, ablate: Ablation):
    pos_B = carry["pos"]
    x_BxD = ablate_direction(model.tok(tokens_B) + model.pos(pos_B), 0, ablate)
    slots_T = jnp.arange(carry["k"][0].shape[1])
    write_BxT = (slots_T[None, :] == pos_B[:, None]) & valid_B[:, None]
    see_BxT = slots_T[None, :] <= pos_B[:, None]
    ks, vs = [], []
    for i, block in enumerate(model.blocks):
        q_BxHxDh, k_BxHxDh, v_BxHxDh = _qkv(block, x_BxD)
        k_BxTxHxDh = jnp.where(write_BxT[:, :, None, None], k_BxHxDh[:, None], carry["k"][i])
        v_BxTxHxDh = jnp.where(write_BxT[:, :, None, None], v_BxHxDh[:, None], carry["v"][i])
        scores_BxHxT = jnp.einsum("bhk,bthk->bht", q_BxHxDh, k_BxTxHxDh)
        attn_BxHxT = _masked_softmax(scores_BxHxT, see_BxT, q_BxHxDh.shape[-1]).astype(v_BxTxHxDh.dtype)
        y_BxHxDh = jnp.einsum("bht,bthk->bhk", attn_BxHxT, v_BxTxHxDh)
        x_BxD = ablate_direction(_mlp(block, x_BxD, y_BxHxDh), i + 1, ablate)
        ks.append(k_BxTxHxDh)
        vs.append(v_BxTxHxDh)
    carry = {"k": tuple(ks), "v": tuple(vs), "pos": pos_B + valid_B.astype(jnp.int32)}
    return carry, _logits(model, x_BxD)


def _transformer_prefill(model: CharTransformer, tokens_BxT, len_B, max_len: int, ablate: Ablation):
    b, t = tokens_BxT.shape
    carry = _transformer_init(model, b, max_len)
    if t > max_len:
        raise ValueError(f"a prefill of {t} tokens does not fit a cache of max_len={max_len}.")
    x_BxTxD = ablate_direction(model.tok(tokens_BxT) + model.pos(jnp.arange(t))[None], 0, ablate)
    causal_TxT = jnp.tril(jnp.ones((t, t), jnp.bool_))
    ks, vs = [], []
    for i, block in enumerate(model.blocks):
        q_BtxHxDh, k_BtxHxDh, v_BtxHxDh = _qkv(block, x_BxTxD.reshape(b * t, -1))
        q_BxTxHxDh, k_BxTxHxDh, v_BxTxHxDh = (a.reshape(b, t, *a.shape[1:]) for a in (q_BtxHxDh, k_BtxHxDh, v_BtxHxDh))
        scores_BxHxTxT = jnp.einsum("bqhk,bthk->bhqt", q_BxTxHxDh, k_BxTxHxDh).astype(jnp.float32)
        scores_BxHxTxT = scores_BxHxTxT / jnp.sqrt(q_BxTxHxDh.shape[-1])
        scores_BxHxTxT = jnp.where(causal_TxT, scores_BxHxTxT, jnp.finfo(jnp.float32).min)
        attn_BxHxTxT = jax.nn.softmax(scores_BxHxTxT, axis=-1).astype(v_BxTxHxDh.dtype)
        y_BxTxHxDh = jnp.einsum("bhqt,bthk->bqhk", attn_BxHxTxT, v_BxTxHxDh)
        x_BtxD = _mlp(block, x_BxTxD.reshape(b * t, -1), y_BxTxHxDh.reshape(b * t, *y_BxTxHxDh.shape[2:]))
        x_BxTxD = ablate_direction(x_BtxD.reshape(b, t, -1), i + 1, ablate)
        ks.append(carry["k"][i].at[:, :t].set(k_BxTxHxDh))
        vs.append(carry["v"][i].at[:, :t].set(v_BxTxHxDh))
    last_BxD = jnp.take_along_axis(x_BxTxD, (len_B - 1)[:, None, None], axis=1)[:, 0]
    return {"k": tuple(ks), "v": tuple(vs), "pos": len_B.astype(jnp.int32)}, _logits(model, last_BxD)


def _transformer_branch(model: CharTransformer, carry: dict, tokens_Vc, ablate: Ablation):
    if "levels" not in carry:
        carry = {"root": carry, "levels": ()}
    root, levels = carry["root"], carry["levels"]
    b, m, d = root["pos"].shape[0], tokens_Vc.shape[0], model.tok.features
    parents = levels[-1]["k"][0].shape[0] if levels else b
    n = parents * m
    # Node r of this level: parent r // m (of root r // (n // b)) fed tokens_Vc[r % m] at root pos + depth.
    x_BxVcxD = model.tok(tokens_Vc)[None] + model.pos(root["pos"] + len(levels))[:, None]
    x_NtxD = jnp.broadcast_to(x_BxVcxD[:, None], (b, parents // b, m, d)).reshape(n, d)
    x_NtxD = ablate_direction(x_NtxD, 0, ablate)
    t = root["k"][0].shape[1]
    see_NtxT = jnp.repeat(jnp.arange(t)[None, :] < root["pos"][:, None], n // b, axis=0)
    see_NtxTk = jnp.concatenate([see_NtxT, jnp.ones((n, len(levels) + 1), jnp.bool_)], axis=1)
    ks, vs = [], []
    for i, block in enumerate(model.blocks):
        q_NtxHxDh, k_NtxHxDh, v_NtxHxDh = _qkv(block, x_NtxD)
        h, dh = q_NtxHxDh.shape[1:]
        # Scores over the root's cache, each ancestor level's entry, then the node's own token.
        q_BxNdxHxDh = q_NtxHxDh.reshape(b, n // b, h, dh)
        scores = [jnp.einsum("bphk,bthk->bpht", q_BxNdxHxDh, root["k"][i]).reshape(n, h, t)]
        for level in levels:
            k_NaxHxDh = level["k"][i]
            a = k_NaxHxDh.shape[0]
            scores.append(jnp.einsum("aphk,ahk->aph", q_NtxHxDh.reshape(a, n // a, h, dh), k_NaxHxDh).reshape(n, h, 1))
        scores.append(jnp.sum(q_NtxHxDh * k_NtxHxDh, axis=-1)[:, :, None])
        attn_NtxHxTk = _masked_softmax(jnp.concatenate(scores, axis=-1), see_NtxTk, dh).astype(v_NtxHxDh.dtype)
        attn_BxNdxHxT = attn_NtxHxTk[:, :, :t].reshape(b, n // b, h, t)
        y_NtxHxDh = jnp.einsum("bpht,bthk->bphk", attn_BxNdxHxT, root["v"][i]).reshape(n, h, dh)
        for j, level in enumerate(levels):
            v_NaxHxDh = level["v"][i]
            a = v_NaxHxDh.shape[0]
            w_NaxNdxH = attn_NtxHxTk[:, :, t + j].reshape(a, n // a, h)
            y_NtxHxDh = y_NtxHxDh + (w_NaxNdxH[..., None] * v_NaxHxDh[:, None]).reshape(n, h, dh)
        y_NtxHxDh = y_NtxHxDh + attn_NtxHxTk[:, :, -1:] * v_NtxHxDh
        x_NtxD = ablate_direction(_mlp(block, x_NtxD, y_NtxHxDh), i + 1, ablate)
        ks.append(k_NtxHxDh)
        vs.append(v_NtxHxDh)
    carry = {"root": root, "levels": (*levels, {"k": tuple(ks), "v": tuple(vs)})}
    return carry, _logits(model, x_NtxD)


# ------------------------------------------------------------------------------------------------------------
# The API.
# ------------------------------------------------------------------------------------------------------------
def decode_init(graphdef: nnx.GraphDef, params: nnx.State, batch_size: int, max_len: int) -> Carry:
    """The carry before any token; ``max_len`` (the transformer's cache length) is ignored by recurrent models."""
    model = _model(graphdef, params)
    if isinstance(model, CharTransformer):
        return _transformer_init(model, batch_size, max_len)
    return model.initial_carry(batch_size)


def decode_step(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    carry: Carry,
    tokens_B: jax.Array,
    valid_B: jax.Array | None = None,
    *,
    ablate: Ablation = None,
) -> tuple[Carry, jax.Array]:
    """Feeds ``tokens_B`` (int [B]) where ``valid_B`` (bool [B], default all); returns (carry, logits_BxV f32)."""
    model = _model(graphdef, params)
    if valid_B is None:
        valid_B = jnp.ones(tokens_B.shape, jnp.bool_)
    if isinstance(model, CharTransformer):
        return _transformer_step(model, carry, tokens_B, valid_B, ablate)
    gates0_BxDg = model.w_in[0](ablate_direction(model.embed(tokens_B), 0, ablate))
    new, x_BxD = model.step(carry, gates0_BxDg, ablate)
    return _where_rows(valid_B, new, carry), _logits(model, x_BxD)


def prefill(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    tokens_BxT: jax.Array,
    len_B: jax.Array,
    max_len: int,
    *,
    ablate: Ablation = None,
) -> tuple[Carry, jax.Array]:
    """Feeds row b's first ``len_B[b]`` tokens (1 <= len <= T <= max_len) from the initial carry.

    Returns:
        (carry at each row's own position, logits_BxV f32 of the token after each row's prefix).
    """
    model = _model(graphdef, params)
    if isinstance(model, CharTransformer):
        return _transformer_prefill(model, tokens_BxT, len_B, max_len, ablate)
    b, t = tokens_BxT.shape
    gates0_TxBxDg = jnp.swapaxes(model.w_in[0](ablate_direction(model.embed(tokens_BxT), 0, ablate)), 0, 1)

    def consume(state, t_and_gates):
        t, gates0_BxDg = t_and_gates
        new = model.step(state[0], gates0_BxDg, ablate)
        return _where_rows(t < len_B, new, state), None

    x_BxD = jnp.zeros((b, model.width), jnp.float32)
    (carry, x_BxD), _ = jax.lax.scan(consume, (model.initial_carry(b), x_BxD), (jnp.arange(t), gates0_TxBxDg))
    return carry, _logits(model, x_BxD)


def branch_step(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    carry: Carry,
    tokens_Vc: jax.Array,
    *,
    ablate: Ablation = None,
) -> tuple[Carry, jax.Array]:
    """Every row r of ``carry`` continued by each of ``tokens_Vc``: child ``r * Vc + m`` is fed ``tokens_Vc[m]``.

    Returns:
        (the children's carry, logits_NtxV f32 with Nt = rows * Vc). For the transformer the carry becomes a tree (see
        the module docstring), which only ``branch_step`` continues.
    """
    model = _model(graphdef, params)
    if isinstance(model, CharTransformer):
        return _transformer_branch(model, carry, tokens_Vc, ablate)
    m = tokens_Vc.shape[0]
    # Few distinct tokens: their input projections are computed once and tiled over the parents.
    gates0_VcxDg = model.w_in[0](ablate_direction(model.embed(tokens_Vc), 0, ablate))
    rows = jax.tree.leaves(carry)[0].shape[0]
    carry = jax.tree.map(lambda x: jnp.repeat(x, m, axis=0), carry)
    carry, x_NtxD = model.step(carry, jnp.tile(gates0_VcxDg, (rows, 1)), ablate)
    return carry, _logits(model, x_NtxD)
