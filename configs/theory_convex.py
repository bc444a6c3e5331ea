"""Theory checks on the convex models (paper.md §5, §11 items 7-10): claims 1 and 2 of issue 5.

  python launch.py --mode=verify --config=configs/theory_convex.py --workdir=docs/results

L2-regularised logistic and softmax regression (float64) on the noisy linear teacher of paper.md §9.2, n = 400,
trained by plain SGD with the engine's tracker. Claim 1: m against exact self-influence and exact LOO across an eps
sweep; claim 2: replace-one divergence against the weight, the Hardt-Recht-Singer bound, uniform vs on-average
stability and the generalization gap. ``:quick`` is a seconds-long smoke version (tests use it).
Expected: 75 s on 2 CPU cores shared with another job; influence vs LOO Pearson/Spearman > 0.99, divergence
ratio 0.50 at alpha = 0.5, and an m-influence Spearman whose sign flips with eps (paper.md §9.2).
"""

import dataclasses

import ml_collections

from gdc.theory.config import TheoryConfig


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    theory = TheoryConfig(claims=("lower_bound", "stability"))
    if arg == "quick":
        theory = dataclasses.replace(
            theory,
            models=("logistic",),
            num_train=64,
            num_test=200,
            num_features=5,
            epochs=6,
            eps_absolute=(0.3, 0.7),
            eps_percentile=(50.0,),
            alphas=(1.0, 0.5, 0.0),
            stability_examples=3,
            gap_seeds=3,
        )
    elif arg:
        raise ValueError(f"configs/theory_convex.py: unknown arg {arg!r}; use '' or 'quick'.")
    return ml_collections.ConfigDict({"seed": 0, "theory": dataclasses.asdict(theory)})
