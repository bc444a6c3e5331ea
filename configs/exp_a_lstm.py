"""Experiment A (paper §6.1): character LSTM with keyed canaries; prune the top 5% and 10% by m, with controls.

  python launch.py --config=configs/exp_a_lstm.py --workdir=runs/exp_a --mode=all

1500 training sequences of 64 characters from CPython's pydoc topics, 10 canaries "the secret code of <key> is
<6 digits>." inserted 8 times each (80 copies, 5.3% of the data), a 1-layer 128-unit LSTM, Adam 1e-2 with a
warmup-stable-decay schedule, 30 epochs (canary_design.md: the baseline must memorize before anything is pruned;
the 16-epoch default study does not reach greedy extraction).
Scores: in-step per-epoch losses; m with the paper's single threshold at the median final loss (percentile 50).
Arms per seed: prune by m / d / lowest final loss / random (2 subsets) at 5% and 10%,
token-matched variants of the m arm and the first random subset, plus the canary-free reference model for the
calibrated MIA.
Expected: 17 training runs per seed (probe, reference, 14 arms, ~55 s each on 2 otherwise idle CPU cores, about
16 minutes per seed; far longer on a shared machine); 3 seeds. Measured (docs/results/exp_a/report.md): no baseline
extracts a canary greedily (after the prefix it puts ~7% on any digit), exposure 17.7 of 19.9 bits, so the paper's
claim is "not testable" here; pruning by m does no better than random; pruning the top 10% by d lowers exposure most.
"""

import ml_collections

from configs import common


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    del arg
    c = common.base_config()
    common.update(
        c,
        data=common.CANARY_DATA,
        model=dict(name="lstm", width=128, depth=1),
        train=dict(
            batch_size=128,
            num_epochs=30,
            optimizer="adam",
            learning_rate=1e-2,
            schedule="wsd",
            warmup_steps=20,
            decay_fraction=0.25,
            grad_clip=1.0,
        ),
        tracker=dict(criterion="loss", eps_low=1.0, eps_high=1.2, early_epochs=2),
        checkpoint=dict(every_steps=0, max_to_keep=1),
        log=dict(every_steps=20, progress=False, tensorboard=False),
        study=dict(
            seeds=(0, 1, 2),
            methods=("prune_m", "prune_random", "prune_d", "prune_low_final_loss"),
            prune_fractions=(0.05, 0.10),
            random_controls=2,
            token_matched=True,
            eps=50.0,
            eps_kind="percentile",
            hysteresis=-1.0,
            evaluators=("perplexity", "extraction", "exposure", "mia"),
        ),
    )
    return c
