"""The evaluator protocol and the padded per-example scoring pass that every evaluator shares.

An evaluator is a plain function ``EvalContext -> dict[str, float | np.ndarray]``: scalars for the headline
numbers, numpy arrays for per-example or per-canary values. Invariants:
  * ``per_example_stats`` scores every example of ``arrays`` exactly once, in id order, through fixed-size
    padded batches (``sequential_batches``), so the jitted function compiles once per (model, batch size) and
    never donates.
  * Losses are the training loss (``models.per_example_loss``): each example's mean NLL over its own valid
    tokens.
  * Nothing is fetched from the device until the pass ends.
"""

import dataclasses
import functools
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gdc import models, sharding
from gdc.data.pipeline import sequential_batches
from gdc.data.sources import Dataset

MODEL_INPUTS = ("tokens", "token_mask", "x", "y")


@dataclasses.dataclass(frozen=True)
class EvalContext:
    """Everything an evaluator may read.

    Attributes:
        graphdef: the model's static graph definition.
        params: the evaluated model's params (host or device arrays).
        mesh: a ``("data",)`` mesh; ``batch_size`` must divide by its size.
        dataset: the run's dataset (``.train``, ``.heldout``, ``.meta`` with the canaries).
        batch_size: rows per padded evaluation batch.
        reference_params: optional params of a reference model with the same graphdef, trained on data
            disjoint from both the members and the non-members the MIA evaluates (calibrated attack).
        seed: seeds anything random an evaluator does (control-canary placement, secret samples).
    """

    graphdef: nnx.GraphDef
    params: nnx.State
    mesh: jax.sharding.Mesh
    dataset: Dataset
    batch_size: int = 128
    reference_params: nnx.State | None = None
    seed: int = 0


Result = dict[str, float | np.ndarray]
Evaluator = Callable[[EvalContext], Result]


@functools.cache
def _stats_fn(graphdef: nnx.GraphDef) -> Callable:
    def stats(params, batch):
        loss_B, acc_B = models.per_example_loss(graphdef, params, batch)
        if "token_mask" in batch:
            tokens_B = batch["token_mask"].sum(axis=-1).astype(jnp.float32)
        else:
            tokens_B = jnp.ones_like(loss_B)
        return {"loss": loss_B, "accuracy": acc_B, "tokens": tokens_B}

    return jax.jit(stats)  # No donation: params are reused across batches and evaluators.


def place_params(params: nnx.State, mesh: jax.sharding.Mesh) -> nnx.State:
    """Params replicated over ``mesh`` (a no-op copy when they already are)."""
    return sharding.put_tree(params, sharding.replicated(mesh))


def check_batch_size(batch_size: int, mesh: jax.sharding.Mesh) -> None:
    if batch_size < 1 or batch_size % mesh.devices.size:
        raise ValueError(f"batch_size={batch_size} must be a positive multiple of the {mesh.devices.size} devices.")


def per_example_stats(
    ctx: EvalContext, arrays: Mapping[str, np.ndarray], params: nnx.State | None = None
) -> dict[str, np.ndarray]:
    """Scores every row of ``arrays`` exactly once at fixed params (no dropout).

    Args:
        ctx: the evaluation context (graphdef, mesh, batch size).
        arrays: model inputs with a common leading dimension N (``tokens`` [N, L+1] and ``token_mask``
            [N, L], or ``x`` and ``y``); other keys are ignored.
        params: params to score with; defaults to ``ctx.params`` (pass ``ctx.reference_params`` for the
            reference).

    Returns:
        ``loss`` f32 [N] (mean NLL over each example's valid tokens), ``accuracy`` f32 [N] and ``tokens`` f32
        [N] (valid tokens; 1 per classification example).
    """
    check_batch_size(ctx.batch_size, ctx.mesh)
    inputs = {k: np.asarray(v) for k, v in arrays.items() if k in MODEL_INPUTS}
    n = len(next(iter(inputs.values())))
    fn = _stats_fn(ctx.graphdef)
    params = place_params(ctx.params if params is None else params, ctx.mesh)
    parts = []
    with jax.set_mesh(ctx.mesh):
        for host_batch in sequential_batches(inputs, ctx.batch_size):
            batch = sharding.put_batch({k: v for k, v in host_batch.items() if k in MODEL_INPUTS}, ctx.mesh)
            parts.append(fn(params, batch))
    parts = jax.device_get(parts)
    return {k: np.concatenate([p[k] for p in parts])[:n] for k in ("loss", "accuracy", "tokens")}


def per_example_losses(
    ctx: EvalContext, arrays: Mapping[str, np.ndarray], params: nnx.State | None = None
) -> np.ndarray:
    """``loss_N`` f32: the per-example training loss of every row of ``arrays``, each scored exactly once."""
    return per_example_stats(ctx, arrays, params)["loss"]


def canary_meta(ctx: EvalContext) -> dict:
    """The dataset's canary metadata; raises ValueError for datasets without canaries."""
    meta = ctx.dataset.meta.get("canaries")
    if not meta:
        raise ValueError(
            f"dataset source {ctx.dataset.meta.get('source')!r} has no canaries; canary evaluators need "
            "data.source='pydoc_canaries'."
        )
    return meta
