"""Counterfactual memorization (Feldman & Zhang 2020; Zhang et al. 2021): K models on random halves, one program.

``mem(i) = E[perf(f_S, i) | i in S] - E[perf(f_S, i) | i not in S]`` over training subsets S that hold each example
independently with probability 1/2, estimated from K models trained on such subsets. In this module K counts the
models of the ensemble (the papers' notation), not classes: ``in_KxN[k, i]`` says model k trained on example i.

Invariants:
  * Model k's parameters start from ``models.build(cfg, seed=seeds[k])`` and its randomness comes from
    ``key_k = fold_in(PRNGKey(seed), k)``: per epoch e a permutation of its own members drawn from
    ``fold_in(fold_in(key_k, 0), e)``, dropout keys from ``fold_in(key_k, 1)``, the update count and the example id.
    Non-members never enter its batches; changing their data leaves its parameters bit for bit unchanged.
  * Every model takes ``ceil(max_k |S_k| / B)`` steps per epoch, so all K run in one ``lax.scan``: a model's epoch is
    its members in random order, then padding rows (id N, mask False). A partly padded batch averages its real rows
    (``gdc.losses.weighted_mean``); an all-padding batch leaves parameters and optimizer state unchanged, so each
    model makes exactly ``ceil(|S_k| / B)`` updates per epoch and its schedule advances with its own updates.
  * ``train_ensemble`` vmaps over K (or over groups of ``vmap_size`` models, one group after another) the very function
    ``train_sequential`` jits for one model. Given a mesh, the K axis is split over its ``data`` axis by
    ``shard_map`` (each device trains its K / devices models, the data table replicated): the models never
    communicate, so the program has no collective.
  * Sign: ``estimate`` returns in minus out for a score where higher is better (accuracy), out minus in for one where
    lower is better (loss, ``lower_is_better=True``): larger always means more memorized.
"""

import functools
import math
import numbers
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.stats
from flax import nnx

from gdc import losses, models, sharding
from gdc.train.state import TrainConfig, make_optimizer

Data = Mapping[str, jax.Array | np.ndarray]  # model inputs with a leading N axis: x and y, or tokens and token_mask


class Ensemble(NamedTuple):
    params: nnx.State  # every leaf stacked on a leading K axis
    loss_KxE: np.ndarray  # mean training loss of each model's members over each epoch (pre-update, f32)


class Estimate(NamedTuple):
    mem_N: np.ndarray  # f64; NaN where no model had i in, or none had it out
    se_N: np.ndarray  # f64 Welch standard error; NaN where fewer than 2 models are on a side
    n_in_N: np.ndarray  # int: models that trained on i
    n_out_N: np.ndarray


def subset_masks(key_or_seed: int | jax.Array, k: int, n: int) -> np.ndarray:
    """in_KxN bool: example i in model k's subset independently with probability 1/2.

    An int seed draws from ``np.random.default_rng([seed, 17])``, a JAX key row r from ``fold_in(key, r)``. Either
    way the first k rows do not depend on how many more are drawn, so an ensemble can grow.
    """
    if isinstance(key_or_seed, numbers.Integral):
        return np.random.default_rng([int(key_or_seed), 17]).random((k, n)) < 0.5
    draw = jax.vmap(lambda r: jax.random.bernoulli(jax.random.fold_in(key_or_seed, r), 0.5, (n,)))
    return np.asarray(draw(jnp.arange(k)))


def init_ensemble(cfg: models.ModelConfig, seeds: Sequence[int], **shapes) -> tuple[nnx.GraphDef, nnx.State]:
    """``models.build(cfg, seed=s, **shapes)`` for each seed, the params stacked on a leading K axis."""
    built = [models.build(cfg, seed=int(s), **shapes) for s in seeds]
    return built[0][0], jax.tree.map(lambda *a: jnp.stack(a), *[p for _, p in built])


def model_keys(seed: int, k: int) -> jax.Array:
    """Raw uint32 ``[K, 2]`` keys, row k = ``fold_in(PRNGKey(seed), k)``."""
    return jax.vmap(jax.random.fold_in, (None, 0))(jax.random.PRNGKey(seed), jnp.arange(k))


def steps_per_epoch(in_KxN: np.ndarray, batch_size: int) -> int:
    return max(math.ceil(int(np.asarray(in_KxN).sum(axis=1).max()) / batch_size), 1)


def epoch_order(key: jax.Array, in_N: jax.Array, steps: int, batch_size: int) -> jax.Array:
    """idx_SxB int32: the members of ``in_N`` in a random order drawn from ``key``, then padding ids N."""
    n = in_N.shape[0]
    perm_N = jax.random.permutation(key, n)
    # A stable sort on "not a member" moves the members to the front, keeping their random order.
    order_N = perm_N[jnp.argsort(~in_N[perm_N], stable=True)].astype(jnp.int32)
    slots = steps * batch_size
    order = jnp.concatenate([order_N, jnp.full((max(slots - n, 0),), n, jnp.int32)])[:slots]
    return jnp.where(jnp.arange(slots) < in_N.sum(), order, n).reshape(steps, batch_size)


def _train_one(params, in_N, key, data, *, graphdef, cfg: TrainConfig, steps: int):
    """One model's training on its members; pure and traceable (vmapped over K by ``train_ensemble``)."""
    n, b, epochs = in_N.shape[0], cfg.batch_size, cfg.num_epochs
    tx, _ = make_optimizer(cfg, epochs * steps)
    order_key, drop_key = jax.random.fold_in(key, 0), jax.random.fold_in(key, 1)
    idx_ExSxB = jax.vmap(lambda e: epoch_order(jax.random.fold_in(order_key, e), in_N, steps, b))(jnp.arange(epochs))

    def step(carry, idx_B):
        params, opt_state, count = carry
        mask_B = idx_B < n
        batch = {name: a[jnp.minimum(idx_B, n - 1)] for name, a in data.items()}
        keys_B = jax.vmap(jax.random.fold_in, (None, 0))(jax.random.fold_in(drop_key, count), idx_B)

        def objective(p):
            loss_B, _ = models.per_example_loss(graphdef, p, batch, keys_B)
            return losses.weighted_mean(loss_B, mask_B), loss_B

        (_, loss_B), grads = jax.value_and_grad(objective, has_aux=True)(params)
        updates, new_opt_state = tx.update(grads, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        live = mask_B.any()  # an all-padding batch is no step at all
        params, opt_state = jax.tree.map(
            lambda new, old: jnp.where(live, new, old), (new_params, new_opt_state), (params, opt_state)
        )
        return (params, opt_state, count + live.astype(jnp.int32)), jnp.where(mask_B, loss_B, 0.0).sum()

    init = (params, tx.init(params), jnp.zeros((), jnp.int32))
    (params, _, _), loss_sum_T = jax.lax.scan(step, init, idx_ExSxB.reshape(epochs * steps, b))
    return params, loss_sum_T.reshape(epochs, steps).sum(axis=1) / jnp.maximum(in_N.sum(), 1)


@functools.partial(jax.jit, static_argnames=("graphdef", "cfg", "steps"))
def _single_program(params, in_N, key, data, *, graphdef, cfg, steps):
    return _train_one(params, in_N, key, data, graphdef=graphdef, cfg=cfg, steps=steps)


@functools.partial(jax.jit, static_argnames=("graphdef", "cfg", "steps", "vmap_size", "mesh"))
def _ensemble_program(params, in_KxN, keys, data, *, graphdef, cfg, steps, vmap_size, mesh):
    train = functools.partial(_train_one, graphdef=graphdef, cfg=cfg, steps=steps)

    def local(params, in_KxN, keys, data):  # this device's models
        k = in_KxN.shape[0]
        if vmap_size == 0 or vmap_size >= k:
            return jax.vmap(train, in_axes=(0, 0, 0, None))(params, in_KxN, keys, data)
        return jax.lax.map(lambda xs: train(*xs, data), (params, in_KxN, keys), batch_size=vmap_size)

    if mesh is None:
        return local(params, in_KxN, keys, data)
    split = jax.sharding.PartitionSpec(sharding.DATA)
    specs = (split, split, split, jax.sharding.PartitionSpec())
    # check_vma off: fresh counters in the scan carry are device-invariant, their updates device-varying; the
    # models share nothing, so there is no collective for the check to guard.
    shard = jax.shard_map(local, mesh=mesh, in_specs=specs, out_specs=(split, split), check_vma=False)
    return shard(params, in_KxN, keys, data)


def _check(cfg: TrainConfig, data: Data, in_KxN: np.ndarray, params_K: nnx.State) -> None:
    cfg.validate()
    unsupported = {"total_steps": 0, "keep_idx_path": "", "weights_path": "", "multiplicity_path": ""}
    for name, default in unsupported.items():
        if getattr(cfg, name) != default:
            raise ValueError(f"train.{name}={getattr(cfg, name)!r} is not supported by the ensemble trainer.")
    n = {v.shape[0] for v in data.values()}
    k = {leaf.shape[0] for leaf in jax.tree.leaves(params_K)}
    if len(n) != 1 or in_KxN.ndim != 2 or n != {in_KxN.shape[1]} or k != {in_KxN.shape[0]}:
        raise ValueError(f"data rows {n}, params' leading axes {k} and in_KxN {in_KxN.shape} must agree as [K, N].")


def _place(mesh, params_K, in_KxN, keys, data):
    """The K axis split over the mesh's devices (leading axis over ``data``), the data table on every device."""
    if mesh is None:
        return params_K, jnp.asarray(in_KxN), keys, jax.device_put(dict(data))
    if in_KxN.shape[0] % mesh.size:
        raise ValueError(f"K={in_KxN.shape[0]} models do not split evenly over {mesh.size} devices.")
    k_sharding = sharding.batch_sharding(mesh)
    return (
        sharding.put_tree(params_K, k_sharding),
        jax.device_put(jnp.asarray(in_KxN), k_sharding),
        jax.device_put(keys, k_sharding),
        jax.device_put(dict(data), sharding.replicated(mesh)),
    )


def train_ensemble(
    graphdef: nnx.GraphDef,
    params_K: nnx.State,
    data: Data,
    in_KxN: np.ndarray,
    cfg: TrainConfig,
    *,
    seed: int,
    mesh: jax.sharding.Mesh | None = None,
    vmap_size: int = 0,
) -> Ensemble:
    """Trains the K models of ``params_K``, model k on the examples of ``in_KxN[k]``, as one jitted vmapped scan.

    Args:
      graphdef, params_K: from ``init_ensemble`` (any ``models.build`` model).
      data: the training table, uploaded once; each step gathers each model's rows on the device.
      in_KxN: bool subsets (``subset_masks``).
      cfg: batch size, epochs and optimizer (``make_optimizer``); sample-shaping fields must be left at default.
      seed: the models' keys (``model_keys``).
      mesh: None runs on the default device; a ``gdc.sharding.make_mesh`` mesh splits the K models over its
        devices (K must divide by their count).
      vmap_size: models trained side by side in one vmap on each device, the device's groups of them one after
        another (``lax.map``); 0: all its models at once. On CPU the character models run faster in small groups
        (a K-fold working set misses the caches), and a mesh over several host devices
        (``--xla_force_host_platform_device_count``) puts the cores to work on different models at once
        (benchmarks/README.md, counterfactual ensembles).

    Returns:
      ``Ensemble(params, loss_KxE)``.
    """
    in_KxN = np.asarray(in_KxN, bool)
    _check(cfg, data, in_KxN, params_K)
    if vmap_size < 0:
        raise ValueError(f"vmap_size={vmap_size}: use 0 (all models at once) or a group size >= 1.")
    steps = steps_per_epoch(in_KxN, cfg.batch_size)
    placed = _place(mesh, params_K, in_KxN, model_keys(seed, in_KxN.shape[0]), data)
    params, loss_KxE = _ensemble_program(
        *placed, graphdef=graphdef, cfg=cfg, steps=steps, vmap_size=vmap_size, mesh=mesh
    )
    return Ensemble(params, np.asarray(loss_KxE))


def train_sequential(
    graphdef: nnx.GraphDef, params_K: nnx.State, data: Data, in_KxN: np.ndarray, cfg: TrainConfig, *, seed: int
) -> Ensemble:
    """``train_ensemble``'s K trainings as K calls of one jitted single-model program (the reference and baseline)."""
    in_KxN = np.asarray(in_KxN, bool)
    _check(cfg, data, in_KxN, params_K)
    steps = steps_per_epoch(in_KxN, cfg.batch_size)
    data = jax.device_put(dict(data))
    keys = model_keys(seed, in_KxN.shape[0])
    outs = []
    for k in range(in_KxN.shape[0]):
        params_k = jax.tree.map(lambda a, k=k: a[k], params_K)
        outs.append(
            _single_program(params_k, jnp.asarray(in_KxN[k]), keys[k], data, graphdef=graphdef, cfg=cfg, steps=steps)
        )
    params = jax.tree.map(lambda *a: jnp.stack(a), *[p for p, _ in outs])
    return Ensemble(params, np.stack([np.asarray(loss_E) for _, loss_E in outs]))


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _performance(params_K, chunks, *, graphdef):
    def one_model(params, batch):
        if "span_mask" not in batch:
            loss_B, acc_B = models.per_example_loss(graphdef, params, batch)
            return {"loss": loss_B, "acc": acc_B}
        logits_BxLxV = models.forward(graphdef, params, batch)
        targets_BxL = batch["tokens"][:, 1:]
        loss_B, acc_B = losses.sequence_nll(logits_BxLxV, targets_BxL, batch["token_mask"])
        span_BxL = (batch["span_mask"] & batch["token_mask"].astype(bool)).astype(jnp.float32)
        count_B = span_BxL.sum(axis=1)
        correct_BxL = (jnp.argmax(logits_BxLxV, axis=-1) == targets_BxL).astype(jnp.float32)
        nll_BxL = losses.token_nll(logits_BxLxV, targets_BxL)
        span_acc_B = jnp.where(count_B > 0, (correct_BxL * span_BxL).sum(1) / jnp.maximum(count_B, 1), jnp.nan)
        span_loss_B = jnp.where(count_B > 0, (nll_BxL * span_BxL).sum(1) / jnp.maximum(count_B, 1), jnp.nan)
        return {"loss": loss_B, "acc": acc_B, "span_acc": span_acc_B, "span_loss": span_loss_B}

    def one_chunk(batch):
        return jax.vmap(one_model, in_axes=(0, None))(params_K, batch)

    return jax.lax.map(one_chunk, chunks)  # each leaf [C, K, chunk]


def performance(
    graphdef: nnx.GraphDef,
    params_K: nnx.State,
    data: Data,
    *,
    span_mask_NxL: np.ndarray | None = None,
    batch_size: int = 64,
) -> dict[str, np.ndarray]:
    """Every model's teacher-forced performance on all N examples, ``batch_size`` examples per chunk.

    Returns:
      ``loss_KxN`` and ``acc_KxN`` (``models.per_example_loss``: the training loss and accuracy; f32); with a span
      mask over the targets ``tokens[:, 1:]`` also ``span_acc_KxN`` (argmax == target on the span's valid tokens) and
      ``span_loss_KxN`` (mean NLL there), NaN for an example whose span is empty.
    """
    data = {name: np.asarray(a) for name, a in data.items()}
    if span_mask_NxL is not None:
        data["span_mask"] = np.asarray(span_mask_NxL, bool)
    n = next(iter(data.values())).shape[0]
    c = max(math.ceil(n / batch_size), 1)
    pad = c * batch_size - n  # padding rows are scored and dropped
    chunks = {
        name: np.concatenate([a, np.zeros((pad, *a.shape[1:]), a.dtype)]).reshape(c, batch_size, *a.shape[1:])
        for name, a in data.items()
    }
    out = _performance(params_K, chunks, graphdef=graphdef)
    return {f"{name}_KxN": np.asarray(jnp.moveaxis(v, 1, 0).reshape(v.shape[1], -1)[:, :n]) for name, v in out.items()}


def canary_span_mask(canary_meta: dict, num_rows: int, length: int) -> np.ndarray:
    """``[N, L]`` bool over the targets ``tokens[:, 1:]``: the secret digits of every inserted canary copy.

    ``canary_meta`` is ``dataset.meta["canaries"]``; the j-th digit of a copy at byte ``offset`` of its row is token
    ``offset + len(prefix) + j``, i.e. target ``offset + len(prefix) + j - 1``.
    """
    mask_NxL = np.zeros((num_rows, length), bool)
    digits = canary_meta["secret_digits"]
    for canary in canary_meta["inserted"]:
        prefix_len = len(canary["prefix"].encode("utf-8"))
        for row, offset in zip(canary["ids"], canary["offsets"], strict=True):
            start = offset + prefix_len - 1
            mask_NxL[row, start : start + digits] = True
    return mask_NxL


def estimate(perf_KxN: np.ndarray, in_KxN: np.ndarray, *, lower_is_better: bool) -> Estimate:
    """Counterfactual memorization of every example and its standard error (module docstring for the sign).

    ``mem_N = mean_in - mean_out`` (negated when ``lower_is_better``); ``se_N = sqrt(var_in / n_in + var_out /
    n_out)`` with unbiased (ddof = 1) variances over the models on each side (Welch). A NaN performance (an empty
    span) makes that example's estimate NaN.
    """
    perf_KxN = np.asarray(perf_KxN, np.float64)
    in_KxN = np.asarray(in_KxN, bool)
    out_KxN = ~in_KxN
    stats = []
    for side_KxN in (in_KxN, out_KxN):
        count_N = side_KxN.sum(axis=0)
        mean_N = np.where(side_KxN, perf_KxN, 0.0).sum(axis=0) / np.maximum(count_N, 1)
        sq_N = np.where(side_KxN, (perf_KxN - mean_N) ** 2, 0.0).sum(axis=0)
        var_N = np.where(count_N >= 2, sq_N / np.maximum(count_N - 1, 1), np.nan)
        stats.append((count_N, np.where(count_N >= 1, mean_N, np.nan), var_N))
    (n_in, mean_in, var_in), (n_out, mean_out, var_out) = stats
    sign = -1.0 if lower_is_better else 1.0
    se_N = np.sqrt(var_in / np.maximum(n_in, 1) + var_out / np.maximum(n_out, 1))
    return Estimate(sign * (mean_in - mean_out), se_N, n_in, n_out)


def split_half_stability(
    perf_KxN: np.ndarray,
    in_KxN: np.ndarray,
    seed: int,
    *,
    lower_is_better: bool,
    sizes: Sequence[int] | None = None,
    repeats: int = 8,
) -> dict:
    """Spearman between ``mem`` estimated on two disjoint random sets of m models each, as a function of m.

    Each point is the mean over ``repeats`` random splits (``np.random.default_rng([seed, 19])``), over the examples
    finite in both halves. ``sizes`` defaults to m = 2, 4, 8, ... and K // 2.

    Returns:
      ``spearman`` (at m = K // 2: two halves of all K models), ``models`` (2m per point), ``curve`` and
      ``curve_std`` (mean and std of the Spearman over the splits), ``examples`` (mean count of finite examples) and
      ``spearman_brown`` (2 rho / (1 + rho): the reliability the split-half rho implies for an estimate from 2m
      models, Spearman-Brown's approximation).
    """
    perf_KxN = np.asarray(perf_KxN, np.float64)
    in_KxN = np.asarray(in_KxN, bool)
    half = perf_KxN.shape[0] // 2
    if half < 2:
        raise ValueError(f"split-half stability needs at least 4 models, got {perf_KxN.shape[0]}.")
    if sizes is None:
        sizes = {2**p for p in range(1, half.bit_length()) if 2**p < half} | {half}
    sizes = sorted(sizes)
    if min(sizes) < 2 or max(sizes) > half:
        raise ValueError(f"sizes {list(sizes)} must lie in [2, {half}] models per half.")
    rng = np.random.default_rng([seed, 19])
    curve, curve_std, examples = [], [], []
    for m in sizes:
        rhos, counts = [], []
        for _ in range(repeats):
            perm = rng.permutation(perf_KxN.shape[0])
            a, b = perm[:m], perm[m : 2 * m]
            mem_a = estimate(perf_KxN[a], in_KxN[a], lower_is_better=lower_is_better).mem_N
            mem_b = estimate(perf_KxN[b], in_KxN[b], lower_is_better=lower_is_better).mem_N
            ok = np.isfinite(mem_a) & np.isfinite(mem_b)
            counts.append(int(ok.sum()))
            rhos.append(scipy.stats.spearmanr(mem_a[ok], mem_b[ok]).statistic if ok.sum() >= 3 else np.nan)
        curve.append(float(np.mean(rhos)))
        curve_std.append(float(np.std(rhos)))
        examples.append(float(np.mean(counts)))
    rho = np.asarray(curve)
    return {
        "spearman": curve[-1] if sizes[-1] == half else float("nan"),
        "models": [2 * m for m in sizes],
        "curve": curve,
        "curve_std": curve_std,
        "examples": examples,
        "spearman_brown": (2 * rho / (1 + rho)).tolist(),
    }
