"""DeMem's de-memorization penalty inside adversarial training (issue 21), on scikit-learn digits, 3 seeds.

  python launch.py --config=configs/demem_robust.py --workdir=docs/results/classify --mode=all

Digits (pixels in [0, 1]) split into a 1000-row pool and a 797-row test set; per arm 16 MLPs (2 x 128), each on a
random half of the pool, 60 epochs of SGD (lr 0.2, batch 25), trained in one vmap. Arms: ERM, FGSM-AT, TRADES,
PGD-AT (L-infinity eps 0.1, 5 steps), and PGD-AT with the penalty 2 max(0, 1 - adversarial loss) on the GenDataCarto
hotspot rows of a PGD-AT probe (k rows), on the top-k rows by early adversarial loss, on k random rows, and on all
rows. Reports natural and PGD-20 robust test accuracy (eps 0.1 and 0.2), loss-MIA AUC and LiRA TPR at 1% FPR (clean
and adversarial inputs), with 95% t-intervals over seeds and paired differences against PGD-AT.
Expected: about 12 min on 2 heavily shared CPU cores (11.5 min measured); PGD-AT robust accuracy at eps 0.1 0.79
(ERM 0.50) with more leakage than ERM on PGD inputs (LiRA TPR@1%FPR 0.107 vs 0.063); the penalty on hotspot,
top-loss or random k rows lowers clean LiRA TPR@1%FPR 0.075 -> 0.061-0.064 (intervals include 0, no selective arm
beats random); TRADES 0.014. ``:quick`` is a smoke version (tests).
"""

import dataclasses

import ml_collections

from gdc.studies.classify.robust_config import RobustConfig


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    cfg = RobustConfig()
    if arg == "quick":
        cfg = dataclasses.replace(
            cfg,
            pool=80,
            width=16,
            depth=1,
            epochs=2,
            probe_epochs=4,
            early_epochs=1,
            batch_size=20,
            models=3,
            attack_steps=2,
            eval_steps=2,
            baselines=("erm",),
            penalty_sets=("hotspot", "all"),
        )
    elif arg:
        raise ValueError(f"configs/demem_robust.py: unknown arg {arg!r}; use '' or 'quick'.")
    return ml_collections.ConfigDict({"seed": 0, "classify": {"part": "demem_robust", **dataclasses.asdict(cfg)}})
