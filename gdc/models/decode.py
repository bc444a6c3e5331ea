"""Incremental decoding of the character LMs: one token per step, the model's state carried along.

Pure functions of ``(graphdef, params)``, one API for ``CharLSTM``, ``CharGRU`` and ``CharTransformer``:

  * ``decode_init(graphdef, params, batch_size, max_len) -> carry``: the state before any token.
  * ``decode_step(graphdef, params, carry, tokens_B, valid_B=None) -> (carry, logits_BxV)``: feeds one token per
    row; rows with ``valid_B`` False keep their carry unchanged (their logits are meaningless), so prefixes of
    different lengths can be fed one column at a time.
  * ``prefill(graphdef, params, tokens_BxT, len_B, max_len) -> (carry, logits_BxV)``: feeds row b's first
    ``len_B[b] >= 1`` tokens at once and returns the distribution after its last one. The transformer fills its
    cache with one causal pass; recurrent models scan their cell.
  * ``branch_step(graphdef, params, carry, tokens_M) -> (carry, logits_NxV)``: gives every carry row M children,
    child ``r * M + m`` being row r fed ``tokens_M[m]`` (N = rows * M); repeated calls walk a token tree level
    by level (exact exposure enumerates secrets this way).

The carry of a recurrent model is its ``initial_carry`` state. The transformer's is a KV cache,
``{"k", "v": one [B, T, H, K] array per block, "pos": int32 [B]}`` with T = ``max_len`` (at most the position
table) and ``pos_B`` each row's next position: the token fed at ``pos`` attends to cache slots ``<= pos``, so slots
beyond a row's position (prefill padding, stale writes) are never read. After ``branch_step`` it is a tree,
``{"root": that cache, "levels": one {"k", "v"} per level}``, level j holding only its own token's K/V per node,
``[rows_j, H, K]``; a node attends to its root's cache and to its ancestors' entries, found by reshaping its
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
def _qkv(block, x_NxD: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    n, d = x_NxD.shape
    h = block.num_heads
    qkv_Nx3HxK = block.qkv(block.ln1(x_NxD)).reshape(n, 3 * h, d // h)
    return tuple(jnp.split(qkv_Nx3HxK, 3, axis=1))


def _mlp(block, x_NxD: jax.Array, y_NxHxK: jax.Array) -> jax.Array:
    x_NxD = x_NxD + block.proj(y_NxHxK.reshape(x_NxD.shape))
    return x_NxD + block.out(jax.nn.gelu(block.fc(block.ln2(x_NxD))))


def _masked_softmax(scores_NxHxT: jax.Array, see_NxT: jax.Array, head_dim: int) -> jax.Array:
    scores_NxHxT = scores_NxHxT.astype(jnp.float32) / jnp.sqrt(head_dim)
    scores_NxHxT = jnp.where(see_NxT[:, None], scores_NxHxT, jnp.finfo(jnp.float32).min)
    return jax.nn.softmax(scores_NxHxT, axis=-1)


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
        q_BxHxK, k_BxHxK, v_BxHxK = _qkv(block, x_BxD)
        k_BxTxHxK = jnp.where(write_BxT[:, :, None, None], k_BxHxK[:, None], carry["k"][i])
        v_BxTxHxK = jnp.where(write_BxT[:, :, None, None], v_BxHxK[:, None], carry["v"][i])
        scores_BxHxT = jnp.einsum("bhk,bthk->bht", q_BxHxK, k_BxTxHxK)
        attn_BxHxT = _masked_softmax(scores_BxHxT, see_BxT, q_BxHxK.shape[-1]).astype(v_BxTxHxK.dtype)
        y_BxHxK = jnp.einsum("bht,bthk->bhk", attn_BxHxT, v_BxTxHxK)
        x_BxD = ablate_direction(_mlp(block, x_BxD, y_BxHxK), i + 1, ablate)
        ks.append(k_BxTxHxK)
        vs.append(v_BxTxHxK)
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
        q_NxHxK, k_NxHxK, v_NxHxK = _qkv(block, x_BxTxD.reshape(b * t, -1))
        q_BxTxHxK, k_BxTxHxK, v_BxTxHxK = (a.reshape(b, t, *a.shape[1:]) for a in (q_NxHxK, k_NxHxK, v_NxHxK))
        scores_BxHxTxT = jnp.einsum("bqhk,bthk->bhqt", q_BxTxHxK, k_BxTxHxK).astype(jnp.float32)
        scores_BxHxTxT = scores_BxHxTxT / jnp.sqrt(q_BxTxHxK.shape[-1])
        scores_BxHxTxT = jnp.where(causal_TxT, scores_BxHxTxT, jnp.finfo(jnp.float32).min)
        attn_BxHxTxT = jax.nn.softmax(scores_BxHxTxT, axis=-1).astype(v_BxTxHxK.dtype)
        y_BxTxHxK = jnp.einsum("bhqt,bthk->bqhk", attn_BxHxTxT, v_BxTxHxK)
        x_NxD = _mlp(block, x_BxTxD.reshape(b * t, -1), y_BxTxHxK.reshape(b * t, *y_BxTxHxK.shape[2:]))
        x_BxTxD = ablate_direction(x_NxD.reshape(b, t, -1), i + 1, ablate)
        ks.append(carry["k"][i].at[:, :t].set(k_BxTxHxK))
        vs.append(carry["v"][i].at[:, :t].set(v_BxTxHxK))
    last_BxD = jnp.take_along_axis(x_BxTxD, (len_B - 1)[:, None, None], axis=1)[:, 0]
    return {"k": tuple(ks), "v": tuple(vs), "pos": len_B.astype(jnp.int32)}, _logits(model, last_BxD)


def _transformer_branch(model: CharTransformer, carry: dict, tokens_M, ablate: Ablation):
    if "levels" not in carry:
        carry = {"root": carry, "levels": ()}
    root, levels = carry["root"], carry["levels"]
    b, m, d = root["pos"].shape[0], tokens_M.shape[0], model.tok.features
    parents = levels[-1]["k"][0].shape[0] if levels else b
    n = parents * m
    # Node r of this level: parent r // m (of root r // (n // b)) fed tokens_M[r % m] at root pos + depth.
    x_BxMxD = model.tok(tokens_M)[None] + model.pos(root["pos"] + len(levels))[:, None]
    x_NxD = jnp.broadcast_to(x_BxMxD[:, None], (b, parents // b, m, d)).reshape(n, d)
    x_NxD = ablate_direction(x_NxD, 0, ablate)
    t = root["k"][0].shape[1]
    see_NxT = jnp.repeat(jnp.arange(t)[None, :] < root["pos"][:, None], n // b, axis=0)
    see_NxS = jnp.concatenate([see_NxT, jnp.ones((n, len(levels) + 1), jnp.bool_)], axis=1)
    ks, vs = [], []
    for i, block in enumerate(model.blocks):
        q_NxHxK, k_NxHxK, v_NxHxK = _qkv(block, x_NxD)
        h, kd = q_NxHxK.shape[1:]
        # Scores over the root's cache, each ancestor level's entry, then the node's own token.
        q_BxPxHxK = q_NxHxK.reshape(b, n // b, h, kd)
        scores = [jnp.einsum("bphk,bthk->bpht", q_BxPxHxK, root["k"][i]).reshape(n, h, t)]
        for level in levels:
            k_AxHxK = level["k"][i]
            a = k_AxHxK.shape[0]
            scores.append(jnp.einsum("aphk,ahk->aph", q_NxHxK.reshape(a, n // a, h, kd), k_AxHxK).reshape(n, h, 1))
        scores.append(jnp.sum(q_NxHxK * k_NxHxK, axis=-1)[:, :, None])
        attn_NxHxS = _masked_softmax(jnp.concatenate(scores, axis=-1), see_NxS, kd).astype(v_NxHxK.dtype)
        attn_BxPxHxT = attn_NxHxS[:, :, :t].reshape(b, n // b, h, t)
        y_NxHxK = jnp.einsum("bpht,bthk->bphk", attn_BxPxHxT, root["v"][i]).reshape(n, h, kd)
        for j, level in enumerate(levels):
            v_AxHxK = level["v"][i]
            a = v_AxHxK.shape[0]
            w_AxPxH = attn_NxHxS[:, :, t + j].reshape(a, n // a, h)
            y_NxHxK = y_NxHxK + (w_AxPxH[..., None] * v_AxHxK[:, None]).reshape(n, h, kd)
        y_NxHxK = y_NxHxK + attn_NxHxS[:, :, -1:] * v_NxHxK
        x_NxD = ablate_direction(_mlp(block, x_NxD, y_NxHxK), i + 1, ablate)
        ks.append(k_NxHxK)
        vs.append(v_NxHxK)
    carry = {"root": root, "levels": (*levels, {"k": tuple(ks), "v": tuple(vs)})}
    return carry, _logits(model, x_NxD)


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
    gates0_BxG = model.w_in[0](ablate_direction(model.embed(tokens_B), 0, ablate))
    new, x_BxD = model.step(carry, gates0_BxG, ablate)
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
    gates0_TxBxG = jnp.swapaxes(model.w_in[0](ablate_direction(model.embed(tokens_BxT), 0, ablate)), 0, 1)

    def consume(state, t_and_gates):
        t, gates0_BxG = t_and_gates
        new = model.step(state[0], gates0_BxG, ablate)
        return _where_rows(t < len_B, new, state), None

    x_BxD = jnp.zeros((b, model.width), jnp.float32)
    (carry, x_BxD), _ = jax.lax.scan(consume, (model.initial_carry(b), x_BxD), (jnp.arange(t), gates0_TxBxG))
    return carry, _logits(model, x_BxD)


def branch_step(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    carry: Carry,
    tokens_M: jax.Array,
    *,
    ablate: Ablation = None,
) -> tuple[Carry, jax.Array]:
    """Every row r of ``carry`` (R rows) continued by each of ``tokens_M``: child ``r * M + m`` is fed ``tokens_M[m]``.

    Returns:
        (the children's carry, logits_NxV f32 with N = R * M). For the transformer the carry becomes a tree (see
        the module docstring), which only ``branch_step`` continues.
    """
    model = _model(graphdef, params)
    if isinstance(model, CharTransformer):
        return _transformer_branch(model, carry, tokens_M, ablate)
    m = tokens_M.shape[0]
    # Few distinct tokens: their input projections are computed once and tiled over the parents.
    gates0_MxG = model.w_in[0](ablate_direction(model.embed(tokens_M), 0, ablate))
    rows = jax.tree.leaves(carry)[0].shape[0]
    carry = jax.tree.map(lambda x: jnp.repeat(x, m, axis=0), carry)
    carry, x_NxD = model.step(carry, jnp.tile(gates0_MxG, (rows, 1)), ablate)
    return carry, _logits(model, x_NxD)
