"""Config parsing shared by the experiment families: a config holding ``seed`` and one section of its own, read
into a frozen dataclass with a ``validate()`` method. Errors name the field and how to set it."""

import dataclasses
import numbers
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
    seed = config.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ConfigError(f"seed={seed!r}: must be an int.")
    return seed, dict(config.get(section, {}))


def build(cls: type, section: str, values: Mapping[str, Any], *, strict_types: bool = False, what: str = ""):
    """``cls(**values)``, validated: unknown fields fail; sequences become tuples where the default is a tuple (ints
    become floats where the default's elements are floats); ints become floats where the default is a float;
    with ``strict_types`` a bool/int/str field must have its default's type. ``what`` names the section in errors
    (default: the section)."""
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
        elif strict_types and isinstance(default, bool | int | str) and type(value) is not type(default):
            fail(section, name, value, f"must be a {type(default).__name__}")
    cfg = cls(**values)
    cfg.validate()
    return cfg
