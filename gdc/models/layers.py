"""Shared pieces of the models: per-example dropout."""

import jax
import jax.numpy as jnp


def dropout(x_Bx: jax.Array, rate: float, keys_B: jax.Array | None, salt: int) -> jax.Array:
    """Inverted dropout whose mask for example b depends only on ``keys_B[b]`` and ``salt``.

    ``keys_B`` None (eval and scoring passes) or ``rate`` 0 returns ``x_Bx`` unchanged. Drawing masks per example keeps
    an example's loss independent of its batch-mates and of the device count.
    """
    if keys_B is None or rate == 0.0:
        return x_Bx

    def one(key, x):
        keep = jax.random.bernoulli(jax.random.fold_in(key, salt), 1.0 - rate, x.shape)
        return jnp.where(keep, x / (1.0 - rate), 0.0)

    return jax.vmap(one)(keys_B, x_Bx)
