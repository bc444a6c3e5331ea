"""MLP classifier (synthetic data, convex-ish sanity model)."""

import jax
from flax import nnx

from gdc.models.layers import dropout


class MLP(nnx.Module):
    """``depth`` hidden ReLU layers of ``width`` units, then a linear head to ``num_classes`` logits."""

    def __init__(self, num_features: int, num_classes: int, width: int, depth: int, dropout_rate: float, *, rngs):
        dims = [num_features] + [width] * depth
        self.hidden = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(dims[:-1], dims[1:], strict=True)])
        self.head = nnx.Linear(dims[-1], num_classes, rngs=rngs)
        self.dropout_rate = dropout_rate

    def __call__(self, x_BxD: jax.Array, keys_B: jax.Array | None = None) -> jax.Array:
        h_BxD = x_BxD
        for i, layer in enumerate(self.hidden):
            h_BxD = dropout(jax.nn.relu(layer(h_BxD)), self.dropout_rate, keys_B, salt=i)
        return self.head(h_BxD)
