"""Character LSTM on CPython's pydoc topics with keyed Carlini canaries: the default study run.

  python launch.py --config=configs/char_lm_canaries.py --workdir=runs/canaries
  python launch.py --config=configs/char_lm_canaries.py:transformer --workdir=runs/canaries_tf

Setup (shared/research/canary_design.md): 64-character sequences, 10 canaries "the secret code of <key> is <6
digits>." inserted 8 times each, a 1-layer 128-unit LSTM, Adam at 1e-2 with a warmup-stable-decay schedule (the
decay phase is when the pilot's baseline memorized its canaries), 20 epochs. The tracker uses the loss rule with
hysteresis (learned below 1.0 nats/char, forgotten above 1.2); every epoch's losses are saved, so any threshold can
be re-scored offline.
Expected: about 2.5 minutes on 2 CPU cores; held-out loss about 1.30 nats/char after 20 epochs (seed 0).
"""

import ml_collections

from configs import common


def get_config(arg: str = "lstm") -> ml_collections.ConfigDict:
    if arg not in ("lstm", "transformer"):
        raise ValueError(f"configs/char_lm_canaries.py: unknown arg {arg!r}; use lstm or transformer.")
    c = common.base_config()
    common.update(
        c,
        data=dict(
            source="pydoc_canaries",
            seq_len=64,
            heldout_fraction=0.1,
            num_canaries=10,
            canary_repeats=8,
            secret_digits=6,
            num_control_canaries=10,
        ),
        model=dict(name=arg, width=128, depth=1 if arg == "lstm" else 2, num_heads=4),
        train=dict(
            batch_size=128,
            num_epochs=20,
            optimizer="adam",
            learning_rate=1e-2 if arg == "lstm" else 3e-3,
            schedule="wsd",
            warmup_steps=50,
            decay_fraction=0.25,
            grad_clip=1.0,
        ),
        tracker=dict(criterion="loss", eps_low=1.0, eps_high=1.2, early_epochs=2),
        checkpoint=dict(every_steps=200, max_to_keep=3),
        log=dict(every_steps=20),
    )
    return c
