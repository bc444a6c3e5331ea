"""ICL kinetics (Nguyen & Reddy, ICLR 2025): nu measured from IWL-only runs, K* against N over 5 context lengths
tested against K* ~ N^(1/nu), and transience of ICL under AdamW weight decay.

  python launch.py --config=configs/icl_kinetics.py --workdir=runs/icl --mode=all
  cp runs/icl/{report.md,results.json,*.png} docs/results/icl/

5 seeds; D = 32, LayerNorm -> 1 attention layer -> 3-layer MLP (width 64), Adam 1e-3, batch 32. K*: N in
{2, 4, 8, 16, 32} x K in {8, ..., 4096}, 1000 steps, one vmapped program per N. nu: IWL-only networks (the context
never holds the query's pair; N = 2), K in {32, ..., 1024}, 1500 steps, accuracy every 10 steps. Transience: N = 8,
K in {128, 256, 512}, 5000 steps, AdamW weight decay 1.0 against 0 (paired). Runtime: 6.5 min of CPU (user + sys),
18 min wall on the 2-core machine shared with other jobs (load average 12-27). Expected: nu = 0.92 [0.89, 0.95]
(95% t over seeds; the paper reports ~0.7), 1/nu = 1.08 [1.05, 1.12]; K* ~ 43 / 92 / 194 / 469 / 1210; slope of
log K* on log N 1.18 [1.01, 1.35], containing 1/nu, excluding the paper's 1.43 and 1 (only just); with weight decay
ICL peaks (0.86 / 0.95 at K = 256 / 512) and falls to chance (0.49 / 0.54) while the wd = 0 networks keep it.
``:quick`` is a seconds-long version the tests run.
"""

import dataclasses

import ml_collections

from gdc.studies.icl.config import ICLConfig


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    icl = ICLConfig()
    if arg == "quick":
        icl = dataclasses.replace(
            icl,
            num_seeds=2,
            dim=8,
            contexts=(2, 4),
            k_values=(4, 8, 16),
            width=16,
            batch_size=16,
            checkpoints=4,
            steps_per_checkpoint=10,
            eval_size=64,
            track_items=8,
            fast_compile=True,
            iwl_k_values=(4, 8, 16),
            iwl_checkpoints=4,
            iwl_steps_per_checkpoint=10,
            wd_context=2,
            wd_k_values=(8,),
            wd_num_seeds=2,
            wd_checkpoints=4,
            wd_steps_per_checkpoint=10,
        )
    elif arg:
        raise ValueError(f"configs/icl_kinetics.py: unknown arg {arg!r}; use '' or 'quick'.")
    return ml_collections.ConfigDict({"seed": 0, "icl": dataclasses.asdict(icl)})
