"""Interventions on hand-built scores, and the whole study (--mode=all) end to end on configs/tiny.py."""

import dataclasses
import json
import os

import numpy as np
import pytest
from conftest import tiny_config

from gdc import interventions as iv
from gdc.errors import ConfigError
from gdc.studies.carto import claims, report, study, verdicts
from gdc.studies.carto.arms import StudyConfig, build_arms
from gdc.train import loop


def _scores(n=20):
    m = np.zeros(n)
    m[[3, 7, 11]] = [0.5, 0.25, 0.25]  # one clear top, then a tie of two
    quadrant = np.array([0, 1, 2, 3] * (n // 4))
    return {
        "m_N": m,
        "m_rank_N": m,
        "m_sweep_N": m[::-1].copy(),  # m averaged over the eps sweep (prune_m_sweep)
        "uv_N": np.arange(n, dtype=float),  # tie break: larger upward variation first
        "d_N": np.linspace(0, 1, n),
        "final_loss_N": np.linspace(1, 0, n),
        "quadrant_N": quadrant,
    }


def test_prune_top_breaks_ties_by_secondary_score():
    s = _scores()
    art = iv.prune_top(s["m_rank_N"], 0.1, "p", tie_break_N=s["uv_N"], seed=0)  # k = 2: 3, then 11 over 7
    np.testing.assert_array_equal(art.affected_ids, [3, 11])
    assert art.info["tie"]["tie_size"] == 2 and art.info["tie"]["resolved_by"] == "secondary"
    assert len(art.keep_idx) == 18 and 3 not in art.keep_idx


def test_weights_and_multiplicity():
    w = iv.downweight(np.array([1, 4]), 0.5, 6, "w")
    np.testing.assert_array_equal(w.weights_N, [1, 0.5, 1, 1, 0.5, 1])
    u = iv.upsample(np.array([0, 2]), 2.0, 4, "u")
    np.testing.assert_array_equal(u.multiplicity_N, [2, 1, 2, 1])
    half = iv.upsample(np.arange(1000), 1.5, 1000, "h", seed=3)
    assert set(np.unique(half.multiplicity_N)) == {1, 2} and abs(half.multiplicity_N.mean() - 1.5) < 0.05


def test_build_arms_controls_match_sizes():
    s = _scores()
    cfg = StudyConfig(prune_fractions=(0.1, 0.2), random_controls=2, alpha=0.25)
    arms = {a.name: (a, o) for a, o in build_arms(s, cfg, seed=0)}
    for frac, k in (("10", 2), ("20", 4)):
        for method in ("prune_m", "prune_m_sweep", "prune_upward", "prune_d", "prune_low_final_loss", "prune_random"):
            name = f"{method}@{frac}" + ("#0" if method == "prune_random" else "")
            assert len(arms[name][0].affected_ids) == k, name
            if method in ("prune_m", "prune_random"):
                assert arms[name + "+tm"][1] == {"token_matched": True}
            else:
                assert name + "+tm" not in arms
    # By hand: m_sweep_N puts 0.5 on id 16 and ties 8 and 12 (upward variation picks 12); uv_N is largest at 18, 19.
    np.testing.assert_array_equal(arms["prune_m_sweep@10"][0].affected_ids, [12, 16])
    np.testing.assert_array_equal(arms["prune_upward@10"][0].affected_ids, [18, 19])
    np.testing.assert_array_equal(arms["prune_m@10"][0].affected_ids, [3, 11])
    with pytest.raises(ConfigError, match="m_sweep_N"):
        build_arms({k: v for k, v in s.items() if k != "m_sweep_N"}, cfg, seed=0)
    hot = np.flatnonzero(s["quadrant_N"] == iv.HOTSPOT)
    np.testing.assert_array_equal(arms["downweight_hotspot"][0].affected_ids, hot)
    for r in range(2):
        rand = arms[f"downweight_random#{r}"][0]
        assert len(rand.affected_ids) == len(hot) and set(np.unique(rand.weights_N)) == {0.25, 1.0}
    assert set(arms["prune_random@10#0"][0].affected_ids) != set(arms["prune_random@10#1"][0].affected_ids)
    np.testing.assert_array_equal(arms["drop_noisy"][0].affected_ids, np.flatnonzero(s["quadrant_N"] == iv.NOISY))
    np.testing.assert_array_equal(
        np.flatnonzero(arms["upsample_hard"][0].multiplicity_N == 2), np.flatnonzero(s["quadrant_N"] == iv.HARD)
    )
    again = {a.name: a for a, _ in build_arms(s, cfg, seed=0)}
    np.testing.assert_array_equal(again["prune_random@10#1"].keep_idx, arms["prune_random@10#1"][0].keep_idx)


def test_wilson_interval():
    lo, hi = verdicts.wilson(0, 10)
    assert lo == pytest.approx(0.0, abs=1e-12) and hi == pytest.approx(0.2775, abs=1e-3)
    lo, hi = verdicts.wilson(5, 10)
    assert lo < 0.5 < hi and lo == pytest.approx(1 - hi)


def test_study_all_then_resume_without_recompute(tmp_path, monkeypatch):
    cfg = tiny_config("mlp")
    workdir = str(tmp_path)
    study.run(cfg, workdir, "all")
    sd = tmp_path / "seed_0"
    arms = json.load(open(sd / "arms" / "index.json"))
    assert {a["name"] for a in arms} >= {"prune_m@10", "prune_random@10#0", "prune_m@10+tm", "downweight_hotspot"}
    for arm in arms:
        summary = json.load(open(sd / "arms" / arm["name"] / "run" / "summary.json"))
        probe_steps = json.load(open(sd / "probe" / "summary.json"))["step"]
        if arm["token_matched"]:
            assert summary["step"] == probe_steps
        elif arm["name"].startswith("prune"):
            assert summary["step"] < probe_steps  # pruning removes steps
        assert (sd / "evals" / f"{arm['name']}.json").exists()
    pruned = np.setdiff1d(np.arange(168), np.load(sd / "arms" / "prune_m@10" / "keep_idx.npy"))
    assert len(pruned) == 17
    for name in ("report.md", "results.json", "data_map.png", "trajectories.png", "pruning.png", "eps_sweep.png"):
        assert (tmp_path / name).exists(), name
    results = json.load(open(tmp_path / "results.json"))
    assert "baseline" in results["table"] and "heldout_loss" not in results["table"]["baseline"]
    assert "training pass" in open(tmp_path / "report.md").read()

    # A rerun redoes nothing finished: no training and no evaluation may run.
    def forbidden(*a, **k):
        raise AssertionError("a finished stage was recomputed")

    monkeypatch.setattr(loop, "train", forbidden)
    monkeypatch.setattr("gdc.evaluation.evaluate", forbidden)
    study.run(cfg, workdir, "all")
    # Removing one evaluation redoes exactly that one.
    os.remove(sd / "evals" / "downweight_hotspot.json")
    calls = []
    monkeypatch.setattr("gdc.evaluation.evaluate", lambda ctx, names: calls.append(names) or {"heldout_loss": 1.0})
    study.run(cfg, workdir, "evaluate")
    assert len(calls) == 1

    # Extending the study (one more random control) trains and evaluates exactly the new arm.
    wider = dataclasses.replace(
        cfg, study=dataclasses.replace(cfg.study, random_controls=cfg.study.random_controls + 1)
    )
    new = {f"prune_random@10#{cfg.study.random_controls}", f"downweight_random#{cfg.study.random_controls}"}
    trained = []
    monkeypatch.setattr(
        loop, "train", lambda c, run_dir, **kw: trained.append(os.path.basename(os.path.dirname(run_dir)))
    )
    calls.clear()
    study.run(wider, workdir, "intervene")
    study.run(wider, workdir, "retrain")
    assert set(trained) == new
    assert {a["name"] for a in json.load(open(sd / "arms" / "index.json"))} >= new | {"prune_m@10"}
    # An arm whose artefact changed under an existing retrain fails instead of mixing two designs.
    np.save(sd / "arms" / "prune_m@10" / "keep_idx.npy", np.arange(5))
    with pytest.raises(ConfigError, match="prune_m@10"):
        study.run(cfg, workdir, "intervene")


def test_baseline_alone(tmp_path):
    """study.methods=(): intervene writes an empty index and evaluate scores the probe alone, with or without the
    index; with methods but no index, evaluate and retrain say to run intervene."""
    cfg = tiny_config("mlp", study=dict(methods=(), evaluators=("perplexity",)))
    workdir = str(tmp_path)
    for stage in ("train", "score", "intervene", "evaluate"):
        study.run(cfg, workdir, stage)
    sd = tmp_path / "seed_0"
    assert json.load(open(sd / "arms" / "index.json")) == []
    assert sorted(os.listdir(sd / "evals")) == ["baseline.json", "baseline.npz"]
    assert json.load(open(sd / "evals" / "baseline.json"))["heldout_loss"] > 0.0
    os.remove(sd / "arms" / "index.json")
    study.run(cfg, workdir, "evaluate")  # no methods: no index needed
    with_methods = dataclasses.replace(cfg, study=dataclasses.replace(cfg.study, methods=("prune_m",)))
    for stage in ("evaluate", "retrain"):
        with pytest.raises(FileNotFoundError, match="run --mode=intervene"):
            study.run(with_methods, workdir, stage)


@pytest.mark.slow  # ~16 s on 2 busy cores
def test_baseline_alone_with_in_context_canaries(tmp_path):
    """A canary study of the baseline alone with canaries at random offsets: the placement reaches dataset.json,
    extraction decodes one context per copy, and the probe logs its extraction after each epoch."""
    cfg = tiny_config(
        "lstm",
        data=dict(canary_placement="random_offset"),
        study=dict(methods=(), evaluators=("perplexity", "extraction")),
    )
    workdir = str(tmp_path)
    for stage in ("train", "score", "intervene", "evaluate"):
        study.run(cfg, workdir, stage)
    sd = tmp_path / "seed_0"
    assert json.load(open(sd / "arms" / "index.json")) == []
    assert sorted(os.listdir(sd / "evals")) == ["baseline.json", "baseline.npz"]
    dataset = json.load(open(sd / "probe" / "dataset.json"))
    assert dataset["canaries"]["placement"] == "random_offset"
    copies = sum(len(c["ids"]) for c in dataset["canaries"]["inserted"])
    rec = json.load(open(sd / "evals" / "baseline.json"))
    assert rec["inserted_num_canaries"] == 2 and rec["inserted_contexts"] == copies == 4  # one context per copy
    assert 0.0 <= rec["inserted_copy_extraction_rate"] <= 1.0 and rec["heldout_perplexity_token"] > 1.0
    assert [e for e, _ in report.extraction_by_epoch(workdir, [0])[0]] == [0, 1]  # the probe's per-epoch hook


def _rec(extracted: float, ppl: float, **extra) -> dict:
    return {
        "inserted_extracted_count": extracted,
        "inserted_num_canaries": 10.0,
        "heldout_perplexity_token": ppl,
        **extra,
    }


def _study_evals(base: float, arm: float, random: float, arm_ppl: float = 5.02, **arm_extra) -> dict:
    """3 seeds: a baseline, prune_m@5 and three prune_random@5 replicates extracting the given counts of 10."""
    seeds = (0, 1, 2)
    evals = {"baseline": {s: _rec(base, 5.0) for s in seeds}, "prune_m@5": {s: _rec(arm, arm_ppl) for s in seeds}}
    for s in seeds:
        evals["prune_m@5"][s].update({k: v[s] for k, v in arm_extra.items()})
    evals.update({f"prune_random@5#{r}": {s: _rec(random, 5.0) for s in seeds} for r in range(3)})
    return evals


def test_verdicts_from_hand_built_evals():
    # m extracts nothing, each random replicate all 10 canaries, in every seed: only the observed labelling of the
    # 4^3 within-seed relabellings is as low, p = 1/64.
    evals = _study_evals(base=10.0, arm=0.0, random=10.0)
    got = claims.verdicts(evals)
    assert set(got) == {"A5_greedy", "A5_perplexity"}  # no 10% arm, no digit counts, no down-weight arm
    a5 = got["A5_greedy"]
    assert a5["verdict"] == "reproduced"
    assert a5["vs_random"]["p_value"] == 1 / 64 and a5["vs_random"]["relabellings"] == 64
    assert a5["vs_random"]["statistic"] == -30.0 and a5["vs_random"]["seeds"] == [0, 1, 2]
    assert a5["baseline"]["rate"] == 1.0 and a5["claimed_rate"] == pytest.approx(0.4)
    assert (a5["arm"]["extracted"], a5["arm"]["total"]) == (0.0, 30.0)
    assert (a5["random"]["extracted"], a5["random"]["total"]) == (90.0, 90.0)  # the replicates pooled
    assert a5["arm"]["wilson95"] == pytest.approx([0.0, 1.96**2 / (30 + 1.96**2)])
    ppl = got["A5_perplexity"]
    assert ppl["verdict"] == "reproduced" and ppl["change"] == pytest.approx([0.004] * 3)
    # +1% in every seed: over the +0.5% limit, and the (degenerate) t interval excludes it.
    assert claims.verdicts(_study_evals(10.0, 0.0, 10.0, arm_ppl=5.05))["A5_perplexity"]["verdict"] == "contradicted"

    # m as good as random, 5 of 10 everywhere: the 40% level is missed but inside the Wilson interval of 15/30.
    got = claims.verdicts(_study_evals(base=10.0, arm=5.0, random=5.0))["A5_greedy"]
    assert got["verdict"] == "not reproduced" and got["vs_random"]["p_value"] == 1.0
    assert got["arm"]["wilson95"][0] < 0.4 < got["arm"]["wilson95"][1]
    # m keeps every canary: 30/30, whose interval lies above 40%.
    assert claims.verdicts(_study_evals(10.0, 10.0, 10.0))["A5_greedy"]["verdict"] == "contradicted"
    # A baseline extracting 2 of 10 cannot test a reduction.
    got = claims.verdicts(_study_evals(base=2.0, arm=0.0, random=2.0))["A5_greedy"]
    assert got["verdict"] == "not testable" and got["baseline"]["rate"] == pytest.approx(0.2)
    assert claims.verdicts({"prune_m@5": evals["prune_m@5"]}) == {}  # no baseline


def test_arm_tests_pair_each_scored_arm_with_its_random_control():
    exposure = {"inserted_exposure_mean": {0: 1.0, 1: 2.0, 2: 3.0}}
    evals = _study_evals(base=10.0, arm=4.0, random=6.0, **exposure)
    for s in (0, 1, 2):
        for r in range(3):
            evals[f"prune_random@5#{r}"][s]["inserted_exposure_mean"] = 4.0 + r  # above the arm's in every seed
    evals["prune_m@5+tm"] = evals["prune_m@5"]
    evals["prune_random@5#0+tm"] = evals["prune_random@5#0"]
    evals["downweight_hotspot"] = evals["prune_m@5"]
    evals.update({f"downweight_random#{r}": evals[f"prune_random@5#{r}"] for r in range(3)})
    evals["drop_noisy"] = evals["upsample_hard"] = evals["prune_m@10"] = evals["prune_m@5"]  # no random control
    got = claims.arm_tests(evals)
    assert set(got) == {"prune_m@5", "prune_m@5+tm", "downweight_hotspot"}
    assert got["prune_m@5"]["control"] == "prune_random@5"
    assert got["prune_m@5+tm"]["control"] == "prune_random@5+tm"
    assert got["downweight_hotspot"]["control"] == "downweight_random"
    ext = got["prune_m@5"]["inserted_extracted_count"]
    assert ext["control"] == [[6.0, 6.0, 6.0]] * 3 and ext["statistic"] == 3 * (4.0 - 6.0) and ext["p_value"] == 1 / 64
    exp = got["prune_m@5"]["inserted_exposure_mean"]
    assert exp["arm"] == [1.0, 2.0, 3.0] and exp["control"] == [[4.0, 5.0, 6.0]] * 3
    assert exp["statistic"] == pytest.approx((1 - 5) + (2 - 5) + (3 - 5)) and exp["p_value"] == 1 / 64
    # The one +tm replicate: 2 labels in each of 3 seeds.
    assert got["prune_m@5+tm"]["inserted_extracted_count"]["relabellings"] == 8
    assert got["prune_m@5+tm"]["inserted_extracted_count"]["p_value"] == 1 / 8


@pytest.mark.parametrize(
    "name,arg",
    [
        ("char_lm_canaries", "gru"),
        ("char_lm_canaries", "lstm"),
        ("char_lm_canaries", "transformer"),
        ("exp_a", "transformer"),
        ("exp_a", "gru"),
        ("exp_a", "lstm"),
        ("exp_b_transformer", ""),
    ],
)
def test_study_configs_validate_on_the_canary_protocol(name, arg):
    """The shipped study configs parse and validate (a bad field would fail here, not after minutes of training),
    and their canaries start their rows, where greedy decoding starts."""
    import importlib

    from gdc.studies.carto import config as carto_config

    cfg = carto_config.from_mapping(importlib.import_module(f"configs.{name}").get_config(arg), device_count=8)
    assert cfg.data.source == "pydoc_canaries" and cfg.data.canary_placement == "row_start"
    assert cfg.model.name == (arg or "transformer")
    assert cfg.train.batch_size % 8 == 0


def test_study_evaluators_are_validated():
    from gdc.errors import ConfigError
    from gdc.studies.carto.arms import StudyConfig

    StudyConfig(evaluators=("perplexity", "exposure_inserted")).validate()
    with pytest.raises(ConfigError, match="study.evaluators: 'bleu'"):
        StudyConfig(evaluators=("bleu",)).validate()
    with pytest.raises(ConfigError, match="keep one"):
        StudyConfig(evaluators=("exposure", "exposure_inserted")).validate()
