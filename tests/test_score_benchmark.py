"""gdc.studies.scores: config errors name the field, the quick benchmark end to end (every score row in report.md and
results.json), the report's ranking follows its pooled numbers, and tied canary copies share their halves."""

import dataclasses
import glob
import math
import os
import re

import numpy as np
import pytest

from configs import score_benchmark
from gdc import jsonio
from gdc.errors import ConfigError
from gdc.studies import FAMILIES, family_of
from gdc.studies.scores import config as scores_config
from gdc.studies.scores import interventions, report, study, truth
from gdc.train import setup

# The scores every quick run must report (AUM only for the classifier; span m / d on the canary copies only).
COMMON = {
    "m",
    "m_sweep",
    "upward_variation",
    "d",
    "final_loss",
    "low_final_loss",
    "el2n_early",
    "el2n_final",
    "grand",
    "trace_area",
    "trace_drop",
    "trace_drop_epoch",
    "trace_final_minus_min",
    "trace_variance",
    "random",
}
EXPECTED = {"lm": COMMON, "lm_span": COMMON | {"span_m", "span_d"}, "mlp": COMMON | {"aum"}}


def _quick(**overrides) -> dict:
    c = score_benchmark.get_config("quick").to_dict()
    c["scores"].update(overrides)
    return c


@pytest.mark.parametrize(
    "field, value",
    [
        ("models", 3),
        ("settings", ("lm", "cnn")),
        ("seeds", (0, 0)),
        ("eps_percentile", 100.0),
        ("lm_model", "rnn"),
        ("lm_repeats", 1),
        ("lm_canaries", 40),
        ("mlp_label_noise", 0.0),
        ("early_epoch", 99),
        ("grand_lm", 1),
        ("spans", "yes"),
        ("n_boot", 2),
        ("prune_fraction", 1.0),
        ("alpha", 1.5),
    ],
)
def test_config_errors_name_the_field(field, value):
    with pytest.raises(ConfigError, match=rf"scores\.{field}="):
        scores_config.from_mapping(_quick(**{field: value}))


def test_unknown_field_and_section_are_refused():
    with pytest.raises(ConfigError, match=r"scores\.lm_size is not a known field"):
        scores_config.from_mapping(_quick(lm_size=3))
    with pytest.raises(ConfigError, match="unknown section"):
        scores_config.from_mapping({**_quick(), "train": {}})


def test_family_is_registered():
    assert FAMILIES["scores"].MODES[:1] == ("all",) and "report" in FAMILIES["scores"].MODES
    assert family_of(score_benchmark.get_config("quick"))[0] == "scores"
    assert score_benchmark.get_config().scores.seeds == (0, 1, 2)


def test_tied_canary_copies_share_their_halves():
    in_KxN = np.random.default_rng(0).random((6, 10)) < 0.5
    meta = {"inserted": [{"ids": [1, 4, 7]}, {"ids": [2, 9]}]}
    tied = truth.tie_canary_copies(in_KxN, meta)
    for ids in ([1, 4, 7], [2, 9]):
        assert (tied[:, ids] == tied[:, ids[:1]]).all()
    untouched = [0, 3, 5, 6, 8]
    np.testing.assert_array_equal(tied[:, untouched], in_KxN[:, untouched])


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("scores"))
    cfg = scores_config.from_mapping(score_benchmark.get_config("quick"))
    res = study.run_study(cfg, workdir, "all", "python launch.py --config=configs/score_benchmark.py:quick")
    return cfg, workdir, res


def test_quick_benchmark_writes_every_score_row(quick_run):
    cfg, workdir, _ = quick_run
    for name in ("report.md", "results.json", "scatter_lm.png", "precision_mlp.png"):
        assert os.path.exists(os.path.join(workdir, name)), name
    res = jsonio.read(os.path.join(workdir, "results.json"))
    text = open(os.path.join(workdir, "report.md")).read()
    assert "configs/score_benchmark.py:quick" in text
    for table, names in EXPECTED.items():
        pooled = res["settings"][table]["pooled"]
        assert {r["name"] for r in pooled} == names, table
        assert all(r["seeds"] == len(cfg.seeds) for r in pooled)
        section = text.split(f"### `{table}`")[1].split("###")[0]
        for name in names:
            assert f"| `{name}` |" in section, (table, name)
    for seed in cfg.seeds:
        info = res["settings"]["mlp"]["runs"][cfg.seeds.index(seed)]
        assert info["score_sources"]["aum"].startswith("logits after each")
        assert info["train_seconds"] > 0
    truth = res["settings"]["lm"]["truth"][0]
    assert set(truth) == {"loss", "span"} and truth["loss"]["median_se"] > 0
    iv = res["interventions"]["settings"]
    assert set(iv) == set(cfg.settings)
    for setting, entry in iv.items():
        assert [r["arm"] for r in entry["rows"]] == list(interventions.ARMS)
        ranked = [r["name"] for r in res["settings"][setting]["pooled"] if r["name"] != "random"]
        assert entry["best"] == ranked[0]  # the top of the pooled leaderboard, the control excluded
        section = text.split(f"### `{setting}` (best score: `{entry['best']}`)")[1].split("###")[0]
        for arm in interventions.ARMS:
            assert f"| `{arm}` |" in section, (setting, arm)
        assert f"**Verdict (`{setting}`)**" in section
        memorization = "digit_acc_all" if setting == "lm" else "noisy_train_acc"
        assert all(np.isfinite(r["heldout_loss"]) and memorization in r for r in entry["rows"])


def _ranked_names(text: str, table: str) -> list[str]:
    section = text.split(f"### `{table}`")[1].split("Precision at the top k")[0]
    return re.findall(r"^\| \d+ \| `([a-z0-9_]+)` \|", section, flags=re.M)


def test_report_ranking_follows_its_numbers(quick_run):
    _, workdir, _ = quick_run
    res = jsonio.read(os.path.join(workdir, "results.json"))
    text = open(os.path.join(workdir, "report.md")).read()
    for table, entry in res["settings"].items():
        by_name = {r["name"]: r["spearman"] for r in entry["pooled"]}
        names = _ranked_names(text, table)
        assert names and set(names) == set(by_name)
        values = [by_name[n] for n in names]
        finite = [v for v in values if not math.isnan(v)]
        assert finite == sorted(finite, reverse=True)  # descending pooled Spearman
        assert all(math.isnan(v) for v in values[len(finite) :])  # NaN last
        if finite:
            best = entry["best"]["best"]
            assert best == names[0] and by_name[best] == max(finite)
            assert f"(`{table}`): `{best}`**" in text
            lo, hi = entry["best"]["lo"], entry["best"]["hi"]
            inside = {n for n, v in by_name.items() if n != best and not math.isnan(v) and lo <= v <= hi}
            assert set(entry["best"]["includes"]) == inside


def test_report_mode_rerenders_identically(quick_run):
    cfg, workdir, _ = quick_run
    before = open(os.path.join(workdir, "report.md")).read()
    report.write(cfg, workdir)
    assert open(os.path.join(workdir, "report.md")).read() == before


@pytest.mark.parametrize("setting", ["lm", "mlp"])
def test_pruned_arm_removes_the_top_fraction_by_the_chosen_score(quick_run, setting):
    cfg, workdir, _ = quick_run
    best = jsonio.read(os.path.join(workdir, "results.json"))["interventions"]["settings"][setting]["best"]
    for seed in cfg.seeds:
        out_dir = study.setting_dir(workdir, seed, setting)
        _, arrays = study.load_setting(out_dir)
        for arm, name in (("prune_best", best), ("prune_m", "m"), ("prune_d", "d")):
            score_N = arrays[f"score_{name}_N"]
            n = len(score_N)
            k = int(np.floor(cfg.prune_fraction * n + 0.5))
            keep = np.load(os.path.join(out_dir, "arms", arm, "keep_idx.npy"))
            removed = np.setdiff1d(np.arange(n), keep)
            reference = np.argsort(-score_N, kind="stable")[:k]
            assert len(removed) == k
            if score_N[reference[-1]] > np.max(np.delete(score_N, reference)):  # no tie at the cut: the same set
                np.testing.assert_array_equal(removed, np.sort(reference))
            assert score_N[removed].min() >= score_N[keep].max()
            # The retrain's data excludes them: the config's keep_idx, and its tracker never saw them.
            run_dir = os.path.join(out_dir, "arms", arm, "run")
            rc = study.run_config(cfg, setting, seed)
            train = dataclasses.replace(rc.train, keep_idx_path=os.path.join(out_dir, "arms", arm, "keep_idx.npy"))
            np.testing.assert_array_equal(setup.load_interventions(train, n)["keep_idx"], keep)
            with np.load(sorted(glob.glob(os.path.join(run_dir, "trackers", "epoch_*.npz")))[-1]) as z:
                seen_N = z["seen_N"]
            assert (seen_N[removed] == 0).all() and (seen_N[keep] > 0).all()
