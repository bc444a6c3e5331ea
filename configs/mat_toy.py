"""MAT (issue 8 part 1) on the paper's interpretable toy, 3 seeds.

  python launch.py --config=configs/mat_toy.py --workdir=docs/results/classify --mode=all

n = 1000, d = 1800 (core, spurious x5, 1798 noise dims of std 0.5), 90% majority in train, 50% in test; bias-free
linear softmax, full-batch GD, lr 1e-2, 1000 steps each for ERM (with and without noise), XRM (two half-data models,
label flipping) and MAT (logit shift log p_ho, tau = 0.1). Expected: about 2 min on 2 shared CPU cores; ERM minority
test accuracy ~0.1, MAT > 0.9 (the paper's toy, our re-derivation: 0.108 -> 0.940), AUROC of d and 1 - p_ho for the
minority rows ~1.0, of m (forget events, full-batch) lower. ``:quick`` is a seconds-long smoke version (tests).
"""

import dataclasses

import ml_collections

from gdc.classify.config import MatConfig


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    cfg = MatConfig()
    if arg == "quick":
        cfg = dataclasses.replace(cfg, num_examples=100, dim=60, epochs=60, early_epochs=5)
    elif arg:
        raise ValueError(f"configs/mat_toy.py: unknown arg {arg!r}; use '' or 'quick'.")
    return ml_collections.ConfigDict({"seed": 0, "classify": {"part": "mat", **dataclasses.asdict(cfg)}})
