"""ICL kinetics: IWL / ICL accuracy through training, K* for N in {4, 8, 16}, the slope of log K* on log N (issue 8
part 5; Nguyen & Reddy, ICLR 2025, predict 1/nu ~ 1.4).

  python launch.py --config=configs/icl_kinetics.py --workdir=runs/icl --mode=all
  cp runs/icl/{report.md,results.json,*.png} docs/results/icl/

3 seeds x 8 K values (8..1024) vmapped in one program per N; D = 32, LayerNorm -> 1 attention layer -> 3-layer MLP,
1000 Adam steps of batch 32. Runtime: 1.9 min of CPU, 10.6 min wall on the 2-core machine shared with ~5 other jobs
(load average 15-20). Expected: K* ~ 90 / 180 / 590 for N = 4 / 8 / 16, slope of log K* on log N 1.27
[0.95, 1.58] (pooled fit, 95%), the paper's 1/nu ~ 1.43 inside it. ``:quick`` is a seconds-long version the tests
run.
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
