"""Tabular diffusion study (issue 6): a DDPM on a mixed-type table, its memorization, scores and interventions.

  python launch.py --mode=all --config=configs/tabular_ddpm.py --workdir=docs/results/tabular

Synthetic table (6 numeric + 3 categorical columns + a binary label, planted duplicates and outliers), N = 200
training rows, 3 seeds, 300 epochs of batch 25 (2400 steps). Per seed: the probe DDPM trained by the engine
(fixed-draw scoring passes give d_i, m_i), 2N rows generated at 3 stops (Mem. Ratio vs epochs), runs at N = 50
and 100 (Mem. Ratio vs N), and retrains for TabCutMix, TabCutMixPlus, DynamicCut, GenDataCarto pruning by m_i and
by d_i, and random pruning; sharpness from jax.jacfwd of the score. Cosine learning-rate decay.
``:quick`` is a minute-sized variant (tests). Runtime: 7 min of CPU; 24 min wall on 2 cores shared with other jobs
(load ~20). Expected (docs/results/tabular/report.md): Mem. Ratio 53 -> 66 % over epochs 100 -> 300 (fresh real rows:
49 %); 69 % of replicas are copies of the 6 planted outliers; TCM -15 % relative, DynamicCut -37 %, pruning by d_i
-29 %, by m_i +4 %; sharpness AUROC for replicas 0.30 (inverted).
"""

import dataclasses

import ml_collections

from gdc.studies.tabular.config import TabularConfig


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
            sharp_steps=(0, 1, 4),
            sharp_quantiles=(0.25, 0.5, 0.9),
        )
    elif arg:
        raise ValueError(f"configs/tabular_ddpm.py: unknown arg {arg!r}; use '' or 'quick'.")
    return ml_collections.ConfigDict({"seed": 0, "tabular": dataclasses.asdict(cfg)})
