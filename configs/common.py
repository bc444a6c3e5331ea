"""Shared defaults: a ConfigDict holding every field of every section, so any field can be overridden from the
command line (``--config.train.warmup_steps=10``) while ``lock_config`` still rejects unknown ones."""

import dataclasses

import ml_collections

from gdc.config import SECTIONS


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
