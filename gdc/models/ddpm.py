"""A small MLP denoising diffusion model (DDPM, epsilon prediction) for tabular rows.

Rows are float vectors: standardised numeric columns and one-hot categorical columns, treated as continuous (the
decoding back to categories is the table's job, ``gdc.studies.tabular.data``). The noise schedule is the cosine
schedule of Nichol & Dhariwal with ``T`` steps; it is a function of ``T`` only, so it is rebuilt at trace time and
never stored as a parameter.

Invariants:
  * The per-example loss is the mean over the row's D coordinates of ``(eps - eps_hat)^2``.
  * Training passes (``keys_B`` given): one (t, noise) draw per example from its key, which the engine folds from
    (seed, step, example id).
  * Scoring and eval passes (``keys_B`` None): ``score_draws`` fixed draws per example, a function of the example id
    alone (stratified over t), averaged; the same example gets the same draws at every epoch, so its loss moves only
    with the parameters.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

SCORE_KEY = 20240917  # the fixed key of scoring draws; folded with the example id


def alpha_bar(num_steps: int) -> np.ndarray:
    """Cosine schedule: ``[T]`` cumulative products alpha_bar_t for t = 1..T (float64, in (0, 1))."""
    s = 0.008
    f = np.cos((np.arange(num_steps + 1) / num_steps + s) / (1 + s) * math.pi / 2) ** 2
    betas = np.clip(1.0 - f[1:] / f[:-1], 1e-5, 0.999)
    return np.cumprod(1.0 - betas)


def time_features(t_B: jax.Array, num_steps: int, dim: int = 16) -> jax.Array:
    """Sinusoidal features ``[B, dim]`` of the step index (0..T-1)."""
    freqs = jnp.exp(-math.log(1000.0) * jnp.arange(dim // 2) / (dim // 2))
    angle_BxDf = (t_B.astype(jnp.float32)[:, None] / num_steps * 1000.0) * freqs[None]
    return jnp.concatenate([jnp.sin(angle_BxDf), jnp.cos(angle_BxDf)], axis=-1)


class DDPM(nnx.Module):
    """eps_hat(x_t, t): ``depth`` SiLU layers of ``width`` on [x_t, time features], then a linear head to D."""

    def __init__(self, num_features: int, width: int, depth: int, num_steps: int, score_draws: int, *, rngs):
        self.num_features, self.num_steps, self.score_draws = num_features, num_steps, score_draws
        dims = [num_features + 16] + [width] * depth
        self.hidden = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(dims[:-1], dims[1:], strict=True)])
        self.head = nnx.Linear(dims[-1], num_features, rngs=rngs)

    def __call__(self, x_BxD: jax.Array, t_B: jax.Array) -> jax.Array:
        h_BxD = jnp.concatenate([x_BxD, time_features(t_B, self.num_steps)], axis=-1)
        for layer in self.hidden:
            h_BxD = jax.nn.silu(layer(h_BxD))
        return self.head(h_BxD)


def _draws(model: DDPM, idx_B: jax.Array, keys_B: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    """(t_BxZ int32, noise_BxZxD): Z = 1 in training, ``score_draws`` stratified fixed draws otherwise."""
    d, steps = model.num_features, model.num_steps
    if keys_B is not None:

        def one(key):
            k_t, k_n = jax.random.split(key)
            return jax.random.randint(k_t, (1,), 0, steps), jax.random.normal(k_n, (1, d))

        return jax.vmap(one)(keys_B)
    k = model.score_draws

    def fixed(i):
        k_t, k_n = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(SCORE_KEY), i))
        u_Z = jax.random.uniform(k_t, (k,))
        t_Z = jnp.floor((jnp.arange(k) + u_Z) / k * steps).astype(jnp.int32)  # one draw per stratum of t
        return jnp.clip(t_Z, 0, steps - 1), jax.random.normal(k_n, (k, d))

    return jax.vmap(fixed)(idx_B)


def per_example_loss(model: DDPM, batch: dict, keys_B: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    """Denoising loss per example (f32 ``[B]``), and a zero "accuracy" (diffusion has none; use the loss criterion)."""
    x_BxD = batch["x"].astype(jnp.float32)
    t_BxZ, eps_BxZxD = _draws(model, batch["index"], keys_B)
    ab_BxZ = jnp.asarray(alpha_bar(model.num_steps), jnp.float32)[t_BxZ]
    xt_BxZxD = jnp.sqrt(ab_BxZ)[..., None] * x_BxD[:, None] + jnp.sqrt(1.0 - ab_BxZ)[..., None] * eps_BxZxD
    b, k, d = eps_BxZxD.shape
    pred = model(xt_BxZxD.reshape(b * k, d), t_BxZ.reshape(b * k)).reshape(b, k, d)
    loss_B = jnp.mean((pred.astype(jnp.float32) - eps_BxZxD) ** 2, axis=(1, 2))
    return loss_B, jnp.zeros_like(loss_B)


def score(model: DDPM, x_BxD: jax.Array, t: int) -> jax.Array:
    """The learned score grad_x log p_t(x) = -eps_hat / sqrt(1 - alpha_bar_t) at step index ``t`` (0..T-1)."""
    ab = float(alpha_bar(model.num_steps)[t])
    t_B = jnp.full((x_BxD.shape[0],), t, jnp.int32)
    return -model(x_BxD, t_B) / math.sqrt(1.0 - ab)


def sample(model: DDPM, key: jax.Array, num_rows: int) -> jax.Array:
    """Ancestral sampling from x_T ~ N(0, I) down to x_0 (sigma_t^2 = beta_t): ``[num_rows, D]`` f32."""
    ab_T = jnp.asarray(alpha_bar(model.num_steps), jnp.float32)
    ab_prev_T = jnp.concatenate([jnp.ones((1,), jnp.float32), ab_T[:-1]])
    beta_T = 1.0 - ab_T / ab_prev_T
    k_init, k_loop = jax.random.split(key)
    x_BxD = jax.random.normal(k_init, (num_rows, model.num_features))

    def body(i, x_BxD):
        t = model.num_steps - 1 - i
        t_B = jnp.full((num_rows,), t, jnp.int32)
        eps_BxD = model(x_BxD, t_B)
        mean_BxD = (x_BxD - beta_T[t] / jnp.sqrt(1.0 - ab_T[t]) * eps_BxD) / jnp.sqrt(1.0 - beta_T[t])
        z_BxD = jax.random.normal(jax.random.fold_in(k_loop, t), x_BxD.shape)
        return mean_BxD + jnp.where(t > 0, jnp.sqrt(beta_T[t]), 0.0) * z_BxD

    return jax.lax.fori_loop(0, model.num_steps, body, x_BxD)
