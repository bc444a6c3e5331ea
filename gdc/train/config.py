"""Typed run configuration: the ml_collections ConfigDict is converted here, once, into frozen dataclasses.

Library code receives these dataclasses (or plain keyword arguments), never the root ConfigDict. Every field is
validated before anything is loaded or compiled; a bad field raises ConfigError naming ``section.field`` and what is
allowed.
"""

import dataclasses
import os
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from gdc import config as parse
from gdc import jsonio
from gdc.checkpoint import CheckpointConfig
from gdc.data.sources import DataConfig
from gdc.errors import ConfigError
from gdc.logs import LogConfig
from gdc.models import ModelConfig
from gdc.tracker import TrackerConfig
from gdc.train.state import TrainConfig

R = TypeVar("R", bound="RunConfig")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """One training run: what to train on, the model, the optimizer and schedule, the tracker, checkpoints, logs.

    A study that drives runs extends it with its own section (``gdc/studies/carto/config.py::CartoConfig`` adds
    ``study``); ``from_mapping(..., cls=...)`` parses any such extension.
    """

    seed: int
    data: DataConfig
    model: ModelConfig
    train: TrainConfig
    tracker: TrackerConfig
    checkpoint: CheckpointConfig
    log: LogConfig

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def sections(cls: type[RunConfig] = RunConfig) -> dict[str, type]:
    """Section name -> its dataclass, for every section of ``cls`` (every field but ``seed``)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.name != "seed"}


SECTIONS = sections()


def from_mapping(config: Mapping[str, Any], *, device_count: int | None = None, cls: type[R] = RunConfig) -> R:
    """Builds and validates a ``cls`` (a RunConfig or an extension of it) from a ConfigDict (or nested dict).

    Args:
      config: top level ``seed`` plus the sections of ``sections(cls)``; omitted fields take their defaults.
      device_count: if given, ``train.batch_size`` must divide by it.
      cls: ``RunConfig`` or a dataclass extending it with sections of its own.
    """
    config = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    parts = sections(cls)
    known = ["seed", *parts]
    for name in config:
        if name not in known:
            raise ConfigError(f"{name} is not a known config section; allowed: {known}.")
    values = {name: parse.build(part, name, config.get(name, {}), strict_types=True) for name, part in parts.items()}
    cfg = cls(seed=parse.seed_of(config), **values)
    data_kind = {"synthetic": "classification", "tabular": "tabular"}.get(cfg.data.source, "lm")
    if cfg.model.kind != data_kind:
        raise ConfigError(
            f"model.name={cfg.model.name!r} is a {cfg.model.kind} model but data.source={cfg.data.source!r} gives "
            f"{data_kind} data; use model.name='mlp' with data.source='synthetic', 'ddpm'/'tabddpm' with "
            "'tabular', 'lstm'/'gru'/'transformer' otherwise."
        )
    if cfg.tracker.spans == "canary_secrets" and cfg.data.source != "pydoc_canaries":
        raise ConfigError(
            f"tracker.spans='canary_secrets' tracks the secret digits of inserted canaries, so it needs "
            f"data.source='pydoc_canaries' (got {cfg.data.source!r}); use tracker.spans='none'."
        )
    if cfg.tracker.spans == "top_k_drop":
        top_k_drop_checks(cfg, data_kind)
    if cfg.train.total_steps == 0 and cfg.tracker.early_epochs > cfg.train.num_epochs:
        raise ConfigError(
            f"tracker.early_epochs={cfg.tracker.early_epochs} > train.num_epochs={cfg.train.num_epochs}: difficulty "
            "averages the loss over the first early_epochs epochs, so it needs early_epochs <= num_epochs."
        )
    if device_count is not None:
        check_devices(cfg, device_count)
    return cfg


def top_k_drop_checks(cfg: RunConfig, data_kind: str) -> None:
    """``tracker.spans='top_k_drop'`` picks tokens of sequences, with every row on every process, after a warm-up."""
    if data_kind != "lm":
        raise ConfigError(
            f"tracker.spans='top_k_drop' tracks tokens of sequences, so it needs language-model data "
            f"(got data.source={cfg.data.source!r}); use tracker.spans='none'."
        )
    if cfg.data.shards != 1:
        raise ConfigError(
            f"tracker.spans='top_k_drop' picks its tokens from every training row, so it needs data.shards=1 "
            f"(got {cfg.data.shards})."
        )
    w = cfg.tracker.span_warmup
    if cfg.train.total_steps == 0 and w > cfg.train.num_epochs - 2:
        raise ConfigError(
            f"tracker.span_warmup={w} leaves no epoch to track in train.num_epochs={cfg.train.num_epochs}: the "
            f"tokens are chosen after epoch {w} and tracked from epoch {w + 1}; use span_warmup <= num_epochs - 2."
        )


def check_devices(cfg: RunConfig, device_count: int) -> None:
    if cfg.train.batch_size % device_count:
        raise ConfigError(
            f"train.batch_size={cfg.train.batch_size} does not divide by the {device_count} devices; pick a "
            f"multiple of {device_count} (e.g. {device_count * max(1, round(cfg.train.batch_size / device_count))})."
        )


def save(cfg: RunConfig, workdir: str) -> None:
    jsonio.write(os.path.join(workdir, "config.json"), cfg.to_dict(), indent=2, sort_keys=True)
