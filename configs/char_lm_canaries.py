"""The default study, about 4 minutes on 2 CPU cores: a character GRU on CPython's pydoc topics with keyed
Carlini canaries, probe -> score -> intervene -> retrain -> evaluate -> report, one seed.

  python launch.py --config=configs/char_lm_canaries.py --workdir=runs/canaries --mode=all
  python launch.py --config=configs/char_lm_canaries.py:transformer --workdir=runs/canaries_tf --mode=all

1500 training sequences of 64 characters, 10 canaries "the secret code of <key> is <6 digits>." inserted 8 times
each, every copy at the start of its own row (where greedy decoding starts), a 1-layer 128-unit GRU, batch 32, Adam
1e-2 with a warmup-stable-decay schedule (canaries are memorized while the learning rate decays), 20 epochs. The
tracker uses the loss rule with hysteresis (learned below 1.0 nats/char, forgotten above 1.2); scoring re-derives m
offline with a single threshold at the median final loss. Arms: prune the top 5% by m against a random 5%, and
down-weight hotspots (alpha 0.5) against a random set of the same size. The full experiments with 3 seeds and every
control are configs/exp_a.py and configs/exp_b_transformer.py.
Expected: 3.5 minutes on 2 idle CPU cores (measured 2026-12-04: 3:34 wall, 5.7 CPU-minutes); writes
runs/canaries/report.md and its PNGs. The baseline extracts 9 of 10 canaries greedily, so the report's verdicts
compare arms that can lower extraction (measured: pruning the top 5% by m did not lower it, "contradicted"); with one
seed and one random control they cannot credit a drop to m (the permutation test needs several seeds and controls:
configs/exp_a.py).
"""

import ml_collections

from configs import common

MODELS = ("gru", "lstm", "transformer")


def get_config(arg: str = "gru") -> ml_collections.ConfigDict:
    if arg not in MODELS:
        raise ValueError(f"configs/char_lm_canaries.py: unknown arg {arg!r}; use one of {MODELS}.")
    c = common.base_config()
    common.update(
        c,
        data=common.CANARY_DATA,
        model=dict(name=arg, width=128, depth=2 if arg == "transformer" else 1, num_heads=4),
        train=dict(
            batch_size=32,
            num_epochs=10 if arg == "transformer" else 20,
            optimizer="adam",
            learning_rate=3e-3 if arg == "transformer" else 1e-2,
            schedule="wsd",
            warmup_steps=20,
            decay_fraction=0.25,
            grad_clip=1.0,
        ),
        tracker=dict(criterion="loss", eps_low=1.0, eps_high=1.2, early_epochs=2),
        checkpoint=dict(every_steps=200, max_to_keep=2),
        log=dict(every_steps=50),
        study=dict(
            seeds=(0,),
            methods=("prune_m", "prune_random", "downweight_hotspot", "downweight_random"),
            prune_fractions=(0.05,),
            random_controls=1,
            token_matched=False,
            eps=50.0,
            eps_kind="percentile",
        ),
    )
    return c
