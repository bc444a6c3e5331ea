"""The default study, sized for a few minutes on 2 CPU cores: a character LSTM on CPython's pydoc topics with keyed
Carlini canaries, probe -> score -> intervene -> retrain -> evaluate -> report, one seed.

  python launch.py --config=configs/char_lm_canaries.py --workdir=runs/canaries --mode=all
  python launch.py --config=configs/char_lm_canaries.py --workdir=runs/canaries_probe   # the probe run alone

1500 training sequences of 64 characters, 10 canaries "the secret code of <key> is <6 digits>." inserted 8 times
each, a 1-layer 128-unit LSTM, Adam 1e-2 with a warmup-stable-decay schedule (canary_design.md: the decay phase is
when canaries get memorized), 16 epochs. The tracker uses the loss rule with hysteresis (learned below 1.0
nats/char, forgotten above 1.2); scoring re-derives m offline with the paper's single threshold at the median final
loss. Arms: prune the top 5% by m against a random 5%, and down-weight hotspots (alpha 0.5) against a random set of
the same size. The full experiments with 3 seeds and every control are configs/exp_a_lstm.py and
configs/exp_b_transformer.py.
Expected: about 5 minutes on 2 CPU cores; writes runs/canaries/report.md and its PNGs. Measured (seed 0): held-out
loss 2.04 nats/char; no canary is extracted greedily (exposure ~11 of 19.9 bits, canary-secret MIA AUC 0.98), so this
default shows the machinery, not the paper's effect.
"""

import ml_collections

from configs import common


def get_config(arg: str = "lstm") -> ml_collections.ConfigDict:
    if arg not in ("lstm", "transformer"):
        raise ValueError(f"configs/char_lm_canaries.py: unknown arg {arg!r}; use lstm or transformer.")
    c = common.base_config()
    common.update(
        c,
        data=common.CANARY_DATA,
        model=dict(name=arg, width=128, depth=1 if arg == "lstm" else 2, num_heads=4),
        train=dict(
            batch_size=128,
            num_epochs=16,
            optimizer="adam",
            learning_rate=1e-2 if arg == "lstm" else 3e-3,
            schedule="wsd",
            warmup_steps=20,
            decay_fraction=0.25,
            grad_clip=1.0,
        ),
        tracker=dict(criterion="loss", eps_low=1.0, eps_high=1.2, early_epochs=2),
        checkpoint=dict(every_steps=100, max_to_keep=2),
        log=dict(every_steps=20),
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
