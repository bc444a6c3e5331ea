"""Shared defaults: a ConfigDict holding every field of every section, so any field can be overridden from the
command line (``--config.train.warmup_steps=10``) while ``lock_config`` still rejects unknown ones."""

import dataclasses

import ml_collections

from gdc.studies.carto.config import SECTIONS

# The canary corpus of the study configs: 1500 sequences of 64 characters from CPython's pydoc topics, 10 keyed
# canaries "the secret code of <key> is <6 digits>." inserted 8 times each, each copy at the start of its own row,
# 10 never-inserted controls.
CANARY_DATA = dict(
    source="pydoc_canaries",
    seq_len=64,
    heldout_fraction=0.1,
    max_examples=1500,
    num_canaries=10,
    canary_repeats=8,
    secret_digits=6,
    num_control_canaries=10,
    canary_placement="row_start",
)

# The canary experiments' training: batch 32, Adam with a warmup-stable-decay schedule (linear decay to 0 over the last
# 25% of steps: canaries are memorized while the learning rate decays), gradient clip 1.0. Configs set the epochs and
# the learning rate per model (transformer: 10 epochs at 3e-3; GRU and LSTM: 1e-2).
CANARY_TRAIN = dict(
    batch_size=32,
    optimizer="adam",
    schedule="wsd",
    warmup_steps=20,
    decay_fraction=0.25,
    grad_clip=1.0,
)
# The canary experiments' tracker, checkpoints and logging: the loss rule with hysteresis, one checkpoint kept.
CANARY_RUN = dict(
    tracker=dict(criterion="loss", eps_low=1.0, eps_high=1.2, early_epochs=2),
    checkpoint=dict(every_steps=0, max_to_keep=1),
    log=dict(every_steps=100, progress=True, tensorboard=False),
)
# The canary experiments' study: 3 seeds, 3 random controls per arm, m scored with a single threshold at the median
# final loss (the paper's eps is not published).
CANARY_STUDY = dict(seeds=(0, 1, 2), random_controls=3, eps=50.0, eps_kind="percentile", hysteresis=-1.0)


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    for name, cls in SECTIONS.items():
        c[name] = ml_collections.ConfigDict(dataclasses.asdict(cls()))
    return c


def update(c: ml_collections.ConfigDict, **sections: dict) -> ml_collections.ConfigDict:
    """Overrides fields section by section; a misspelt field raises (ConfigDict has no such key to update)."""
    for name, values in sections.items():
        for key, value in values.items():
            if key not in c[name]:
                raise KeyError(f"{name}.{key} is not a known field; known: {sorted(c[name].keys())}")
            c[name][key] = value
    return c
