"""LayerNorm -> one softmax attention layer (read at the query) -> 3-layer MLP -> one logit; vmapped training.

The query token's normalised row plus the attention output feeds the MLP, so the MLP alone can memorise item labels
(IWL) and the attention can copy the matching context label (ICL). ``train`` is a pure function of (key, K, weight
decay), so one ``jax.vmap`` trains every (seed, K, weight decay) cell of one context length N in one program. With
``RunSpec.iwl_only`` the training contexts never hold the query's pair (only IWL can lower the loss).
"""

import dataclasses

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from gdc.studies.icl import task


@dataclasses.dataclass(frozen=True)
class RunSpec:
    dim: int = 32
    n: int = 8
    k_max: int = 1024
    copies: int = 1
    p_bursty: float = 1.0
    width: int = 64
    lr: float = 1e-3
    batch_size: int = 64
    checkpoints: int = 20
    steps_per_checkpoint: int = 100
    eval_size: int = 512
    track_items: int = 64
    iwl_only: bool = False  # training contexts never hold the query's pair: only in-weight learning can help


class ICLNet(nnx.Module):
    def __init__(self, dim: int, width: int, *, rngs: nnx.Rngs):
        t = dim + 1
        self.norm = nnx.LayerNorm(t, rngs=rngs)
        self.q = nnx.Linear(t, t, use_bias=False, rngs=rngs)
        self.k = nnx.Linear(t, t, use_bias=False, rngs=rngs)
        self.v = nnx.Linear(t, t, use_bias=False, rngs=rngs)
        self.mlp = nnx.List([nnx.Linear(t, width, rngs=rngs), nnx.Linear(width, width, rngs=rngs)])
        self.out = nnx.Linear(width, 1, rngs=rngs)

    def __call__(self, tokens_BxLxD: jax.Array) -> jax.Array:
        h_BxLxD = self.norm(tokens_BxLxD)
        q_BxD = self.q(h_BxLxD[:, -1])
        k_BxLxD, v_BxLxD = self.k(h_BxLxD), self.v(h_BxLxD)
        att_BxL = jax.nn.softmax(jnp.einsum("bt,blt->bl", q_BxD, k_BxLxD) / jnp.sqrt(q_BxD.shape[-1]), axis=-1)
        y_BxD = h_BxLxD[:, -1] + jnp.einsum("bl,blt->bt", att_BxL, v_BxLxD)
        for layer in self.mlp:
            y_BxD = jax.nn.relu(layer(y_BxD))
        return self.out(y_BxD)[:, 0].astype(jnp.float32)


def graphdef(spec: RunSpec) -> nnx.GraphDef:
    return nnx.split(ICLNet(spec.dim, spec.width, rngs=nnx.Rngs(0)), nnx.Param)[0]


def optimizer(lr: float, weight_decay) -> optax.GradientTransformation:
    """AdamW (decoupled decay, applied to every parameter); ``weight_decay`` may be traced, and 0 is plain Adam."""
    return optax.adamw(lr, weight_decay=weight_decay)


def train_batch(spec: RunSpec, key: jax.Array, x_KxD: jax.Array, label_K: jax.Array, k: jax.Array):
    """(tokens_BxLx(D+1), target_B) of one training step: bursty contexts, or with ``spec.iwl_only`` contexts drawn
    from the other K - 1 items (never a copy of the query, so they carry nothing about its label)."""
    if spec.iwl_only:
        return task.batch(task.iwl_sequence, key, spec.batch_size, x_KxD, label_K, k, spec.n)
    toks, tgt, _, _ = task.batch(
        task.train_sequence, key, spec.batch_size, x_KxD, label_K, k, spec.n, spec.copies, spec.p_bursty
    )
    return toks, tgt


def train(spec: RunSpec, gdef: nnx.GraphDef, key: jax.Array, k: jax.Array, weight_decay: jax.Array) -> dict:
    """Trains one network on K = ``k`` items (traced) with context length spec.n and AdamW ``weight_decay`` (traced;
    0 is plain Adam: the decay term adds exactly zero).

    Returns a dict of per-checkpoint arrays: iwl_E, icl_E (accuracy), train_loss_E (mean over the interval),
    item_loss_ExT (IWL loss of items 0..track_items-1 under one fixed context each; NaN for items >= K).
    """
    k_items, k_init, k_train, k_eval, k_probe = jax.random.split(key, 5)
    x_KxD, label_K = task.items(k_items, spec.k_max, spec.dim)
    params = nnx.split(ICLNet(spec.dim, spec.width, rngs=nnx.Rngs(params=k_init)), nnx.Param)[1]
    tx = optimizer(spec.lr, weight_decay)
    opt_state = tx.init(params)

    def predict(params, toks):
        return nnx.merge(gdef, params)(toks)

    def loss_fn(params, toks, tgt):
        return task.logistic_loss(predict(params, toks), tgt).mean()

    def step(carry, s):
        params, opt_state = carry
        toks, tgt = train_batch(spec, jax.random.fold_in(k_train, s), x_KxD, label_K, k)
        loss, grads = jax.value_and_grad(loss_fn)(params, toks, tgt)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    # Fixed probes: one context per tracked item (so its loss is comparable across checkpoints).
    t_ids = jnp.arange(spec.track_items)
    probe_keys = jax.random.split(k_probe, spec.track_items)
    item_toks, item_tgt = jax.vmap(lambda kk, q: task.iwl_sequence(kk, x_KxD, label_K, k, spec.n, q))(
        probe_keys, t_ids % k
    )

    def checkpoint(carry, e):
        carry, loss_G = jax.lax.scan(step, carry, e * spec.steps_per_checkpoint + jnp.arange(spec.steps_per_checkpoint))
        params = carry[0]
        iwl, icl = task.eval_accuracy(
            lambda toks: predict(params, toks),
            jax.random.fold_in(k_eval, e),
            x_KxD,
            label_K,
            k,
            spec.n,
            spec.dim,
            spec.copies,
            spec.eval_size,
        )
        item_loss = jnp.where(t_ids < k, task.logistic_loss(predict(params, item_toks), item_tgt), jnp.nan)
        return carry, {"iwl_E": iwl, "icl_E": icl, "train_loss_E": loss_G.mean(), "item_loss_ExT": item_loss}

    _, out = jax.lax.scan(checkpoint, (params, opt_state), jnp.arange(spec.checkpoints))
    return out
