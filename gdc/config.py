"""Config parsing, in one place: a ConfigDict section read into a frozen dataclass with a ``validate()`` method.

Every config in gdc is parsed here: the training run's sections (``gdc/train/config.py``) and each study family's
own section (``gdc/studies/<name>/config.py``, and ``gdc/theory/config.py``). Errors name the field and how to set it.
"""

import dataclasses
import numbers
import os
from collections.abc import Mapping
from typing import Any, NoReturn

from gdc.errors import ConfigError


def fail(section: str, field: str, value: object, allowed: str) -> NoReturn:
    raise ConfigError(f"{section}.{field}={value!r} {allowed} (set it with --config.{section}.{field}=...).")


def int_at_least(section: str, name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        fail(section, name, value, f"must be an integer >= {minimum}")


def seed_and_values(config: Mapping[str, Any], section: str) -> tuple[int, dict]:
    """(seed, the section's raw values) from a ConfigDict or dict holding only ``seed`` and ``section``."""
    config = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    extra = sorted(set(config) - {"seed", section})
    if extra:
        raise ConfigError(f"a {section} config holds only seed and {section}; unknown section(s) {extra}.")
    return seed_of(config), dict(config.get(section, {}))


def seed_of(config: Mapping[str, Any]) -> int:
    """The config's top-level ``seed`` (default 0); raises ConfigError unless it is an int."""
    seed = config.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ConfigError(f"seed={seed!r}: must be an int.")
    return seed


def build(cls: type, section: str, values: Mapping[str, Any], *, strict_types: bool = False, what: str = ""):
    """``cls(**values)``, validated: unknown fields fail; sequences become tuples where the default is a tuple (ints
    become floats where the default's elements are floats); ints become floats where the default is a float;
    with ``strict_types`` a bool/int/float/str field must have its default's type. ``what`` names the section in
    errors (default: the section)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = dict(values)
    for name, value in values.items():
        if name not in fields:
            raise ConfigError(f"{section}.{name} is not a known field; {what or section} allows {sorted(fields)}.")
        default = fields[name].default
        if isinstance(default, tuple):
            if isinstance(value, str) or not hasattr(value, "__iter__"):
                fail(section, name, value, "must be a tuple")
            to_float = bool(default) and isinstance(default[0], float)
            values[name] = tuple(
                float(v) if to_float and isinstance(v, int) and not isinstance(v, bool) else v for v in value
            )
        elif isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            values[name] = float(value)
        elif strict_types and isinstance(default, bool | int | float | str) and type(value) is not type(default):
            fail(section, name, value, f"must be a {type(default).__name__}")
    cfg = cls(**values)
    cfg.validate()
    return cfg


def check_workdir(workdir: str) -> None:
    """Creates ``workdir`` if needed; raises ConfigError (naming --workdir) if it cannot be written."""
    if not workdir:
        raise ConfigError("--workdir is empty: give a directory to write checkpoints and artefacts into.")
    try:
        os.makedirs(workdir, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--workdir={workdir!r} cannot be created ({e.strerror}); choose a writable path.") from e
    probe = os.path.join(workdir, f".write_probe_{os.getpid()}")
    try:  # os.access says yes to root even on read-only mounts: try a real write.
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as e:
        raise ConfigError(f"--workdir={workdir!r} is not writable ({e.strerror}); choose a writable path.") from e
