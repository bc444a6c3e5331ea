"""Artefact integrity: stages refuse missing, unfinished, incomplete or stale inputs, naming the mode to run first."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import REPO, tiny_config

from gdc import scoring
from gdc.errors import StageInputError
from gdc.scoring import workdir as score_workdir
from gdc.studies.carto import study
from gdc.train import loop

CFG = dict(study=dict(methods=(), evaluators=("perplexity",)))


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """A study workdir whose seed-0 probe is trained (3 epochs) and scored."""
    workdir = str(tmp_path_factory.mktemp("scored") / "w")
    for stage in ("train", "score"):
        study.run(tiny_config(**CFG), workdir, stage)
    return workdir


def _copy(scored: str, tmp_path) -> tuple[str, str]:
    workdir = str(tmp_path / "w")
    shutil.copytree(scored, workdir)
    return workdir, os.path.join(workdir, "seed_0", "probe")


def test_score_refuses_an_unfinished_probe(tmp_path):
    workdir = str(tmp_path / "w")
    loop.train(tiny_config(**CFG), os.path.join(workdir, "seed_0", "probe"), max_steps=8)  # stopped in epoch 1
    with pytest.raises(StageInputError, match=r"probe has not finished training \(no summary.json\): run --mode=train"):
        study.run(tiny_config(**CFG), workdir, "score")
    assert not os.path.exists(os.path.join(workdir, "seed_0", "probe", "scores", "scores.npz"))


@pytest.mark.parametrize("epoch", [1, 2])
def test_score_refuses_missing_epoch_snapshots(scored, tmp_path, epoch):
    workdir, probe = _copy(scored, tmp_path)
    shutil.rmtree(os.path.join(probe, "scores"))
    os.remove(os.path.join(probe, "trackers", f"epoch_{epoch:04d}.npz"))
    with pytest.raises(StageInputError, match=rf"lacks epoch_XXXX.npz for epochs \[{epoch}\] of the 3 the run trained"):
        study.run(tiny_config(**CFG), workdir, "score")


def test_loss_matrix_refuses_a_gap(scored, tmp_path):
    _, probe = _copy(scored, tmp_path)
    os.remove(os.path.join(probe, "trackers", "epoch_0001.npz"))
    with pytest.raises(StageInputError, match=r"for epochs \[0, 2\] but none for epochs \[1\]"):
        scoring.load_loss_matrix(probe, "epoch")


def test_scores_are_recomputed_when_the_probe_changed_after_scoring(scored, tmp_path, monkeypatch):
    workdir, probe = _copy(scored, tmp_path)
    assert score_workdir.stale_scores(probe) is None  # a copy keeps names, sizes and mtimes
    calls = []
    real = scoring.compute_scores
    monkeypatch.setattr(scoring, "compute_scores", lambda *a, **k: calls.append(1) or real(*a, **k))
    study.run(tiny_config(**CFG), workdir, "score")
    assert calls == []  # fresh scores are kept
    path = os.path.join(probe, "trackers", "epoch_0002.npz")
    os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 10**9))  # rewritten after scoring
    assert "changed after" in score_workdir.stale_scores(probe)
    study.run(tiny_config(**CFG), workdir, "score")
    assert calls == [1] and score_workdir.stale_scores(probe) is None


def test_evaluations_are_redone_when_their_run_was_retrained_since(scored, tmp_path, monkeypatch):
    workdir, probe = _copy(scored, tmp_path)
    for stage in ("intervene", "evaluate"):
        study.run(tiny_config(**CFG), workdir, stage)
    calls = []
    monkeypatch.setattr("gdc.evaluation.evaluate", lambda ctx, names: calls.append(names) or {"heldout_loss": 1.0})
    study.run(tiny_config(**CFG), workdir, "evaluate")
    assert calls == []  # nothing changed: nothing redone
    path = os.path.join(probe, "summary.json")
    os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 10**9))  # the probe retrained
    study.run(tiny_config(**CFG), workdir, "evaluate")
    assert len(calls) == 1
    with open(os.path.join(workdir, "seed_0", "evals", "baseline.json")) as f:
        assert json.load(f)["heldout_loss"] == 1.0
    study.run(tiny_config(**CFG), workdir, "evaluate")
    assert len(calls) == 1


def test_rerunning_a_finished_run_keeps_its_summary(scored, tmp_path):
    _, probe = _copy(scored, tmp_path)
    with open(os.path.join(probe, "summary.json")) as f:
        before = json.load(f)
    assert before["loss"] > 0
    result = loop.train(tiny_config(**CFG), probe)
    with open(os.path.join(probe, "summary.json")) as f:
        assert json.load(f) == before
    assert result.last_metrics == {k: v for k, v in before.items() if k not in ("step", "epochs", "num_train")}


@pytest.mark.parametrize(
    "stage, first",
    [("score", "train"), ("intervene", "score"), ("retrain", "intervene"), ("evaluate", "train"), ("report", "train")],
)
def test_a_stage_on_an_empty_workdir_names_the_stage_to_run_first(tmp_path, stage, first):
    cfg = tiny_config()  # the default methods: retrain needs the arms' index
    with pytest.raises(StageInputError, match=rf"run --mode={first}"):
        study.run(cfg, str(tmp_path / "w"), stage)


def test_report_after_scoring_asks_for_evaluate(scored, tmp_path):
    workdir, _ = _copy(scored, tmp_path)
    study.run(tiny_config(**CFG), workdir, "intervene")
    with pytest.raises(StageInputError, match=r"evals/baseline.json is missing .*run --mode=evaluate first"):
        study.run(tiny_config(**CFG), workdir, "report")


def test_launch_exits_1_naming_the_missing_input(tmp_path):
    cmd = [sys.executable, "launch.py", "--config=configs/tiny.py", f"--workdir={tmp_path / 'w'}", "--mode=report"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "missing input: " in proc.stderr and "run --mode=train first" in proc.stderr
    assert "Traceback" not in proc.stderr
