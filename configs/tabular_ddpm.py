"""Tabular diffusion study: a DDPM on three mixed-type tables, its memorization against the held-out floor, scores and
interventions.

  python launch.py --mode=all --config=configs/tabular_ddpm.py --workdir=runs/tabular

Tables (``tabular.datasets``): ``synthetic`` (6 numeric + 3 categorical columns in 3 correlated feature groups, a
binary label, planted duplicates and outliers), ``penguins`` (palmerpenguins 0.1.6) and ``cars`` (vega_datasets
0.9.0), both read from the pinned wheels. N = 200 training rows per table, held-out rows up to a quarter of the
table, 3 seeds, 300 epochs of batch 50 (1200 steps), cosine learning-rate decay. Per table and seed: the probe DDPM
trained by the engine (fixed-draw scoring passes give d_i, m_i), 2N rows generated at 6 stops (Mem. Ratio vs
epochs at the published per-query scaling and at a fixed scaling, each beside the held-out floor; DynamicCut's
per-row replica events at the first 5 stops), and retrains for TabCutMix, TabCutMixPlus, DynamicCut, GenDataCarto
pruning by d_i, random pruning and TabDDPM's hybrid model on the unchanged table (``other_model``); d_i, m_i and
sharpness (and its sweep) against the per-row replica counts. Scaled to the runtime rule: batch 50 instead of 25,
no Mem. Ratio vs N runs (``sizes``), no m_i-pruning or down-weighting arm (both in ``ARMS``).
``--config.tabular.model=multinomial`` makes the TabDDPM hybrid the probe model. ``:quick`` is a minute-sized variant
(tests). Runtime: 74 s of CPU per table and seed in a fresh workdir (a persistent compilation cache in the workdir
reuses the compiled steps), about 11 min for the 9 on 2 idle cores; on 2 cores shared at load ~20-30, run as 9
processes (one per table and seed), 30 min wall. Expected (docs/results/tabular/report.md): held-out floors 52.0 /
48.2 / 36.7 % (synthetic / penguins / cars); baseline Mem. Ratio 52.1 / 39.9 / 38.5 %, excess over the floor +0.1
/ -8.3 / +1.8 points per-query and -24.5 / -2.2 / -9.0 at the fixed scale; per-query flagged rows a median 80 /
0.83 / 1.78 training sds from their nearest training row; DynamicCut -29 % relative per-query on synthetic but
+10.8 points fixed-scale; TCM / TCMP intervals include 0; TCMP's clusters equal the planted groups.
"""

import dataclasses

import ml_collections

from gdc.studies.tabular.config import TabularConfig


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    cfg = dataclasses.replace(
        TabularConfig(),
        batch_size=50,
        score_draws=4,
        sizes=(200,),
        arms=("baseline", "tcm", "tcmp", "dynamic_cut", "gdc_prune_d", "random_prune", "other_model"),
    )
    if arg == "quick":
        cfg = dataclasses.replace(
            cfg,
            seeds=(0,),
            datasets=("synthetic", "penguins"),
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
            stops=3,
            early_fraction=0.34,
            arms=("baseline", "tcm", "tcmp", "dynamic_cut", "gdc_prune_m", "gdc_downweight_d", "other_model"),
            sharp_steps=(0, 1, 4),
            sharp_quantiles=(0.25, 0.5, 0.9),
        )
    elif arg:
        raise ValueError(f"configs/tabular_ddpm.py: unknown arg {arg!r}; use '' or 'quick'.")
    return ml_collections.ConfigDict({"seed": 0, "tabular": dataclasses.asdict(cfg)})
