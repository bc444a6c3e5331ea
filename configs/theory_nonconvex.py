"""Theory checks beyond convexity (issue 5, claim 3): the small MLP and the character LSTM.

  python launch.py --mode=verify --config=configs/theory_nonconvex.py --workdir=docs/results

gdc.models' MLP (384 synthetic examples, 10% label noise) and CharLSTM (64 pydoc sequences of 24 characters, 50 epochs),
plain SGD with the engine's tracker; influence from the damped Gauss-Newton matrix by CG and LiSSA (and exactly for
the MLP), self-TracIn; LDS over 100 random half-subsets retrained in vmapped chunks; LOO over 39 retrains; the
divergence ratio at alpha = 0.5 and the gap with hotspots down-weighted. Run it after configs/theory_convex.py with
the same --workdir: verify.md then holds all three claims. ``:quick`` is a smoke version (tests use it).
Expected: about 3.5 minutes on 2 CPU cores shared with another job; dattri's MNIST-MLP references are LDS 0.26
(CG) and 0.45 (TRAK-50), LOO correlation 0.02.
"""

import dataclasses

import ml_collections

from gdc.theory.config import TheoryConfig


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    theory = TheoryConfig(claims=("nonconvex",))
    if arg == "quick":
        theory = dataclasses.replace(
            theory,
            nonconvex_models=("mlp",),
            mlp_examples=64,
            mlp_width=8,
            mlp_epochs=3,
            mlp_batch=16,
            eps_percentile=(50.0,),
            mlp_eps_absolute=(0.3,),
            influence_examples=(16, 8),
            lds_test=(4, 4),
            lds_subsets=10,
            loo_examples=9,
            cg_maxiter=(20, 10),
            lissa_depth=(20, 10),
            stability_examples=2,
            nonconvex_gap_seeds=2,
        )
    elif arg:
        raise ValueError(f"configs/theory_nonconvex.py: unknown arg {arg!r}; use '' or 'quick'.")
    return ml_collections.ConfigDict({"seed": 0, "theory": dataclasses.asdict(theory)})
