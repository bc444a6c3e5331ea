"""Character (byte) language models: an LSTM, a GRU and a GPT-2-style causal transformer.

All map ``inputs_BxL`` int32 tokens to ``logits_BxLxV`` f32, position t seeing only inputs 0..t.

For localisation analyses all also take two keyword-only options (defaults keep the plain call unchanged):
``return_hidden=True`` returns ``(logits_BxLxV, hidden)`` with ``hidden`` a list of ``depth + 1`` f32 ``[B, L, D]``
arrays: layer 0 is the embedding, layer i the output of LSTM layer i / transformer block i (the residual stream).
``ablate=(layer, u_D, alpha)`` replaces that layer's output x by ``x - alpha (x . u) u`` before the rest of the model
reads it (``u`` unit norm; alpha 1 projects the direction out). For the recurrent models only the output passed up
is changed, not the layer's own recurrent state.

Initialisation of the recurrent cells, checked against common practice: LeCun-normal input kernels (``nnx.Linear``'s
default; Keras uses Glorot-uniform, of the same scale for a square-ish kernel), orthogonal recurrent kernels (as
Keras), zero biases; the LSTM adds a constant +1 to its forget gate (Jozefowicz et al. 2015; Keras'
``unit_forget_bias``; PyTorch users set it by hand), so a fresh cell keeps ~73% of its state. The GRU has no such
offset (Keras and PyTorch both start its gates at bias 0). At the study's settings the LSTM still extracts far fewer
canaries greedily than the GRU (docs/results/exp_a/exploration.md).
"""

import jax
import jax.numpy as jnp
from flax import nnx

from gdc.models.layers import dropout

Ablation = tuple[int, jax.Array, float] | None


def ablate_direction(x_BxLxD: jax.Array, layer: int, ablate: Ablation) -> jax.Array:
    """``x - alpha (x . u) u`` when ``ablate`` names ``layer``; ``x`` otherwise."""
    if ablate is None or ablate[0] != layer:
        return x_BxLxD
    _, u_D, alpha = ablate
    u_1xD = jnp.asarray(u_D, x_BxLxD.dtype).reshape((1,) * (x_BxLxD.ndim - 1) + (-1,))
    return x_BxLxD - alpha * jnp.sum(x_BxLxD * u_1xD, axis=-1, keepdims=True) * u_1xD


def lstm_cell(carry: tuple[jax.Array, jax.Array], gates_Bx4D: jax.Array, kernel_Dx4D: jax.Array) -> tuple:
    """One LSTM time step from the input projection ``gates_Bx4D``: returns the new ``(c_BxD, h_BxD)``."""
    c_BxD, h_BxD = carry
    i_g, f_g, g_g, o_g = jnp.split(gates_Bx4D + h_BxD @ kernel_Dx4D, 4, axis=-1)
    c_BxD = jax.nn.sigmoid(f_g + 1.0) * c_BxD + jax.nn.sigmoid(i_g) * jnp.tanh(g_g)
    return c_BxD, jax.nn.sigmoid(o_g) * jnp.tanh(c_BxD)


class RecurrentLM(nnx.Module):
    """Embedding, ``depth`` recurrent layers of ``width`` units, linear head; a subclass gives the cell.

    The input projections of all time steps are one matmul outside the scan; only the recurrent product is
    sequential. Subclasses set ``GATES`` (projections per unit) and ``RECURRENT_BIAS`` and define ``_cell`` (one
    layer's state update), ``_output`` (the state's hidden vector) and ``_zero`` (the all-zero state).
    """

    GATES: int
    RECURRENT_BIAS: bool

    def __init__(self, vocab_size: int, width: int, depth: int, dropout_rate: float, *, rngs):
        self.embed = nnx.Embed(vocab_size, width, rngs=rngs)
        gates = self.GATES * width
        self.w_in = nnx.List([nnx.Linear(width, gates, rngs=rngs) for _ in range(depth)])
        orthogonal = nnx.initializers.orthogonal()
        self.w_rec = nnx.List(
            [
                nnx.Linear(width, gates, use_bias=self.RECURRENT_BIAS, kernel_init=orthogonal, rngs=rngs)
                for _ in range(depth)
            ]
        )
        self.head = nnx.Linear(width, vocab_size, rngs=rngs)
        self.width = width
        self.dropout_rate = dropout_rate

    def _cell(self, state, gates_BxDg: jax.Array, layer: int):
        raise NotImplementedError

    def _output(self, state) -> jax.Array:
        raise NotImplementedError

    def _zero(self, batch: int, dtype) -> object:
        raise NotImplementedError

    def __call__(
        self,
        inputs_BxL: jax.Array,
        keys_B: jax.Array | None = None,
        *,
        return_hidden: bool = False,
        ablate: Ablation = None,
    ):
        x_BxLxD = ablate_direction(self.embed(inputs_BxL), 0, ablate)
        hidden = [x_BxLxD]
        for i, w_in in enumerate(self.w_in):
            gates_LxBxDg = jnp.swapaxes(w_in(x_BxLxD), 0, 1)

            def cell(state, g_BxDg, i=i):
                state = self._cell(state, g_BxDg, i)
                return state, self._output(state)

            _, h_LxBxD = jax.lax.scan(cell, self._zero(inputs_BxL.shape[0], gates_LxBxDg.dtype), gates_LxBxDg)
            x_BxLxD = ablate_direction(jnp.swapaxes(h_LxBxD, 0, 1), i + 1, ablate)
            hidden.append(x_BxLxD)
            x_BxLxD = dropout(x_BxLxD, self.dropout_rate, keys_B, salt=i)
        logits_BxLxV = self.head(x_BxLxD).astype(jnp.float32)
        return (logits_BxLxV, hidden) if return_hidden else logits_BxLxV

    def initial_carry(self, batch: int) -> tuple:
        """The all-zero state of every layer, as ``__call__`` starts from."""
        return tuple(self._zero(batch, jnp.float32) for _ in self.w_in)

    def step(self, carry: tuple, gates0_BxDg: jax.Array, ablate: Ablation = None) -> tuple[tuple, jax.Array]:
        """One time step of every layer (no dropout), for decoding with the state carried along.

        ``gates0_BxDg`` is the first layer's input projection ``w_in[0](embed(tokens_B))`` (with any layer-0
        ablation already applied to the embedding); callers feeding few distinct tokens can compute it once per
        token. Returns (carry, the top layer's hidden state after its ablation, as fed to ``head``).
        """
        new, x_BxD = [], None
        for i, (state, w_in) in enumerate(zip(carry, self.w_in, strict=True)):
            state = self._cell(state, gates0_BxDg if i == 0 else w_in(x_BxD), i)
            new.append(state)
            x_BxD = ablate_direction(self._output(state), i + 1, ablate)
        return tuple(new), x_BxD


class CharLSTM(RecurrentLM):
    """``RecurrentLM`` with LSTM cells; the state of a layer is ``(c_BxD, h_BxD)``."""

    GATES = 4
    RECURRENT_BIAS = False

    def _cell(self, state, gates_Bx4D, layer):
        return lstm_cell(state, gates_Bx4D, self.w_rec[layer].kernel[...])

    def _output(self, state):
        return state[1]

    def _zero(self, batch, dtype):
        zeros_BxD = jnp.zeros((batch, self.width), dtype)
        return zeros_BxD, zeros_BxD


def gru_cell(h_BxD: jax.Array, gates_Bx3D: jax.Array, kernel_Dx3D: jax.Array, bias_3D: jax.Array) -> jax.Array:
    """One GRU time step (Cho et al. 2014, the "reset after" form of cuDNN, PyTorch and Keras 2):
    ``z, r = sigmoid(x_zr + h W_zr), n = tanh(x_n + r * (h W_n + b_n)), h' = (1 - z) * n + z * h``.

    ``gates_Bx3D`` is the input projection (with its bias) in (z, r, n) order; ``bias_3D`` the recurrent bias.
    """
    x_z, x_r, x_n = jnp.split(gates_Bx3D, 3, axis=-1)
    h_z, h_r, h_n = jnp.split(h_BxD @ kernel_Dx3D + bias_3D[None], 3, axis=-1)
    z_BxD = jax.nn.sigmoid(x_z + h_z)
    r_BxD = jax.nn.sigmoid(x_r + h_r)
    n_BxD = jnp.tanh(x_n + r_BxD * h_n)
    return (1.0 - z_BxD) * n_BxD + z_BxD * h_BxD


class CharGRU(RecurrentLM):
    """``RecurrentLM`` with GRU cells; the state of a layer is ``h_BxD``."""

    GATES = 3
    RECURRENT_BIAS = True

    def _cell(self, state, gates_Bx3D, layer):
        w_rec = self.w_rec[layer]
        return gru_cell(state, gates_Bx3D, w_rec.kernel[...], w_rec.bias[...])

    def _output(self, state):
        return state

    def _zero(self, batch, dtype):
        return jnp.zeros((batch, self.width), dtype)


class Block(nnx.Module):
    """Pre-LayerNorm transformer block: causal multi-head self-attention, then a GELU MLP."""

    def __init__(self, width: int, num_heads: int, dropout_rate: float, *, rngs):
        self.ln1 = nnx.LayerNorm(width, rngs=rngs)
        # No qkv bias: the key bias gets an exactly-zero gradient (softmax is shift-invariant), and Adam turns the
        # rounding noise in that zero into full-size updates that differ between 1 and 8 devices.
        self.qkv = nnx.Linear(width, 3 * width, use_bias=False, rngs=rngs)
        self.proj = nnx.Linear(width, width, rngs=rngs)
        self.ln2 = nnx.LayerNorm(width, rngs=rngs)
        self.fc = nnx.Linear(width, 4 * width, rngs=rngs)
        self.out = nnx.Linear(4 * width, width, rngs=rngs)
        self.num_heads = num_heads
        self.dropout_rate = dropout_rate

    def __call__(self, x_BxLxD: jax.Array, keys_B: jax.Array | None, salt: int) -> jax.Array:
        b, length, d = x_BxLxD.shape
        h = self.num_heads
        qkv_BxLx3HxDh = self.qkv(self.ln1(x_BxLxD)).reshape(b, length, 3 * h, d // h)
        q_BxLxHxDh, k_BxLxHxDh, v_BxLxHxDh = jnp.split(qkv_BxLx3HxDh, 3, axis=2)
        scores_BxHxLxL = jnp.einsum("bqhk,bthk->bhqt", q_BxLxHxDh, k_BxLxHxDh).astype(jnp.float32)
        scores_BxHxLxL = scores_BxHxLxL / jnp.sqrt(d // h)
        causal_LxL = jnp.tril(jnp.ones((length, length), jnp.bool_))
        scores_BxHxLxL = jnp.where(causal_LxL, scores_BxHxLxL, jnp.finfo(jnp.float32).min)
        attn_BxHxLxL = jax.nn.softmax(scores_BxHxLxL, axis=-1).astype(v_BxLxHxDh.dtype)
        y_BxLxD = jnp.einsum("bhqt,bthk->bqhk", attn_BxHxLxL, v_BxLxHxDh).reshape(b, length, d)
        x_BxLxD = x_BxLxD + dropout(self.proj(y_BxLxD), self.dropout_rate, keys_B, salt=2 * salt)
        y_BxLxD = self.out(jax.nn.gelu(self.fc(self.ln2(x_BxLxD))))
        return x_BxLxD + dropout(y_BxLxD, self.dropout_rate, keys_B, salt=2 * salt + 1)


class CharTransformer(nnx.Module):
    """GPT-2-style decoder: token + learned position embeddings, ``depth`` blocks, final LayerNorm, linear head."""

    def __init__(
        self,
        vocab_size: int,
        max_len: int,
        width: int,
        depth: int,
        num_heads: int,
        dropout_rate: float,
        *,
        rngs,
    ):
        self.tok = nnx.Embed(vocab_size, width, rngs=rngs)
        self.pos = nnx.Embed(max_len, width, rngs=rngs)
        self.blocks = nnx.List([Block(width, num_heads, dropout_rate, rngs=rngs) for _ in range(depth)])
        self.ln_f = nnx.LayerNorm(width, rngs=rngs)
        self.head = nnx.Linear(width, vocab_size, rngs=rngs)

    def __call__(
        self,
        inputs_BxL: jax.Array,
        keys_B: jax.Array | None = None,
        *,
        return_hidden: bool = False,
        ablate: Ablation = None,
    ):
        if inputs_BxL.shape[1] > self.pos.num_embeddings:  # an out-of-range position lookup would give NaN silently
            raise ValueError(
                f"the transformer takes at most {self.pos.num_embeddings} input tokens (data.seq_len), "
                f"got {inputs_BxL.shape[1]}."
            )
        x_BxLxD = self.tok(inputs_BxL) + self.pos(jnp.arange(inputs_BxL.shape[1]))[None]
        x_BxLxD = ablate_direction(x_BxLxD, 0, ablate)
        hidden = [x_BxLxD]
        for i, block in enumerate(self.blocks):
            x_BxLxD = ablate_direction(block(x_BxLxD, keys_B, salt=i), i + 1, ablate)
            hidden.append(x_BxLxD)
        logits_BxLxV = self.head(self.ln_f(x_BxLxD)).astype(jnp.float32)
        return (logits_BxLxV, hidden) if return_hidden else logits_BxLxV
