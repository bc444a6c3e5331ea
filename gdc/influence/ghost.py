"""Exact per-example gradient norms without per-example gradients ("ghost norms").

For a dense layer ``y = x W + b`` the gradient of one example's loss is ``X^T D`` (``X``: the example's ``[T, Din]``
inputs, ``D = dL/dy``: ``[T, Dout]``), so ``||dL/dW||^2 = sum_ts (X X^T)_ts (D D^T)_ts`` (``= ||x||^2 ||d||^2`` when
T = 1) and ``||dL/db||^2 = ||sum_t d_t||^2``: nothing of size ``Din x Dout`` per example is needed (Goodfellow 2015;
Li et al. 2022; Bu et al. 2023). ``D`` comes from one backward pass w.r.t. zero perturbations added to the layer
outputs, never w.r.t. the parameters.

How it plugs into NNX models: ``tap`` swaps the class of every ``nnx.Linear`` / ``nnx.Embed`` / ``nnx.LayerNorm``
node for a subclass that, while a tape is active, records the layer input and adds the next perturbation to the
output (with no tape it computes exactly what its parent does). The per-example loss then runs unchanged on the tapped
graph, vmapped over examples of a batch of one, so a layer applied to an unbatched input (a position embedding) still
gets each example's own output gradient. (flax's ``nnx.capture`` + ``Module.perturb`` need the module object the loss
runs on; our losses merge their own copy from ``(graphdef, params)``, hence a trace-time tape keyed by call order.)

Covered exactly in closed form: Linear (kernel and bias, any leading axes; Gram or direct form, whichever is
cheaper), Embed (``sum_ts [id_t = id_s] d_t . d_s``, or the ``[V, D]`` scatter when smaller), LayerNorm with flax's
default axes (its ``[D]`` scale/bias gradients are formed per example). A layer called several times per example
(shared weights) is handled: its calls are concatenated along T before the norm.
Fallback: parameters of modules never called through the tap (e.g. a kernel read directly inside a scan, like
``CharLSTM.w_rec``) get per-example gradients by vmap(grad) of just those parameters, so only ``[B, P_rest]`` exists.
Not detected (the caller's contract): a tapped module's parameter also read directly elsewhere (weight tying via
``Embed.attend``), or a tapped module called inside ``lax.scan``/``nnx.scan`` (that raises a leaked-tracer error).
``ghost_clipped_grad`` reuses the same pass for DP-SGD's clipped sum ("book-keeping": ``sum_i c_i X_i^T D_i``).
LayerNorm's normalised input is recomputed with flax's own (private) ``_compute_stats`` / ``_normalize``.
"""

import contextlib
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx
from flax.nnx.nn import normalization

from gdc.types import Batch

# loss_fn(graphdef, params, batch) -> loss_B, as gdc.models.per_example_loss(...)[0].
ModelLossFn = Callable[[nnx.GraphDef, nnx.State, Batch], jax.Array]

_TAPE: list = []  # the active tape (trace time only); a stack so nested calls cannot mix records


class _Tape:
    """Per-call records of one forward pass: ``(module, kind, input)``, outputs perturbed in call order."""

    def __init__(self, perturbations=None):
        self.perturbations = perturbations  # None: the shape pass, which records output shapes instead
        self.calls = []  # (module, kind, x)
        self.out_shapes = []

    def record(self, module, kind, x, y):
        self.calls.append((module, kind, x))
        if self.perturbations is None:
            self.out_shapes.append(jax.ShapeDtypeStruct(y.shape, y.dtype))
            return y
        return y + self.perturbations[len(self.calls) - 1]


@contextlib.contextmanager
def _active(tape):
    _TAPE.append(tape)
    try:
        yield tape
    finally:
        _TAPE.pop()


def _tap(module, kind, x, y):
    return _TAPE[-1].record(module, kind, x, y) if _TAPE else y


class _TapLinear(nnx.Linear):
    def __call__(self, inputs, out_sharding=None):
        return _tap(self, "dense", inputs, super().__call__(inputs, out_sharding=out_sharding))


class _TapEmbed(nnx.Embed):
    def __call__(self, inputs, out_sharding=None):
        return _tap(self, "embed", inputs, super().__call__(inputs, out_sharding=out_sharding))


class _TapLayerNorm(nnx.LayerNorm):
    def __call__(self, x, *, mask=None):
        if mask is not None or self.axis_name is not None or self.reduction_axes != -1 or self.feature_axes != -1:
            raise NotImplementedError("ghost norms cover nnx.LayerNorm with default axes, no mask, no axis_name only.")
        return _tap(self, "layernorm", x, super().__call__(x))


_TAPPED = {nnx.Linear: _TapLinear, nnx.Embed: _TapEmbed, nnx.LayerNorm: _TapLayerNorm}


def tap(graphdef: nnx.GraphDef, params: nnx.State) -> nnx.GraphDef:
    """The graph with Linear/Embed/LayerNorm nodes replaced by tapping subclasses (same parameters, same outputs)."""
    model = nnx.merge(graphdef, params)
    for path, module in nnx.iter_modules(model):
        if type(module) in _TAPPED:
            module.__class__ = _TAPPED[type(module)]
            module.ghost_path = tuple(path)  # static: kept in the graphdef, names the module's parameters
    return nnx.split(model, nnx.Param)[0]


def _wide(a: jax.Array) -> jax.Array:
    """At least f32 (bf16 activations are summed in f32; f64 stays f64)."""
    return a.astype(jnp.promote_types(a.dtype, jnp.float32))


def _dense_sq_norm(x_TxDi: jax.Array, d_TxDo: jax.Array) -> jax.Array:
    """``||X^T D||_F^2``: via the two T x T Gram matrices, or forming X^T D when Din * Dout <= T^2."""
    t, i = x_TxDi.shape
    if i * d_TxDo.shape[1] <= t * t:
        return jnp.sum((x_TxDi.T @ d_TxDo) ** 2)
    return jnp.sum((x_TxDi @ x_TxDi.T) * (d_TxDo @ d_TxDo.T))


def _embed_sq_norm(ids_T: jax.Array, d_TxD: jax.Array, num_embeddings: int) -> jax.Array:
    """``||sum_t onehot(id_t) d_t^T||_F^2``: via the T x T same-id Gram, or the [V, D] scatter when V <= T^2."""
    t = ids_T.shape[0]
    if num_embeddings <= t * t:
        return jnp.sum(jax.ops.segment_sum(d_TxD, ids_T, num_segments=num_embeddings) ** 2)
    return jnp.sum((ids_T[:, None] == ids_T[None, :]) * (d_TxD @ d_TxD.T))


def _rows(arrays: list, lead_shapes: list, feature: bool = True) -> jax.Array:
    """All calls' arrays as one ``[T, F]`` (or ``[T]``) block, leading axes broadcast to the output's."""
    tail = (lambda a: a.shape[-1:]) if feature else (lambda a: ())
    return jnp.concatenate(
        [jnp.broadcast_to(a, s + tail(a)).reshape((-1,) + tail(a)) for a, s in zip(arrays, lead_shapes, strict=True)]
    )


def _module_sq_norm(module, kind: str, xs: list, ds: list) -> jax.Array:
    """One module's per-example squared gradient norm from all its calls' inputs and output gradients."""
    leads = [d.shape[:-1] for d in ds]
    d_TxDo = _wide(_rows(ds, leads))
    if kind == "embed":
        return _embed_sq_norm(_rows(xs, leads, feature=False), d_TxDo, module.num_embeddings)
    bias = jnp.sum(jnp.sum(d_TxDo, axis=0) ** 2) if getattr(module, "bias", None) is not None else 0.0
    if kind == "dense":
        return _dense_sq_norm(_wide(_rows(xs, leads)), d_TxDo) + bias
    # layernorm: y = xhat * scale + bias, so the per-example scale gradient is sum_t xhat_t * d_t (a [D] vector).
    xhat_TxD = _wide(_rows([_layernorm_xhat(module, x) for x in xs], leads))
    scale = jnp.sum(jnp.sum(xhat_TxD * d_TxDo, axis=0) ** 2) if module.scale is not None else 0.0
    return scale + bias


def _module_clipped_grads(module, kind: str, xs: list, ds: list, c_N: jax.Array) -> dict:
    """``sum_i c_i dL_i/dtheta`` for one module's parameters, from all examples' inputs and output gradients."""
    leads = [d.shape[:-1] for d in ds]
    n = c_N.shape[0]

    def rows(arrays, feature=True):  # [N, T, F] (or [N, T]) over all calls; per-example axes broadcast after N
        out = []
        for a, lead in zip(arrays, leads, strict=True):
            target = lead + (a.shape[-1:] if feature else ())
            a = a.reshape((n,) + (1,) * (len(target) - a.ndim) + a.shape[1:])
            out.append(jnp.broadcast_to(a, target).reshape((n, -1) + target[len(lead) :]))
        return jnp.concatenate(out, axis=1)

    cd_NxTxDo = rows(ds) * c_N.astype(ds[0].dtype)[:, None, None]
    out = {}
    if getattr(module, "bias", None) is not None:
        out["bias"] = jnp.sum(cd_NxTxDo, axis=(0, 1))
    if kind == "dense":
        out["kernel"] = jnp.einsum("nti,nto->io", rows(xs), cd_NxTxDo)
    elif kind == "embed":
        ids = rows(xs, feature=False).reshape(-1)
        out["embedding"] = jax.ops.segment_sum(
            cd_NxTxDo.reshape(ids.shape[0], -1), ids, num_segments=module.num_embeddings
        )
    elif module.scale is not None:
        out["scale"] = jnp.einsum("ntd,ntd->d", rows([_layernorm_xhat(module, x) for x in xs]), cd_NxTxDo)
    return out


def _layernorm_xhat(module, x: jax.Array) -> jax.Array:
    """The LayerNorm's normalised input (before scale and bias), computed as flax computes it."""
    fast = module.use_fast_variance
    mean, var = normalization._compute_stats(x, -1, module.dtype, None, None, use_fast_variance=fast)
    return normalization._normalize(x, mean, var, None, None, -1, -1, module.dtype, module.epsilon)


def _split_covered(params: nnx.State, covered: set) -> tuple[nnx.State, nnx.State]:
    return nnx.split_state(params, lambda path, _: tuple(path) in covered, ...)


def _ghost_pass(loss_fn, graphdef, params, batch, batch_size, keep):
    """Per-example squared norms; with ``keep`` also every example's layer inputs, output gradients, rest gradients.

    Returns (sq_norms_N, calls, xs, ds, g_rest, p_cov): ``calls`` the static (module, kind) of each tapped call.
    """
    tapped = tap(graphdef, params)

    def loss_one(params, example, tape):
        with _active(tape):
            return loss_fn(tapped, params, jax.tree.map(lambda a: a[None], example))[0]

    # Shape pass (abstract): which modules are called, in which order, with which output shapes.
    shape_tape = _Tape()
    example0 = jax.tree.map(lambda a: a[0], batch)
    jax.eval_shape(lambda p, e: loss_one(p, e, shape_tape), params, example0)
    owners = {module.ghost_path for module, _, _ in shape_tape.calls}
    covered = {tuple(path) for path, _ in nnx.to_flat_state(params) if tuple(path[:-1]) in owners}
    p_cov, p_rest = _split_covered(params, covered)
    calls = [(module, kind) for module, kind, _ in shape_tape.calls]

    def one(example):
        zeros = [jnp.zeros(s.shape, s.dtype) for s in shape_tape.out_shapes]

        def f(perturbations, p_rest):
            tape = _Tape(perturbations)
            loss = loss_one(nnx.merge_state(p_cov, p_rest), example, tape)
            return loss, [x for _, _, x in tape.calls]

        (d_out, g_rest), xs = jax.grad(f, argnums=(0, 1), has_aux=True)(zeros, p_rest)
        total = sum(jnp.sum(_wide(g) ** 2) for g in jax.tree.leaves(g_rest)) + 0.0
        for module, kind, x_list, d_list in _groups(calls, xs, d_out):
            total = total + _module_sq_norm(module, kind, x_list, d_list)
        return (total, xs, d_out, g_rest) if keep else total

    n = jax.tree.leaves(batch)[0].shape[0]
    size = n if batch_size is None else max(1, min(batch_size, n))
    out = jax.lax.map(one, batch, batch_size=size)
    return (*out, calls, p_cov) if keep else out


def _groups(calls: list, xs: list, ds: list) -> list:
    """(module, kind, inputs, output gradients) per module, over all of its calls."""
    groups = {}
    for (module, kind), x, d in zip(calls, xs, ds, strict=True):
        entry = groups.setdefault(module.ghost_path, (module, kind, [], []))
        entry[2].append(x)
        entry[3].append(d)
    return list(groups.values())


@functools.partial(jax.jit, static_argnames=("loss_fn", "batch_size"))
def ghost_sq_norms(
    loss_fn: ModelLossFn, graphdef: nnx.GraphDef, params: nnx.State, batch: Batch, batch_size: int | None = None
) -> jax.Array:
    """``[N]`` squared norms ``||dL_i/dparams||^2``, equal to ``grads.grad_sq_norms`` without per-example gradients.

    Args:
      loss_fn: per-example loss ``(graphdef, params, batch) -> loss_B``; it is called with a tapped graphdef on
        batches of one example.
      graphdef, params: the model, as ``gdc.models.build`` returns it.
      batch: arrays with a leading example axis N.
      batch_size: examples per chunk of ``jax.lax.map`` (None: the whole batch in one vmap).
    """
    return _ghost_pass(loss_fn, graphdef, params, batch, batch_size, keep=False)


@functools.partial(jax.jit, static_argnames=("loss_fn", "batch_size", "two_pass"))
def ghost_clipped_grad(
    loss_fn: ModelLossFn,
    graphdef: nnx.GraphDef,
    params: nnx.State,
    batch: Batch,
    clip_norm: float,
    batch_size: int | None = None,
    two_pass: bool = False,
) -> tuple[nnx.State, jax.Array]:
    """DP-SGD's clipped sum ``sum_i g_i / max(1, ||g_i|| / clip_norm)`` and the norms ``||g_i||``.

    Same reduction as ``optax.per_example_global_norm_clip`` on per-example gradients, without forming them. The
    clip factors ``c_i`` come from the ghost norms; the sum is then ``sum_i c_i X_i^T D_i`` per dense layer from the
    inputs and output gradients the norm pass already holds ("book-keeping", Bu et al. 2023: one matmul per layer),
    or with ``two_pass`` one ordinary backward pass of ``sum_i c_i L_i`` (c held fixed).
    """
    if two_pass:
        norms_N = jnp.sqrt(_ghost_pass(loss_fn, graphdef, params, batch, batch_size, keep=False))
        c_N = 1.0 / jnp.maximum(norms_N / clip_norm, 1.0)
        return jax.grad(lambda p: jnp.sum(c_N * loss_fn(graphdef, p, batch)))(params), norms_N
    sq_N, xs, ds, g_rest, calls, p_cov = _ghost_pass(loss_fn, graphdef, params, batch, batch_size, keep=True)
    norms_N = jnp.sqrt(sq_N)
    c_N = 1.0 / jnp.maximum(norms_N / clip_norm, 1.0)
    by_path = {}
    for module, kind, x_list, d_list in _groups(calls, xs, ds):
        for name, g in _module_clipped_grads(module, kind, x_list, d_list, c_N).items():
            by_path[module.ghost_path + (name,)] = g
    cov = jax.tree_util.tree_map_with_path(lambda path, _: by_path[_key_path(path)], p_cov)
    rest = jax.tree.map(lambda g: jnp.einsum("n...,n->...", g, c_N.astype(g.dtype)), g_rest)
    return nnx.merge_state(cov, rest), norms_N


def _key_path(path) -> tuple:
    """A jax key path of a State leaf as the State's own path tuple (dict keys only; the Variable's .value dropped)."""
    return tuple(k.key for k in path if isinstance(k, jax.tree_util.DictKey))
