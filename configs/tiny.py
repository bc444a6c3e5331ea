"""Smoke config: seconds on 2 CPU cores. Tests import it; ``arg`` picks the model.

python launch.py --config=configs/tiny.py --workdir=/tmp/gdc_tiny            # MLP on synthetic blobs
python launch.py --config=configs/tiny.py:lstm --workdir=/tmp/gdc_tiny_lstm  # or :transformer
"""

import ml_collections

from configs import common


def get_config(arg: str = "mlp") -> ml_collections.ConfigDict:
    c = common.base_config()
    if arg == "mlp":
        common.update(
            c,
            data=dict(
                source="synthetic",
                num_examples=210,
                num_features=8,
                num_classes=3,
                heldout_fraction=0.2,
                label_noise=0.1,
            ),
            model=dict(name="mlp", width=16, depth=1),
            train=dict(batch_size=32, num_epochs=3, optimizer="adam", learning_rate=3e-2),
            tracker=dict(criterion="accuracy"),
        )
    elif arg in ("lstm", "transformer"):
        common.update(
            c,
            data=dict(source="pydoc_canaries", seq_len=48, max_examples=160, num_canaries=2, canary_repeats=2),
            model=dict(name=arg, width=32, depth=1, num_heads=4),
            train=dict(batch_size=32, num_epochs=2, optimizer="adam", learning_rate=1e-2),
            tracker=dict(criterion="loss", eps_low=3.4, eps_high=3.6),
        )
    else:
        raise ValueError(f"configs/tiny.py: unknown arg {arg!r}; use mlp, lstm or transformer.")
    common.update(
        c,
        checkpoint=dict(every_steps=0, max_to_keep=2),
        log=dict(every_steps=1, progress=False, tensorboard=False),
        # --mode=all in well under a minute: one seed, one pruning fraction, one random replicate.
        study=dict(
            seeds=(0,),
            prune_fractions=(0.1,),
            random_controls=1,
            methods=(
                "prune_m",
                "prune_random",
                "drop_noisy",
                "downweight_hotspot",
                "downweight_random",
                "upsample_hard",
            ),
            evaluators=("perplexity", "mia") if arg == "mlp" else ("perplexity", "extraction", "exposure", "mia"),
        ),
    )
    return c
