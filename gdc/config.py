"""Typed run configuration: the ml_collections ConfigDict is converted here, once, into frozen dataclasses.

Library code receives these dataclasses (or plain keyword arguments), never the root ConfigDict. Every field is
validated before anything is loaded or compiled; a bad field raises ConfigError naming ``section.field`` and what is
allowed.
"""

import dataclasses
import json
import os
from collections.abc import Mapping
from typing import Any

from gdc.checkpoint import CheckpointConfig
from gdc.data.sources import DataConfig
from gdc.errors import ConfigError
from gdc.interventions.arms import StudyConfig
from gdc.logs import LogConfig
from gdc.models import ModelConfig
from gdc.tracker import TrackerConfig
from gdc.train.state import TrainConfig

SECTIONS = {
    "data": DataConfig,
    "model": ModelConfig,
    "train": TrainConfig,
    "tracker": TrackerConfig,
    "checkpoint": CheckpointConfig,
    "log": LogConfig,
    "study": StudyConfig,
}


@dataclasses.dataclass(frozen=True)
class RunConfig:
    seed: int
    data: DataConfig
    model: ModelConfig
    train: TrainConfig
    tracker: TrackerConfig
    checkpoint: CheckpointConfig
    log: LogConfig
    study: StudyConfig

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _typed(cls, section: str, values: Mapping[str, Any]):
    allowed = [f.name for f in dataclasses.fields(cls)]
    for name in values:
        if name not in allowed:
            raise ConfigError(f"{section}.{name} is not a known field; {section} allows {allowed}.")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in values:
            continue
        v = values[f.name]
        want = type(f.default)
        if want is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if want in (int, float, str, bool) and not isinstance(v, want) or (want is int and isinstance(v, bool)):
            raise ConfigError(f"{section}.{f.name}={v!r} has type {type(v).__name__}; it must be a {want.__name__}.")
        kwargs[f.name] = v
    obj = cls(**kwargs)
    obj.validate()
    return obj


def from_mapping(config: Mapping[str, Any], *, device_count: int | None = None) -> RunConfig:
    """Builds and validates a RunConfig from a ConfigDict (or nested dict).

    Args:
      config: top level ``seed`` plus the sections of ``SECTIONS``; omitted fields take their defaults.
      device_count: if given, ``train.batch_size`` must divide by it.
    """
    config = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    known = ["seed", *SECTIONS]
    for name in config:
        if name == "theory":
            raise ConfigError("a theory config (section 'theory') runs with --mode=verify.")
        if name not in known:
            raise ConfigError(f"{name} is not a known config section; allowed: {known}.")
    seed = config.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ConfigError(f"seed={seed!r}: must be an int.")
    sections = {name: _typed(cls, name, config.get(name, {})) for name, cls in SECTIONS.items()}
    cfg = RunConfig(seed=seed, **sections)
    data_kind = {"synthetic": "classification", "tabular": "tabular"}.get(cfg.data.source, "lm")
    if cfg.model.kind != data_kind:
        raise ConfigError(
            f"model.name={cfg.model.name!r} is a {cfg.model.kind} model but data.source={cfg.data.source!r} gives "
            f"{data_kind} data; use model.name='mlp' with data.source='synthetic', 'ddpm' with 'tabular', "
            "'lstm'/'gru'/'transformer' otherwise."
        )
    if cfg.train.total_steps == 0 and cfg.tracker.early_epochs > cfg.train.num_epochs:
        raise ConfigError(
            f"tracker.early_epochs={cfg.tracker.early_epochs} > train.num_epochs={cfg.train.num_epochs}: difficulty "
            "averages the loss over the first early_epochs epochs, so it needs early_epochs <= num_epochs."
        )
    if device_count is not None:
        check_devices(cfg, device_count)
    return cfg


def check_devices(cfg: RunConfig, device_count: int) -> None:
    if cfg.train.batch_size % device_count:
        raise ConfigError(
            f"train.batch_size={cfg.train.batch_size} does not divide by the {device_count} devices; pick a "
            f"multiple of {device_count} (e.g. {device_count * max(1, round(cfg.train.batch_size / device_count))})."
        )


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


def save(cfg: RunConfig, workdir: str) -> None:
    with open(os.path.join(workdir, "config.json"), "w") as f:
        json.dump(cfg.to_dict(), f, indent=2, sort_keys=True)
