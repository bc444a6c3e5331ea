"""Influence machinery on flat parameter vectors ``theta_P``: per-example gradients, HVPs, inverse HVPs, LOO.

Every function takes a per-example loss ``loss_fn(theta_P, batch) -> loss_B`` (normalised within each example, as
``gdc.losses``) and a ``batch`` dict of arrays with a leading example axis. Models with pytree parameters are
flattened with ``jax.flatten_util.ravel_pytree`` by the caller (``flatten``).

``grads``: per-example gradients reduced inside chunks (norms, dot products, self-influence, TracIn).
``ghost``: exact per-example gradient norms of NNX models from layer inputs and output gradients (no per-example
gradient formed), and DP-SGD's clipped sum from them in two passes.
``hvp``: Hessian- and Gauss-Newton-vector products, exact Hessians, CG and LiSSA inverse HVPs.
``loo``: L-BFGS fits and exact leave-one-out retraining for small convex models (ground truth).
"""

from gdc.influence.ghost import ghost_clipped_grad, ghost_sq_norms
from gdc.influence.grads import (
    flatten,
    grad_dots,
    grad_sq_norms,
    map_examples,
    per_example_grads,
    self_influence,
    tracin,
)
from gdc.influence.hvp import cg_solve, exact_hessian, gnhvp, hvp, lissa_solve, power_max_eig
from gdc.influence.loo import fit_lbfgs, lbfgs_solve, loo_retrain

__all__ = [
    "cg_solve",
    "exact_hessian",
    "fit_lbfgs",
    "flatten",
    "ghost_clipped_grad",
    "ghost_sq_norms",
    "gnhvp",
    "grad_dots",
    "grad_sq_norms",
    "hvp",
    "lissa_solve",
    "lbfgs_solve",
    "loo_retrain",
    "map_examples",
    "per_example_grads",
    "power_max_eig",
    "self_influence",
    "tracin",
]
