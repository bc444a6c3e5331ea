"""MAT (issue 8 part 1) on the paper's interpretable toy, 3 seeds.

  python launch.py --config=configs/mat_toy.py --workdir=docs/results/classify --mode=all

n = 1000, d = 1800 (core, spurious x5, 1798 noise dims of std 0.5), 90% majority in train, 50% in test; bias-free
linear softmax, full-batch GD, lr 1e-2, 1000 steps each for ERM (with and without noise), XRM (two half-data models,
label flipping) and MAT (logit shift log p_ho, tau = 0.1). Expected: about 3 min on 2 heavily shared CPU cores (1 min
of CPU); minority test accuracy ERM 0.127 ± 0.008 -> MAT 0.882 ± 0.019 at the final step, 0.913 ± 0.007 with
worst-group early stopping (our earlier numpy toy: 0.108 -> 0.940); AUROC for the minority rows: d and 1 - p_ho 1.000,
m (forget events, full-batch GD) 0.73. ``:quick`` is a seconds-long smoke version (tests).
"""

import dataclasses

import ml_collections

from gdc.studies.classify.config import MatConfig


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    cfg = MatConfig()
    if arg == "quick":
        cfg = dataclasses.replace(cfg, num_examples=100, dim=60, epochs=60, early_epochs=5)
    elif arg:
        raise ValueError(f"configs/mat_toy.py: unknown arg {arg!r}; use '' or 'quick'.")
    return ml_collections.ConfigDict({"seed": 0, "classify": {"part": "mat", **dataclasses.asdict(cfg)}})
