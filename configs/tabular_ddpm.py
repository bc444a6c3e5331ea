"""Tabular diffusion study (issue 6): a DDPM on a mixed-type table, its memorization, scores and interventions.

  python launch.py --mode=all --config=configs/tabular_ddpm.py --workdir=docs/results/tabular

Synthetic table (6 numeric + 3 categorical columns + a binary label, planted duplicates and outliers), N = 200
training rows, 3 seeds, 300 epochs of batch 25 (2400 steps). Per seed: the probe DDPM trained by the engine
(fixed-draw scoring passes give d_i, m_i), 2N rows generated at 3 stops (Mem. Ratio vs epochs), runs at N = 50
and 100 (Mem. Ratio vs N), and retrains for TabCutMix, TabCutMixPlus, DynamicCut, GenDataCarto pruning by m_i and
by d_i, and random pruning; sharpness from jax.jacfwd of the score. Cosine learning-rate decay.
``:quick`` is a seconds-sized variant (tests). Expected: about 15-20 min on 2 CPU cores shared with other jobs;
see report.md there.
"""

import dataclasses

import ml_collections

from gdc.tabular.config import TabularConfig


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    cfg = TabularConfig()
    if arg == "quick":
        cfg = dataclasses.replace(
            cfg,
            seeds=(0,),
            num_rows=120,
            num_train=64,
            num_heldout=32,
            sizes=(32, 64),
            width=32,
            depth=2,
            diffusion_steps=10,
            score_draws=2,
            batch_size=32,
            epochs=6,
            stops=2,
            early_fraction=0.34,
            arms=("baseline", "tcm", "tcmp", "dynamic_cut", "gdc_prune_m", "gdc_downweight_d"),
        )
    elif arg:
        raise ValueError(f"configs/tabular_ddpm.py: unknown arg {arg!r}; use '' or 'quick'.")
    return ml_collections.ConfigDict({"seed": 0, "tabular": dataclasses.asdict(cfg)})
