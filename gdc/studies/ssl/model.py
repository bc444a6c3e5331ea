"""A small SimCLR encoder on 8x8 digits: MLP trunk + projection head, augmentations, NT-Xent, vmapped training.

Invariants:
  * Augmentations of example i depend only on (key, i): a random shift of up to ``shift`` pixels (zero padded), a
    random brightness scale and Gaussian pixel noise. Training draws them from fold_in(fold_in(key, step), i); the
    per-epoch scoring pass uses one fixed pair per example, so its losses are comparable across epochs.
  * The per-example score loss is NT-Xent over the whole scored set at once (2N views, N - 1 ... 2N - 2 negatives),
    the mean of the example's two views' losses, so it does not depend on batch composition.
  * ``train`` is a pure function of (key, data ids): ``jax.vmap`` runs several encoders (seeds, data subsets) in one
    program. ``train_supervised`` is the same trunk trained with a softmax head on the labels (the supervised
    control), with the same augmentations, optimizer, batches and epochs.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import optax
from flax import nnx


@dataclasses.dataclass(frozen=True)
class EncoderSpec:
    width: int = 256
    depth: int = 3
    proj_dim: int = 64
    shift: int = 1
    noise: float = 0.1
    brightness: float = 0.2
    temperature: float = 0.5
    lr: float = 1e-3
    epochs: int = 60
    batch_size: int = 250


class Encoder(nnx.Module):
    """``depth`` ReLU layers of ``width`` units, then a linear projection head; returns every layer's output."""

    def __init__(self, spec: EncoderSpec, *, rngs: nnx.Rngs):
        dims = [64] + [spec.width] * spec.depth
        self.trunk = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(dims[:-1], dims[1:], strict=True)])
        self.head = nnx.Linear(spec.width, spec.proj_dim, rngs=rngs)

    def __call__(self, x_BxD: jax.Array) -> list[jax.Array]:
        outs, h_BxD = [], x_BxD
        for layer in self.trunk:
            h_BxD = jax.nn.relu(layer(h_BxD))
            outs.append(h_BxD)
        outs.append(self.head(h_BxD))
        return outs


def graphdef(spec: EncoderSpec) -> nnx.GraphDef:
    return nnx.split(Encoder(spec, rngs=nnx.Rngs(0)), nnx.Param)[0]


def init(spec: EncoderSpec, key: jax.Array) -> nnx.State:
    return nnx.split(Encoder(spec, rngs=nnx.Rngs(params=key)), nnx.Param)[1]


def layers(gdef: nnx.GraphDef, params: nnx.State, x_BxD: jax.Array) -> list[jax.Array]:
    """Every layer's output (trunk layers, then the projection)."""
    return nnx.merge(gdef, params)(x_BxD)


def augment(spec: EncoderSpec, key: jax.Array, x_D: jax.Array) -> jax.Array:
    """One augmented view of one flattened 8x8 image in [0, 1]."""
    k_shift, k_scale, k_noise = jax.random.split(key, 3)
    s = spec.shift
    img_8x8 = jnp.pad(x_D.reshape(8, 8), s)
    dy, dx = jax.random.randint(k_shift, (2,), 0, 2 * s + 1)
    img_8x8 = jax.lax.dynamic_slice(img_8x8, (dy, dx), (8, 8))
    scale = 1.0 + spec.brightness * jax.random.uniform(k_scale, (), minval=-1.0, maxval=1.0)
    return (scale * img_8x8).reshape(64) + spec.noise * jax.random.normal(k_noise, (64,))


def augment_batch(spec: EncoderSpec, key: jax.Array, idx_B: jax.Array, x_BxD: jax.Array) -> jax.Array:
    keys_B = jax.vmap(jax.random.fold_in, (None, 0))(key, idx_B)
    return jax.vmap(functools.partial(augment, spec))(keys_B, x_BxD)


def nt_xent(z1_BxD: jax.Array, z2_BxD: jax.Array, temperature: float) -> jax.Array:
    """loss_B: NT-Xent of each pair (mean of its two views' losses), the other 2B - 2 views as negatives."""
    b = z1_BxD.shape[0]
    z_2BxD = jnp.concatenate([z1_BxD, z2_BxD]).astype(jnp.float32)
    z_2BxD = z_2BxD / jnp.maximum(jnp.linalg.norm(z_2BxD, axis=1, keepdims=True), 1e-8)
    sim = z_2BxD @ z_2BxD.T / temperature
    sim = jnp.where(jnp.eye(2 * b, dtype=bool), -jnp.inf, sim)
    pos_2B = jnp.concatenate([jnp.arange(b, 2 * b), jnp.arange(b)])
    loss_2B = jax.nn.logsumexp(sim, axis=1) - sim[jnp.arange(2 * b), pos_2B]
    return 0.5 * (loss_2B[:b] + loss_2B[b:])


def train(spec: EncoderSpec, gdef: nnx.GraphDef, x_NxD: jax.Array, key: jax.Array, ids_M: jax.Array):
    """Trains one encoder on the examples ``ids_M`` of ``x_NxD`` (vmap this over keys and id sets).

    Returns:
      (params, score_loss_ExM: per-epoch NT-Xent of each training example under fixed views (after the epoch's
      updates), train_loss_E: mean minibatch loss per epoch).
    """
    m = ids_M.shape[0]
    steps = m // spec.batch_size
    tx = optax.adam(spec.lr)
    k_init, k_train, k_score, k_perm = jax.random.split(key, 4)
    params = init(spec, k_init)
    opt_state = tx.init(params)
    xm_MxD = x_NxD[ids_M]
    score_views = (
        augment_batch(spec, jax.random.fold_in(k_score, 0), ids_M, xm_MxD),
        augment_batch(spec, jax.random.fold_in(k_score, 1), ids_M, xm_MxD),
    )

    def loss_fn(params, v1, v2):
        z1, z2 = layers(gdef, params, v1)[-1], layers(gdef, params, v2)[-1]
        return nt_xent(z1, z2, spec.temperature).mean()

    def step_fn(carry, s):
        params, opt_state, perm_M, epoch = carry
        pos_B = jax.lax.dynamic_slice(perm_M, (s * spec.batch_size,), (spec.batch_size,))
        idx_B, x_BxD = ids_M[pos_B], xm_MxD[pos_B]
        k = jax.random.fold_in(k_train, epoch * steps + s)
        v1 = augment_batch(spec, jax.random.fold_in(k, 0), idx_B, x_BxD)
        v2 = augment_batch(spec, jax.random.fold_in(k, 1), idx_B, x_BxD)
        loss, grads = jax.value_and_grad(loss_fn)(params, v1, v2)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state, perm_M, epoch), loss

    def epoch_fn(carry, epoch):
        params, opt_state = carry
        perm_M = jax.random.permutation(jax.random.fold_in(k_perm, epoch), m)
        (params, opt_state, _, _), loss_G = jax.lax.scan(step_fn, (params, opt_state, perm_M, epoch), jnp.arange(steps))
        z1 = layers(gdef, params, score_views[0])[-1]
        z2 = layers(gdef, params, score_views[1])[-1]
        return (params, opt_state), (nt_xent(z1, z2, spec.temperature), loss_G.mean())

    (params, _), (score_ExM, train_E) = jax.lax.scan(epoch_fn, (params, opt_state), jnp.arange(spec.epochs))
    return params, score_ExM, train_E


def train_supervised(
    spec: EncoderSpec, gdef: nnx.GraphDef, x_NxD: jax.Array, y_N: jax.Array, key: jax.Array, ids_M: jax.Array
):
    """Trains one encoder whose head gives class logits (``spec.proj_dim`` = number of classes) with cross-entropy
    on augmented views of ``ids_M``. Returns (params, train_loss_E: mean minibatch loss per epoch)."""
    m = ids_M.shape[0]
    steps = m // spec.batch_size
    tx = optax.adam(spec.lr)
    k_init, k_train, k_perm = jax.random.split(key, 3)
    params = init(spec, k_init)
    opt_state = tx.init(params)
    xm_MxD, ym_M = x_NxD[ids_M], y_N[ids_M]

    def loss_fn(params, v, y_B):
        logits_BxC = layers(gdef, params, v)[-1]
        return optax.softmax_cross_entropy_with_integer_labels(logits_BxC, y_B).mean()

    def step_fn(carry, s):
        params, opt_state, perm_M, epoch = carry
        pos_B = jax.lax.dynamic_slice(perm_M, (s * spec.batch_size,), (spec.batch_size,))
        k = jax.random.fold_in(k_train, epoch * steps + s)
        v = augment_batch(spec, k, ids_M[pos_B], xm_MxD[pos_B])
        loss, grads = jax.value_and_grad(loss_fn)(params, v, ym_M[pos_B])
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state, perm_M, epoch), loss

    def epoch_fn(carry, epoch):
        params, opt_state = carry
        perm_M = jax.random.permutation(jax.random.fold_in(k_perm, epoch), m)
        (params, opt_state, _, _), loss_G = jax.lax.scan(step_fn, (params, opt_state, perm_M, epoch), jnp.arange(steps))
        return (params, opt_state), loss_G.mean()

    (params, _), train_E = jax.lax.scan(epoch_fn, (params, opt_state), jnp.arange(spec.epochs))
    return params, train_E
