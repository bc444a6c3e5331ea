"""gdc.influence.ghost against per-example gradients (vmap(grad) of gdc.influence.grads, numpy)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax_privacy import clipping as dp_clipping

from gdc import models
from gdc.influence import ghost, grads


def _model_loss(graphdef, params, batch):
    keys = batch.get("key")
    loss_B = models.per_example_loss(graphdef, params, batch, keys)[0]
    return loss_B * batch["weight"] if "weight" in batch else loss_B


def _setup(name, n=7, seq_len=8, dropout=0.0, seed=0):
    cfg = models.ModelConfig(name=name, width=8, depth=1, num_heads=2, dropout=dropout)
    graphdef, params = models.build(cfg, seed=seed, vocab_size=24, seq_len=seq_len, num_features=5, num_classes=3)
    rng = np.random.default_rng(seed)
    if name == "mlp":
        batch = {"x": rng.normal(size=(n, 5)), "y": rng.integers(0, 3, n)}
        batch["x"][-1] = 0.0  # a zero (padding-like) row
    else:
        mask = np.ones((n, seq_len), bool)
        mask[1, 5:] = False  # a short example
        mask[2] = False  # a padding row: loss 0, gradient 0
        batch = {"tokens": rng.integers(0, 6, (n, seq_len + 1)), "token_mask": mask}  # 6 ids: repeats within a row
    batch = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32 if a.dtype == np.float64 else None), batch)
    return graphdef, params, batch


def _reference(graphdef, params, batch):
    theta_P, unravel = grads.flatten(params)
    return grads.per_example_grads(lambda t, b: _model_loss(graphdef, unravel(t), b), theta_P, batch)


@pytest.mark.parametrize("name", ["mlp", "transformer", "lstm"])  # lstm: its w_rec goes through the vmap fallback
def test_ghost_norms_match_per_example_grads(name):
    graphdef, params, batch = _setup(name)
    theta_P, unravel = grads.flatten(params)
    want = grads.grad_sq_norms(lambda t, b: _model_loss(graphdef, unravel(t), b), theta_P, batch)
    for batch_size in (None, 3) if name == "mlp" else (None,):  # 3 leaves a remainder chunk (compiles are slow)
        got = ghost.ghost_sq_norms(_model_loss, graphdef, params, batch, batch_size)
        np.testing.assert_allclose(got, want, rtol=1e-5)
    if name != "mlp":
        assert want[2] == 0.0 and got[2] == 0.0  # the padding row
        assert np.all(np.delete(np.asarray(got), 2) > 0)


def test_ghost_norms_with_dropout_keys_and_weights():
    graphdef, params, batch = _setup("mlp", dropout=0.5)
    batch["key"] = jax.random.split(jax.random.key(3), 7)
    batch["weight"] = jnp.asarray([1.0, 0.5, 2.0, 0.0, 1.0, 3.0, 1.0])
    g_NxP = _reference(graphdef, params, batch)
    got = ghost.ghost_sq_norms(_model_loss, graphdef, params, batch)
    np.testing.assert_allclose(got, np.sum(np.asarray(g_NxP, np.float64) ** 2, axis=1), rtol=1e-5)
    assert got[3] == 0.0


class _Shared(nnx.Module):
    """A Linear applied twice per example, a bias-free LayerNorm, a position embedding on an unbatched input and a
    parameter read directly (not through a tapped layer: the vmap fallback)."""

    def __init__(self, rngs):
        self.pos = nnx.Embed(4, 6, rngs=rngs)
        self.lin = nnx.Linear(6, 6, rngs=rngs)
        self.ln = nnx.LayerNorm(6, use_bias=False, rngs=rngs)
        self.gain = nnx.Param(jnp.linspace(0.5, 1.5, 6))
        self.head = nnx.Linear(6, 1, use_bias=False, rngs=rngs)

    def __call__(self, x_BxTxD):
        h_BxTxD = x_BxTxD + self.pos(jnp.arange(x_BxTxD.shape[1]))[None]
        h_BxTxD = self.lin(jnp.tanh(self.lin(h_BxTxD)))
        return jnp.mean(self.head(self.ln(h_BxTxD) * self.gain[None, None])[..., 0] ** 2, axis=1)


def _shared_loss(g, p, b):
    return nnx.merge(g, p)(b["x"])


def test_ghost_shared_layer_broadcast_embedding_and_fallback():
    graphdef, params = nnx.split(_Shared(nnx.Rngs(0)), nnx.Param)
    batch = {"x": jax.random.normal(jax.random.key(1), (5, 4, 6))}
    theta_P, unravel = grads.flatten(params)
    g_NxP = grads.per_example_grads(lambda t, b: _shared_loss(graphdef, unravel(t), b), theta_P, batch)
    want_N = np.linalg.norm(g_NxP, axis=1)
    np.testing.assert_allclose(ghost.ghost_sq_norms(_shared_loss, graphdef, params, batch), want_N**2, rtol=1e-5)
    clip = float(np.median(want_N))
    (want_P,), _ = optax.per_example_global_norm_clip([g_NxP], clip)
    got, _ = ghost.ghost_clipped_grad(_shared_loss, graphdef, params, batch, clip)
    np.testing.assert_allclose(grads.flatten(got)[0], want_P, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("shape", [(3, 2, 5), (1, 4, 3), (9, 2, 2)])  # (T, Din, Dout): both branches of the choice
def test_dense_and_embed_sq_norm_forms(shape):
    t, i, o = shape
    rng = np.random.default_rng(0)
    x, d = rng.normal(size=(t, i)), rng.normal(size=(t, o))
    np.testing.assert_allclose(ghost._dense_sq_norm(jnp.asarray(x), jnp.asarray(d)), np.sum((x.T @ d) ** 2), rtol=1e-5)
    ids = rng.integers(0, 3, t)
    table = np.zeros((3, o))  # V = 3: the [V, D] scatter when T^2 >= 3, the same-id Gram when T = 1
    np.add.at(table, ids, d)
    np.testing.assert_allclose(
        ghost._embed_sq_norm(jnp.asarray(ids), jnp.asarray(d), table.shape[0]), np.sum(table**2), rtol=1e-5
    )


def test_ghost_clipped_grad_matches_optax_clip():
    graphdef, params, batch = _setup("transformer")
    g_NxP = _reference(graphdef, params, batch)
    want_N = np.linalg.norm(g_NxP, axis=1)
    clip = float(np.median(want_N[want_N > 0]))  # some examples clipped, some not
    (want_P,), _ = optax.per_example_global_norm_clip([g_NxP], clip)
    for two_pass in (False, True):
        got, norms_N = ghost.ghost_clipped_grad(_model_loss, graphdef, params, batch, clip, two_pass=two_pass)
        np.testing.assert_allclose(norms_N, want_N, rtol=1e-5)
        np.testing.assert_allclose(grads.flatten(got)[0], want_P, rtol=1e-4, atol=1e-6)


def test_ghost_clipped_grad_matches_jax_privacy():
    """The DP library's own clipped-gradient transform (per-example vmap, clip, sum) as the reference (the MLP; the
    transformer's clipped sum is checked against optax's above)."""
    graphdef, params, batch = _setup("mlp")
    norms_N = np.sqrt(ghost.ghost_sq_norms(_model_loss, graphdef, params, batch))
    clip = float(np.median(norms_N[norms_N > 0]))  # some examples clipped, some not
    dp_fn = dp_clipping.clipped_grad(
        lambda p, b: _model_loss(graphdef, p, b).sum(), l2_clip_norm=clip, batch_argnums=1, return_grad_norms=True
    )
    want, aux = dp_fn(params, batch)
    got, got_norms_N = ghost.ghost_clipped_grad(_model_loss, graphdef, params, batch, clip)
    np.testing.assert_allclose(got_norms_N, aux.grad_norms, rtol=1e-5)
    np.testing.assert_allclose(grads.flatten(got)[0], grads.flatten(want)[0], rtol=1e-4, atol=1e-6)
    assert np.sum(np.asarray(aux.grad_norms) > clip) >= 1  # the clip binds for at least one example


def test_tapped_graph_is_transparent():
    graphdef, params, batch = _setup("transformer")
    tapped = ghost.tap(graphdef, params)
    np.testing.assert_array_equal(models.forward(tapped, params, batch), models.forward(graphdef, params, batch))


class _Scanned(nnx.Module):
    def __init__(self, rngs):
        self.lin = nnx.Linear(3, 3, rngs=rngs)

    def __call__(self, x_BxD):
        h_BxD, _ = jax.lax.scan(lambda h, _: (jnp.tanh(self.lin(h)), None), x_BxD, None, length=2)
        return jnp.sum(h_BxD**2, axis=-1)


def test_tapped_layer_inside_scan_raises():
    graphdef, params = nnx.split(_Scanned(nnx.Rngs(0)), nnx.Param)
    with pytest.raises(jax.errors.UnexpectedTracerError):
        ghost.ghost_sq_norms(lambda g, p, b: nnx.merge(g, p)(b["x"]), graphdef, params, {"x": jnp.ones((2, 3))})
