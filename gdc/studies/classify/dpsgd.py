"""DP-SGD with Poisson sampling and its privacy accounting (dp_accounting's RDP and PLD accountants).

Mechanism (Abadi et al. 2016, the form the accountants analyse): at every step each of the n training examples is
included independently with probability q; every included example's gradient is clipped to L2 norm ``clip``, the
clipped gradients are summed, Gaussian noise of std ``sigma * clip`` is added to the sum, and the result is divided
by the expected batch size q n (a data-independent constant: dividing by the realised batch size would leak it).

Variable batch size under jit: each step gathers a fixed ``b_max`` rows, the included examples first in a random
order, with ``mask_B`` False on the padding rows (their clipped gradients are multiplied by 0). ``b_max`` is the
smallest size with ``tail = steps * P(Binomial(n, q) > b_max)`` at most ``TAIL_SHARE * delta / (1 + e^eps)``; a step
with more than ``b_max`` included examples drops the excess (it is counted: ``overflow``). Dropping changes the
mechanism only on that event, so the accountants' (eps, delta) holds for the run with delta + (1 + e^eps) * tail
(each of the two neighbouring runs is within total variation ``tail`` of its untruncated version): at most
delta * (1 + TAIL_SHARE).

Accounting: ``SelfComposedDpEvent(PoissonSampledDpEvent(q, GaussianDpEvent(sigma)), steps)``, add/remove-one
neighbours. RDP (Mironov 2017; dp_accounting's default orders and conversion) is the conservative number reported
and the one noise multipliers are calibrated against; PLD (connect-the-dots, discretisation 1e-3) is tighter.
"""

import functools
import logging
import math

import dp_accounting
import jax
import jax.numpy as jnp
import scipy.stats
from dp_accounting import pld, rdp

TAIL_SHARE = 1e-3  # the truncation's extra delta, as a share of delta


def dp_event(q: float, sigma: float, steps: int) -> dp_accounting.DpEvent:
    """The DpEvent of ``steps`` Poisson-sampled Gaussian steps (noise multiplier sigma, sampling rate q)."""
    return dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps
    )


def epsilon(sigma: float, q: float, steps: int, delta: float, accountant: str = "rdp") -> float:
    """epsilon at ``delta`` of the DP-SGD run, from the RDP (``"rdp"``) or PLD (``"pld"``) accountant."""
    acc = rdp.RdpAccountant() if accountant == "rdp" else pld.PLDAccountant(value_discretization_interval=1e-3)
    # dp_accounting logs a warning for each fractional RDP order whose series does not converge; it excludes that
    # order from the minimum, which can only make epsilon larger (conservative). Silence the noise here.
    level = logging.getLogger("absl").level
    logging.getLogger("absl").setLevel(logging.ERROR)
    try:
        acc.compose(dp_event(q, sigma, steps))
        return float(acc.get_epsilon(delta))
    finally:
        logging.getLogger("absl").setLevel(level)


def sigma_for_epsilon(target_epsilon: float, q: float, steps: int, delta: float) -> float:
    """The smallest noise multiplier whose RDP epsilon at ``delta`` is <= target_epsilon (bisection to 1e-4)."""
    lo, hi = 0.05, 1.0
    while epsilon(hi, q, steps, delta) > target_epsilon:
        lo, hi = hi, 2.0 * hi
        if hi > 1e4:
            raise ValueError(f"no noise multiplier <= 1e4 reaches epsilon {target_epsilon} (q={q}, steps={steps}).")
    while hi - lo > 1e-4:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if epsilon(mid, q, steps, delta) > target_epsilon else (lo, mid)
    return hi


def padded_batch_size(n: int, q: float, steps: int, tail: float) -> int:
    """Smallest b with steps * P(Binomial(n, q) > b) <= tail (at most n)."""
    b = int(math.ceil(n * q))
    while b < n and steps * scipy.stats.binom.sf(b, n, q) > tail:
        b += 1
    return b


def poisson_batch(key: jax.Array, n: int, q: float, b_max: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One Poisson-sampled step: (idx_B, mask_B, overflow) with B = b_max.

    Example i is included with probability q, independently; the included ids come first in a uniformly random
    order, then the excluded ones (masked out). ``overflow`` is True when more than b_max were included.
    """
    k_include, k_order = jax.random.split(key)
    include_N = jax.random.uniform(k_include, (n,)) < q
    order_N = jnp.argsort(jnp.where(include_N, 0.0, 1.0) + jax.random.uniform(k_order, (n,), maxval=0.5))
    idx_B = order_N[:b_max]
    return idx_B, include_N[idx_B], include_N.sum() > b_max


def noisy_clipped_mean(g_BxP: jax.Array, mask_B: jax.Array, noise_P: jax.Array, clip: float, denom: float):
    """(sum over unmasked rows of g clipped to norm ``clip`` + clip * noise_P) / denom; noise_P is N(0, sigma^2)."""
    norm_B = jnp.sqrt(jnp.sum(g_BxP * g_BxP, axis=1))
    scale_B = jnp.where(mask_B, jnp.minimum(1.0, clip / jnp.maximum(norm_B, 1e-12)), 0.0)
    return (jnp.sum(scale_B[:, None] * g_BxP, axis=0) + clip * noise_P) / denom


@functools.partial(jax.jit, static_argnums=(0,), static_argnames=("steps", "b_max"))
def train(net, data_R, theta0_RxP, keys_R, *, lr, steps, q, b_max, clip, sigma):
    """R Poisson-sampled DP-SGD runs in one vmap.

    Args:
      net: ``common.Net`` (its loss_fn gives per-example losses).
      data_R: stacked datasets {"x": [R, n, D], "y": [R, n]}, one per run.
      theta0_RxP: each run's initial parameters.
      keys_R: one key per run (sampling and noise are folded from it per step).
      lr, steps, q, b_max, clip, sigma: SGD step size, steps, sampling rate, padded batch, clip norm, noise multiplier.

    Returns:
      (theta_RxP, overflow_R: steps with more than b_max included, included_R: included examples summed over steps).
    """
    grad_one = jax.grad(lambda t, x, y: net.loss_fn(t, {"x": x[None], "y": y[None]})[0])

    def one(data, theta0_P, key):
        n = data["y"].shape[0]

        def step(theta_P, s):
            k_batch, k_noise = jax.random.split(jax.random.fold_in(key, s))
            idx_B, mask_B, overflow = poisson_batch(k_batch, n, q, b_max)
            g_BxP = jax.vmap(grad_one, in_axes=(None, 0, 0))(theta_P, data["x"][idx_B], data["y"][idx_B])
            noise_P = sigma * jax.random.normal(k_noise, theta_P.shape, theta_P.dtype)
            update_P = noisy_clipped_mean(g_BxP, mask_B, noise_P, clip, q * n)
            return theta_P - lr * update_P, (overflow, mask_B.sum())

        theta_P, (overflow_S, count_S) = jax.lax.scan(step, theta0_P, jnp.arange(steps))
        return theta_P, overflow_S.sum(), count_S.sum()

    return jax.vmap(one)(data_R, theta0_RxP, keys_R)


def describe(sigma: float, q: float, steps: int, delta: float, n: int) -> dict:
    """The accounting of one DP arm: sigma, q, steps, b_max, RDP and PLD epsilon, delta and its truncation term."""
    eps_rdp = epsilon(sigma, q, steps, delta, "rdp")
    growth = 1.0 + math.exp(min(eps_rdp, 700.0))
    b_max = padded_batch_size(n, q, steps, TAIL_SHARE * delta / growth)
    return {
        "noise_multiplier": float(sigma),
        "sampling_rate": float(q),
        "steps": int(steps),
        "padded_batch": b_max,
        "delta": float(delta),
        "epsilon_rdp": eps_rdp,
        "epsilon_pld": epsilon(sigma, q, steps, delta, "pld"),
        "delta_truncation_term": float(growth * steps * scipy.stats.binom.sf(b_max, n, q)),
    }
