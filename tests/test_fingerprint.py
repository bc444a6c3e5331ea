"""gdc.train.fingerprint: a workdir refuses a rerun whose result-changing config differs, naming the fields."""

import dataclasses
import json

import jax
import numpy as np
import pytest
from conftest import tiny_config

from gdc import sharding
from gdc.errors import ConfigError
from gdc.train import config as config_lib
from gdc.train import fingerprint, loop


def _no_jit(*a, **k):
    raise AssertionError("jax.jit was called before the fingerprint check")


def _replace(cfg, **sections):
    return dataclasses.replace(cfg, **{k: dataclasses.replace(getattr(cfg, k), **v) for k, v in sections.items()})


def test_rerun_with_another_split_is_refused_before_compiling(tmp_path, monkeypatch):
    cfg = tiny_config("mlp")
    loop.train(cfg, str(tmp_path), mesh=sharding.make_mesh(), max_steps=2)
    other = _replace(cfg, data=dict(split_seed=5), train=dict(num_epochs=4))
    with monkeypatch.context() as m:
        m.setattr(jax, "jit", _no_jit)
        with pytest.raises(ConfigError) as e:
            loop.train(other, str(tmp_path))
    msg = str(e.value)
    assert "data.split_seed: 0 -> 5" in msg and "train.num_epochs: 3 -> 4" in msg
    assert "new --workdir" in msg and "--config.checkpoint.resume_mismatch=ok" in msg
    assert json.load(open(tmp_path / "config.json"))["data"]["split_seed"] == 0  # nothing rewritten

    # Settings that do not change results resume without a word; config.json then shows them.
    quiet = _replace(cfg, log=dict(every_steps=3), checkpoint=dict(max_to_keep=1))
    result = loop.train(quiet, str(tmp_path), mesh=sharding.make_mesh(), max_steps=3)
    assert int(result.state.step) == 3
    assert json.load(open(tmp_path / "config.json"))["log"]["every_steps"] == 3

    # The explicit override resumes and records what changed.
    longer = _replace(cfg, train=dict(num_epochs=4), checkpoint=dict(resume_mismatch="ok"))
    loop.train(longer, str(tmp_path), mesh=sharding.make_mesh(), max_steps=4)
    record = json.load(open(tmp_path / fingerprint.FILE))
    assert record["accepted"] == [{"changed": {"train.num_epochs": [3, 4]}}]
    assert record["fields"]["train.num_epochs"] == 4
    assert record["hash"] == fingerprint.digest(record["fields"])


def test_fields_leave_out_settings_that_do_not_change_results():
    got = fingerprint.fields(tiny_config("mlp").to_dict())
    for key in ("seed", "data.split_seed", "model.width", "train.optimizer", "train.learning_rate", "tracker.eps_low"):
        assert key in got, key
    for key in ("log.every_steps", "checkpoint.every_steps", "data.prefetch", "train.steps_per_call", "study.alpha"):
        assert key not in got, key
    study = fingerprint.fields(tiny_config("mlp").to_dict(), study=True)
    assert "study.alpha" in study and "study.eps" in study
    assert "study.seeds" not in study and "study.methods" not in study and "study.random_controls" not in study


def test_workdir_from_before_fingerprints_is_compared_with_its_config_json(tmp_path):
    cfg = tiny_config("mlp")
    config_lib.save(cfg, str(tmp_path))  # what a run wrote before fingerprint.json existed
    with pytest.raises(ConfigError, match=r"train\.optimizer: 'adam' -> 'sgd'"):
        fingerprint.check(_replace(cfg, train=dict(optimizer="sgd")), str(tmp_path))
    fingerprint.check(cfg, str(tmp_path))
    assert (tmp_path / fingerprint.FILE).exists()


def test_changed_intervention_file_at_the_same_path_is_refused(tmp_path):
    path = tmp_path / "keep.npy"
    np.save(path, np.arange(100))
    cfg = tiny_config("mlp", train=dict(keep_idx_path=str(path)))
    fingerprint.check(cfg, str(tmp_path / "w"))
    fingerprint.check(cfg, str(tmp_path / "w"))  # unchanged: fine
    np.save(path, np.arange(1, 101))
    with pytest.raises(ConfigError, match=r"train\.keep_idx_path:sha256"):
        fingerprint.check(cfg, str(tmp_path / "w"))


def test_study_refuses_a_relabelling_config_but_may_grow(tmp_path):
    cfg = tiny_config("mlp")
    fingerprint.check(cfg, str(tmp_path), study=True)
    with pytest.raises(ConfigError, match=r"holds a study made with another config .train\.optimizer: 'adam' -> 'sgd'"):
        fingerprint.check(_replace(cfg, train=dict(optimizer="sgd")), str(tmp_path), study=True)
    with pytest.raises(ConfigError, match=r"study\.alpha: 0\.5 -> 0\.25"):
        fingerprint.check(_replace(cfg, study=dict(alpha=0.25)), str(tmp_path), study=True)
    fingerprint.check(_replace(cfg, study=dict(random_controls=2, seeds=(0, 1))), str(tmp_path), study=True)
