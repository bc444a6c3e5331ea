"""Run fingerprints: a workdir records the config fields that change its results, and a rerun must match them.

``<workdir>/fingerprint.json`` holds ``fields`` ("section.field" -> value), their ``hash`` and the ``accepted``
mismatches. Resuming with a config that differs in any recorded field (another split, optimizer, epoch count,
intervention file content) is refused, naming the fields, before anything is loaded or compiled; the ways out are a
new ``--workdir`` or ``--config.checkpoint.resume_mismatch=ok``, which resumes and records the change.

Fields that do not change results are left out, so changing them never refuses: logging and checkpoint cadence, and
the data path's execution settings (prefetch, on_device, steps_per_call, the tracker's sharding and deferral, tested
equivalent). A run's fingerprint leaves out the ``study`` section; a study's leaves out the fields that only extend
it (seeds, methods, fractions, random controls, evaluators, token-matched arms), since its stages add what is
missing. Workdirs trained before fingerprints existed are compared against their ``config.json``. With several
processes every process must hold the same fingerprint: otherwise every process refuses, naming the fields that differ.
"""

import hashlib
import json
import os
from typing import Any

import jax
import numpy as np

from gdc.errors import ConfigError
from gdc.train import config as config_lib

FILE = "fingerprint.json"
SAFE = (
    "log.",
    "checkpoint.",
    "data.prefetch",
    "data.on_device",
    "data.tfds_data_dir",
    "train.steps_per_call",
    "tracker.defer",
    "tracker.sharding",
)
STUDY_EXTENSIONS = tuple(
    f"study.{f}" for f in ("seeds", "methods", "prune_fractions", "random_controls", "evaluators", "token_matched")
)
ARTEFACT_PATHS = ("train.keep_idx_path", "train.weights_path", "train.multiplicity_path")
# Fields added after workdirs were recorded, with the value those workdirs ran with: a workdir recorded without one
# compares as if it held that value (its checkpoints hold one tracker, which a span run could not resume).
ADDED_FIELDS = {"tracker.spans": "none", "tracker.span_k": 8, "tracker.span_warmup": 1}


def fields(config: dict[str, Any], *, study: bool = False) -> dict[str, Any]:
    """The result-changing fields of ``config`` (a ``RunConfig.to_dict()``), flattened to "section.field"."""
    flat = {}
    for section, values in config.items():
        if isinstance(values, dict):
            flat.update({f"{section}.{k}": v for k, v in values.items()})
        else:
            flat[section] = values
    skip = SAFE + (STUDY_EXTENSIONS if study else ("study.",))
    out = {k: v for k, v in flat.items() if not any(k == s or (s.endswith(".") and k.startswith(s)) for s in skip)}
    for key in ARTEFACT_PATHS:  # the same path may hold another artefact: compare the contents too
        if out.get(key) and os.path.exists(out[key]):
            with open(out[key], "rb") as f:
                out[f"{key}:sha256"] = hashlib.sha256(f.read()).hexdigest()[:16]
    return json.loads(json.dumps(out, default=str))  # tuples as lists, as read back from JSON


def digest(values: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]


def recorded(workdir: str, *, study: bool = False) -> dict[str, Any] | None:
    """The recorded fields: fingerprint.json's, else a run's config.json's (workdirs trained before), else None."""
    path = os.path.join(workdir, FILE)
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)["fields"]
    legacy = os.path.join(workdir, "config.json")
    if not study and os.path.exists(legacy):
        with open(legacy) as f:
            return fields(json.load(f))
    return None


def _gather(hashes: list[str]) -> np.ndarray:
    """Every process's ``hashes`` (hex digests), one row per process."""
    from jax.experimental import multihost_utils

    local = np.stack([np.frombuffer(bytes.fromhex(x), np.uint8) for x in hashes])
    return np.asarray(multihost_utils.process_allgather(local)).reshape(jax.process_count(), len(hashes), -1)


def check_processes_agree(current: dict[str, Any], h: str) -> None:
    """Refuses (ConfigError, on every process alike) processes whose fingerprints differ, naming the fields."""
    every = _gather([h, digest(dict.fromkeys(current))])  # the values' hash and the field names'
    if (every == every[0]).all():
        return
    if (every[:, 1] == every[0, 1]).all():  # the same fields: compare them one by one
        keys = sorted(current)
        per_field = _gather([digest({k: current[k]}) for k in keys])
        keys = [k for i, k in enumerate(keys) if not (per_field[:, i] == per_field[0, i]).all()]
        values = ", ".join(f"{k}={current[k]!r}" for k in keys)
        differ = f"{', '.join(keys)} (process {jax.process_index()} has {values})"
    else:  # another set of fields (another gdc version, or an artefact file present on only some hosts)
        differ = f"their set of fields (process {jax.process_index()} has fingerprint {h})"
    raise ConfigError(
        f"the processes were given different configs: they differ in {differ}. Run the same command, with the "
        "same --config overrides, on every process."
    )


def check(cfg: config_lib.RunConfig, workdir: str, *, study: bool = False) -> None:
    """Refuses (ConfigError) a config whose result-changing fields differ from those recorded in ``workdir``;
    otherwise records them (process 0)."""
    current = fields(cfg.to_dict(), study=study)
    h = digest(current)
    if jax.process_count() > 1:
        check_processes_agree(current, h)
    before = recorded(workdir, study=study)
    if before is not None:
        before = {**ADDED_FIELDS, **before}
    diff = {} if before is None else {k: [before[k], current[k]] for k in before.keys() & current.keys()}
    diff = {k: v for k, v in sorted(diff.items()) if v[0] != v[1]}
    if diff and cfg.checkpoint.resume_mismatch != "ok":
        changes = "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in diff.items())
        raise ConfigError(
            f"--workdir={workdir!r} holds a {'study' if study else 'run'} made with another config ({changes}). "
            "Resuming would mix the two. Use a new --workdir, or pass --config.checkpoint.resume_mismatch=ok to "
            "resume with the new values (recorded in fingerprint.json)."
        )
    if jax.process_index() != 0:
        return
    path = os.path.join(workdir, FILE)
    accepted = []
    if os.path.exists(path):
        with open(path) as f:
            accepted = json.load(f).get("accepted", [])
    if diff:
        accepted.append({"changed": diff})
    os.makedirs(workdir, exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump({"hash": h, "fields": current, "accepted": accepted}, f, indent=2, sort_keys=True)
    os.replace(tmp, path)
