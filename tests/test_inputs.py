"""Bad inputs fail before anything compiles, with one clear error naming the field and the fix."""

import re
import subprocess
import sys

import jax
import numpy as np
import pytest
from absl import flags
from conftest import REPO, tiny_config
from ml_collections import config_flags

from gdc.errors import ConfigError
from gdc.train import config as config_lib
from gdc.train import loop
from gdc.train.state import TrainConfig

N = 10


def _no_jit(*a, **k):
    raise AssertionError("jax.jit was called before the config error")


@pytest.mark.parametrize(
    ("flag", "want"),
    [
        ("--config.train.foo=1", r"^--config.train.foo: the config has no field 'foo'; train allows \['batch_size', "),
        ("--config.train.lerning_rate=1", r"'lerning_rate'; train allows .*\]\. Did you mean 'learning_rate'\?$"),
        ("--config.trainer.x=1", r"no field 'trainer'; the config's top-level fields are \['seed', 'data'.*'train'\?$"),
        ("--config.foo=1", r"^--config.foo: the config has no field 'foo'; the config's top-level fields are"),
    ],
)
def test_unknown_override_fields_get_one_clear_error(flag, want):
    """A misspelt field and a made-up one get the same error (ml_collections alone raises from inside absl)."""
    import launch

    argv = ["launch.py", f"--config={REPO}/configs/tiny.py", flag]
    fv = flags.FlagValues()  # ml_collections' own parser, on a throwaway flag set
    config_flags.DEFINE_config_file("config", None, "", flag_values=fv, lock_config=True, sys_argv=argv)
    with pytest.raises((AttributeError, KeyError)) as e:
        fv(argv)
    assert re.search(want, launch.override_error(argv, e.value))
    assert launch.override_error(["launch.py", "--config.train.num_epochs=abc"], e.value) is None


def test_unknown_override_exits_with_status_2(tmp_path):
    cmd = [sys.executable, "launch.py", "--config=configs/tiny.py", f"--workdir={tmp_path}", "--config.train.foo=1"]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert "config error: --config.train.foo: the config has no field 'foo'; train allows" in out.stderr
    assert not (tmp_path / "checkpoints").exists()


def _interventions(tmp_path, **arrays) -> dict:
    paths = {}
    for field, arr in arrays.items():
        path = tmp_path / f"{field}.npy"
        np.save(path, arr)
        paths[field] = str(path)
    return loop.load_interventions(TrainConfig(**paths), N)


@pytest.mark.parametrize(
    ("field", "array", "message"),
    [
        ("keep_idx_path", np.array([0.0, 1.7, 3.2]), r"train\.keep_idx_path: ids must be stored as integers.*float64"),
        ("keep_idx_path", np.array(["0", "1"]), r"train\.keep_idx_path: ids must be stored as integers"),
        ("keep_idx_path", np.array([True, False] * 5), r"train\.keep_idx_path: ids must be stored as integers"),
        ("weights_path", np.array(["1"] * N), r"train\.weights_path: weights must be real numbers"),
        ("weights_path", np.zeros(N), r"train\.weights_path: every trained example has weight 0"),
        ("multiplicity_path", np.full(N, 1.0), r"train\.multiplicity_path: need 10 non-negative integers"),
        ("multiplicity_path", np.zeros(N, np.int64), r"train\.multiplicity_path: every trained example is visited 0"),
    ],
)
def test_intervention_files_are_checked(tmp_path, field, array, message):
    with pytest.raises(ConfigError, match=message):
        _interventions(tmp_path, **{field: array})


def test_zero_weight_on_every_kept_example_is_refused(tmp_path):
    weights = np.ones(N)
    weights[:3] = 0.0
    with pytest.raises(ConfigError, match="every trained example has weight 0"):
        _interventions(tmp_path, keep_idx_path=np.arange(3), weights_path=weights)
    got = _interventions(tmp_path, keep_idx_path=np.arange(4), weights_path=weights)
    np.testing.assert_array_equal(got["keep_idx"], np.arange(4))


def test_intervention_containers(tmp_path):
    np.savez(tmp_path / "named.npz", keep_idx=np.array([1, 2]), other=np.zeros(3))
    got = loop.load_interventions(TrainConfig(keep_idx_path=str(tmp_path / "named.npz")), N)
    np.testing.assert_array_equal(got["keep_idx"], [1, 2])
    np.savez(tmp_path / "unnamed.npz", np.array([1, 2]))
    with pytest.raises(ConfigError, match=r"train\.keep_idx_path=.*without an array named 'keep_idx'.*arr_0"):
        loop.load_interventions(TrainConfig(keep_idx_path=str(tmp_path / "unnamed.npz")), N)
    np.save(tmp_path / "objects.npy", np.array([1, "a"], dtype=object), allow_pickle=True)
    with pytest.raises(ConfigError, match=r"train\.weights_path=.*cannot be read"):
        loop.load_interventions(TrainConfig(weights_path=str(tmp_path / "objects.npy")), N)


@pytest.mark.parametrize("field", ["weights_path", "multiplicity_path"])
def test_all_zero_artefacts_fail_before_compile(tmp_path, monkeypatch, field):
    n = 168  # configs/tiny.py's mlp: 210 examples, 20% held out
    path = tmp_path / "zeros.npy"
    np.save(path, np.zeros(n, np.float32 if field == "weights_path" else np.int64))
    cfg = tiny_config("mlp", train={field: str(path)})
    monkeypatch.setattr(jax, "jit", _no_jit)
    with pytest.raises(ConfigError, match=f"train.{field}: every trained example"):
        loop.train(cfg, str(tmp_path / "w"))
    assert not (tmp_path / "w" / "checkpoints").exists()


def test_early_epochs_within_num_epochs():
    with pytest.raises(ConfigError, match=r"tracker\.early_epochs=4 > train\.num_epochs=3"):
        tiny_config("mlp", train=dict(num_epochs=3), tracker=dict(early_epochs=4))
    assert tiny_config("mlp", train=dict(num_epochs=3), tracker=dict(early_epochs=3)).tracker.early_epochs == 3
    # A fixed step count (token-matched retrains) decides the epochs itself: num_epochs is not compared.
    cfg = tiny_config("mlp", train=dict(num_epochs=1, total_steps=40), tracker=dict(early_epochs=2))
    assert isinstance(cfg, config_lib.RunConfig)


@pytest.mark.parametrize(
    "config, stage",
    [("icl_kinetics", "train"), ("unitmem_digits", "analyze"), ("lm_audit", "evaluate")],
)
def test_family_report_on_an_empty_workdir_names_the_mode_to_run(tmp_path, config, stage):
    """--mode=report computes nothing: with its inputs missing it stops with a StageInputError (launch's "missing
    input:", status 1) naming the missing file and the mode that makes it, not a traceback."""
    import importlib

    from gdc import studies
    from gdc.errors import StageInputError

    c = importlib.import_module(f"configs.{config}").get_config("quick")
    _, family = studies.family_of(c)
    with pytest.raises(StageInputError, match=rf"{re.escape(str(tmp_path))}.* is missing: run --mode={stage}"):
        family.run(c, str(tmp_path), mode="report")
