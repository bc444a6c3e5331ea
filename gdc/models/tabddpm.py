"""TabDDPM's hybrid diffusion (Kotelnikov et al. 2023) for mixed-type rows: Gaussian diffusion on the numeric
columns, multinomial diffusion (Hoogeboom et al. 2021) on the categorical columns, one MLP for both.

Row layout: ``[F numeric | one one-hot block per categorical column]`` with ``cards`` categories per block (the
table's label is one more block), as ``gdc.studies.tabular.data.Encoder`` writes it. Step indices s = 0..T-1 are the
paper's t = 1..T; ``ab[s]`` is the cosine schedule's alpha_bar (``ddpm.alpha_bar``), ``alpha[s] = ab[s] / ab[s-1]``
and ``ab_prev[s] = ab[s-1]`` (1 at s = 0). Both parts share the schedule, as in TabDDPM.

  * Numeric: x_s = sqrt(ab[s]) x_0 + sqrt(1 - ab[s]) eps; the network predicts eps (loss: mean over F of squares).
  * Categorical: q(x_s | x_{s-1}) = Cat(alpha[s] x_{s-1} + (1 - alpha[s]) / K), so q(x_s | x_0) = Cat(ab[s] x_0 +
    (1 - ab[s]) / K). The posterior q(x_{s-1} | x_s, x_0) is proportional to (alpha[s] x_s + (1 - alpha[s]) / K) *
    (ab_prev[s] x_0 + (1 - ab_prev[s]) / K). The network predicts x_0's distribution p0 (softmax of its logits per
    block) and the predicted posterior puts p0 in place of x_0. The column's loss is the KL between the true and
    the predicted posterior; at s = 0 the true posterior is x_0 itself (ab_prev = 1), so the same formula gives
    -log p(x_0 | x_1), the decoder term.
  * Per-example loss: mean over numeric columns of the squared error + mean over categorical columns of the KL
    (TabDDPM's sum of the two losses, the categorical one divided by the number of columns).
  * Draws: training passes take one (s, noise, Gumbel) draw per example from its key; scoring passes take
    ``score_draws`` draws stratified over s from a key of the example id alone (as ``ddpm``).
"""

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gdc.models.ddpm import SCORE_KEY, alpha_bar, time_features

LOG_FLOOR = 1e-30  # probabilities are floored here before the log: exact zeros (x_0 at s = 0) stay finite


def schedule(num_steps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ab, alpha, ab_prev), each ``[T]`` float64, for step indices 0..T-1."""
    ab_T = alpha_bar(num_steps)
    ab_prev_T = np.concatenate([[1.0], ab_T[:-1]])
    return ab_T, ab_T / ab_prev_T, ab_prev_T


def cat_marginal(x0_BxK: jax.Array, ab_B: jax.Array) -> jax.Array:
    """q(x_s | x_0) = ab x_0 + (1 - ab) / K for (probability or one-hot) rows ``x0_BxK``."""
    k = x0_BxK.shape[-1]
    return ab_B[:, None] * x0_BxK + (1.0 - ab_B[:, None]) / k


def cat_posterior_log(p0_BxK: jax.Array, xt_BxK: jax.Array, alpha_B: jax.Array, ab_prev_B: jax.Array) -> jax.Array:
    """log q(x_{s-1} | x_s, x_0 ~ p0), normalised per row; ``p0_BxK`` one-hot (true) or a distribution (predicted)."""
    k = xt_BxK.shape[-1]
    like_BxK = alpha_B[:, None] * xt_BxK + (1.0 - alpha_B[:, None]) / k  # q(x_s | x_{s-1}) as a function of x_{s-1}
    log_BxK = jnp.log(jnp.maximum(like_BxK, LOG_FLOOR)) + jnp.log(
        jnp.maximum(cat_marginal(p0_BxK, ab_prev_B), LOG_FLOOR)
    )
    return log_BxK - jax.nn.logsumexp(log_BxK, axis=-1, keepdims=True)


def cat_kl(
    logits_BxK: jax.Array, x0_BxK: jax.Array, xt_BxK: jax.Array, alpha_B: jax.Array, ab_prev_B: jax.Array
) -> jax.Array:
    """KL(q(x_{s-1} | x_s, x_0) || q(x_{s-1} | x_s, softmax(logits))) per row (``[B]``; -log p(x_0|x_1) at s = 0)."""
    log_q_BxK = cat_posterior_log(x0_BxK, xt_BxK, alpha_B, ab_prev_B)
    log_p_BxK = cat_posterior_log(jax.nn.softmax(logits_BxK, axis=-1), xt_BxK, alpha_B, ab_prev_B)
    q_BxK = jnp.exp(log_q_BxK)
    return jnp.sum(jnp.where(q_BxK > 0, q_BxK * (log_q_BxK - log_p_BxK), 0.0), axis=-1)


def blocks(num_numeric: int, cards: tuple[int, ...]) -> list[tuple[int, int]]:
    """(start, stop) column ranges of the categorical one-hot blocks."""
    starts = num_numeric + np.concatenate([[0], np.cumsum(cards)]).astype(int)
    return [(int(a), int(b)) for a, b in zip(starts[:-1], starts[1:], strict=True)]


class TabDDPM(nnx.Module):
    """[eps_hat | x_0 logits per block](x_s, s): ``depth`` SiLU layers of ``width`` on [x_s, time features]."""

    def __init__(self, num_numeric: int, cards: tuple[int, ...], width: int, depth: int, num_steps: int,
                 score_draws: int, *, rngs):  # fmt: skip
        self.num_numeric, self.cards = num_numeric, tuple(int(c) for c in cards)
        self.num_steps, self.score_draws = num_steps, score_draws
        self.num_features = num_numeric + sum(self.cards)
        dims = [self.num_features + 16] + [width] * depth
        self.hidden = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(dims[:-1], dims[1:], strict=True)])
        self.head = nnx.Linear(dims[-1], self.num_features, rngs=rngs)

    def __call__(self, x_BxD: jax.Array, t_B: jax.Array) -> jax.Array:
        h_BxD = jnp.concatenate([x_BxD, time_features(t_B, self.num_steps)], axis=-1)
        for layer in self.hidden:
            h_BxD = jax.nn.silu(layer(h_BxD))
        return self.head(h_BxD)


def _draws(model: TabDDPM, idx_B: jax.Array, keys_B: jax.Array | None):
    """(t_BxZ int32, noise_BxZxD, uniform_BxZxD): Gaussian noise for the numeric columns, uniforms for the Gumbel
    draws of the categorical ones (both D wide; each part uses its own columns)."""
    d, steps = model.num_features, model.num_steps
    if keys_B is not None:

        def one(key):
            k_t, k_n, k_u = jax.random.split(key, 3)
            return (
                jax.random.randint(k_t, (1,), 0, steps),
                jax.random.normal(k_n, (1, d)),
                jax.random.uniform(k_u, (1, d), minval=1e-6, maxval=1.0 - 1e-6),
            )

        return jax.vmap(one)(keys_B)
    k = model.score_draws

    def fixed(i):
        k_t, k_n, k_u = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(SCORE_KEY), i), 3)
        t_Z = jnp.floor((jnp.arange(k) + jax.random.uniform(k_t, (k,))) / k * steps).astype(jnp.int32)
        u_ZxD = jax.random.uniform(k_u, (k, d), minval=1e-6, maxval=1.0 - 1e-6)
        return jnp.clip(t_Z, 0, steps - 1), jax.random.normal(k_n, (k, d)), u_ZxD

    return jax.vmap(fixed)(idx_B)


def noisy(model: TabDDPM, x0_BxD: jax.Array, t_B: jax.Array, eps_BxD: jax.Array, u_BxD: jax.Array) -> jax.Array:
    """x_s ~ q(x_s | x_0): numeric columns noised with ``eps``, each block sampled by Gumbel-max from ``u``."""
    ab_T, _, _ = schedule(model.num_steps)
    ab_B = jnp.asarray(ab_T, jnp.float32)[t_B]
    f = model.num_numeric
    parts = [jnp.sqrt(ab_B)[:, None] * x0_BxD[:, :f] + jnp.sqrt(1.0 - ab_B)[:, None] * eps_BxD[:, :f]]
    for a, b in blocks(f, model.cards):
        gumbel_BxK = -jnp.log(-jnp.log(u_BxD[:, a:b]))
        logp_BxK = jnp.log(jnp.maximum(cat_marginal(x0_BxD[:, a:b], ab_B), LOG_FLOOR))
        parts.append(jax.nn.one_hot(jnp.argmax(logp_BxK + gumbel_BxK, axis=-1), b - a))
    return jnp.concatenate(parts, axis=-1)


def loss_terms(model: TabDDPM, out_BxD, x0_BxD, xt_BxD, eps_BxD, t_B) -> tuple[jax.Array, jax.Array]:
    """(numeric mean squared error, categorical mean KL), each ``[B]`` (zeros where the table has no such column)."""
    _, alpha_T, ab_prev_T = schedule(model.num_steps)
    alpha_B = jnp.asarray(alpha_T, jnp.float32)[t_B]
    ab_prev_B = jnp.asarray(ab_prev_T, jnp.float32)[t_B]
    f = model.num_numeric
    num_B = jnp.mean((out_BxD[:, :f] - eps_BxD[:, :f]) ** 2, axis=-1) if f else jnp.zeros(t_B.shape, jnp.float32)
    kls = [
        cat_kl(out_BxD[:, a:b], x0_BxD[:, a:b], xt_BxD[:, a:b], alpha_B, ab_prev_B) for a, b in blocks(f, model.cards)
    ]
    cat_B = jnp.mean(jnp.stack(kls, axis=-1), axis=-1) if kls else jnp.zeros(t_B.shape, jnp.float32)
    return num_B, cat_B


def per_example_loss(model: TabDDPM, batch: dict, keys_B: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    """Hybrid diffusion loss per example (f32 ``[B]``), averaged over the example's draws, and a zero "accuracy"."""
    x_BxD = batch["x"].astype(jnp.float32)
    t_BxZ, eps_BxZxD, u_BxZxD = _draws(model, batch["index"], keys_B)
    b, z, d = eps_BxZxD.shape
    x0_BzxD = jnp.repeat(x_BxD, z, axis=0)
    t_Bz, eps_BzxD, u_BzxD = t_BxZ.reshape(b * z), eps_BxZxD.reshape(b * z, d), u_BxZxD.reshape(b * z, d)
    xt_BzxD = noisy(model, x0_BzxD, t_Bz, eps_BzxD, u_BzxD)
    out_BzxD = model(xt_BzxD, t_Bz).astype(jnp.float32)
    num_Bz, cat_Bz = loss_terms(model, out_BzxD, x0_BzxD, xt_BzxD, eps_BzxD, t_Bz)
    loss_B = jnp.mean((num_Bz + cat_Bz).reshape(b, z), axis=1)
    return loss_B, jnp.zeros_like(loss_B)


def score(model: TabDDPM, x_BxD: jax.Array, t: int) -> jax.Array:
    """The learned score of the numeric columns, -eps_hat / sqrt(1 - ab[t]) (``[B, F]``), given the categorical
    columns of ``x_BxD`` as the model's x_t blocks."""
    ab = float(schedule(model.num_steps)[0][t])
    t_B = jnp.full((x_BxD.shape[0],), t, jnp.int32)
    return -model(x_BxD, t_B)[:, : model.num_numeric] / math.sqrt(1.0 - ab)


Predict = Callable[[jax.Array, jax.Array], jax.Array]  # (x_s [B, D], s [B]) -> [eps_hat | x_0 logits] [B, D]


def sample_rows(predict: Predict, key: jax.Array, num_rows: int, num_numeric: int, cards: tuple[int, ...],
                num_steps: int) -> jax.Array:  # fmt: skip
    """Ancestral sampling, ``[num_rows, D]`` f32 rows in the encoded layout (one-hot blocks).

    Numeric columns from N(0, I) with sigma_s^2 = beta_s; categorical blocks from the uniform distribution, each step
    drawing x_{s-1} from the predicted posterior (at s = 0, x_0 from p(x_0 | x_1)).
    """
    ab_T, alpha_T, ab_prev_T = (jnp.asarray(v, jnp.float32) for v in schedule(num_steps))
    beta_T = 1.0 - alpha_T
    f, spans = num_numeric, blocks(num_numeric, cards)
    k_num, k_cat, k_loop = jax.random.split(key, 3)
    parts = [jax.random.normal(k_num, (num_rows, f))]
    for j, (a, b) in enumerate(spans):
        parts.append(jax.nn.one_hot(jax.random.randint(jax.random.fold_in(k_cat, j), (num_rows,), 0, b - a), b - a))
    x_BxD = jnp.concatenate(parts, axis=-1)

    def body(i, x_BxD):
        t = num_steps - 1 - i
        t_B = jnp.full((num_rows,), t, jnp.int32)
        out_BxD = predict(x_BxD, t_B).astype(jnp.float32)
        k_n, k_c = jax.random.split(jax.random.fold_in(k_loop, t))
        mean_BxF = (x_BxD[:, :f] - beta_T[t] / jnp.sqrt(1.0 - ab_T[t]) * out_BxD[:, :f]) / jnp.sqrt(alpha_T[t])
        z_BxF = jax.random.normal(k_n, (num_rows, f))
        new = [mean_BxF + jnp.where(t > 0, jnp.sqrt(beta_T[t]), 0.0) * z_BxF]
        alpha_B, ab_prev_B = jnp.full((num_rows,), alpha_T[t]), jnp.full((num_rows,), ab_prev_T[t])
        for j, (a, b) in enumerate(spans):
            p0_BxK = jax.nn.softmax(out_BxD[:, a:b], axis=-1)
            log_post_BxK = cat_posterior_log(p0_BxK, x_BxD[:, a:b], alpha_B, ab_prev_B)
            draw_B = jax.random.categorical(jax.random.fold_in(k_c, j), log_post_BxK, axis=-1)
            new.append(jax.nn.one_hot(draw_B, b - a))
        return jnp.concatenate(new, axis=-1)

    return jax.lax.fori_loop(0, num_steps, body, x_BxD)


def sample(model: TabDDPM, key: jax.Array, num_rows: int) -> jax.Array:
    """``num_rows`` rows from the model (``sample_rows`` with the network as the predictor)."""
    return sample_rows(model, key, num_rows, model.num_numeric, model.cards, model.num_steps)
