"""Experiment B (paper §6.2, scaled to CPU): GPT-2-style character transformer, 3 epochs, K = 4 fixed-parameter
scoring passes per epoch (so m is not limited to {0, 1/2, 1}); down-weight hotspots by alpha = 0.5, against random
down-weighting of an equal-size set.

  python launch.py --config=configs/exp_b_transformer.py --workdir=runs/exp_b --mode=all

Data as experiment A (1500 sequences, 10 canaries x 8). Exposure is left out: exact enumeration of 10^6 secrets
needs full forward passes of the transformer, about 2 minutes per canary on 2 CPU cores. 2 layers, width 128,
4 heads; Adam 3e-3 with warmup-stable-decay. Scores read the 12 scoring passes; m uses the single threshold at the
median final loss.
Expected: ~3 minutes per seed on 2 otherwise idle CPU cores. The report is docs/results/exp_b/report.md.
"""

import ml_collections

from configs import common


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    del arg
    c = common.base_config()
    common.update(
        c,
        data=common.CANARY_DATA,
        model=dict(name="transformer", width=128, depth=2, num_heads=4),
        train=dict(
            batch_size=128,
            num_epochs=3,
            optimizer="adam",
            learning_rate=3e-3,
            schedule="wsd",
            warmup_steps=10,
            decay_fraction=0.25,
            grad_clip=1.0,
        ),
        tracker=dict(criterion="loss", eps_low=2.0, eps_high=2.0, early_epochs=1, scoring_passes=4),
        checkpoint=dict(every_steps=0, max_to_keep=1),
        log=dict(every_steps=10, progress=False, tensorboard=False),
        study=dict(
            seeds=(0, 1, 2),
            methods=("downweight_hotspot", "downweight_random"),
            random_controls=2,
            alpha=0.5,
            token_matched=False,
            eps=50.0,
            eps_kind="percentile",
            hysteresis=-1.0,
            evaluators=("perplexity", "extraction", "mia"),
        ),
    )
    return c
