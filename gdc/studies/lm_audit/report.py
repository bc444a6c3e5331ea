"""Aggregates the seeds' eval.json into results.json, report.md and PNGs: mean, sd and 95% t-interval over seeds
(``_ms``), Wilson intervals for pooled proportions; the markdown is ``render``'s, the figures ``plots``'."""

import os

import numpy as np

from gdc import jsonio
from gdc.errors import StageInputError
from gdc.studies.lm_audit import hunt
from gdc.studies.lm_audit import metrics as M
from gdc.studies.lm_audit.config import AuditConfig
from gdc.studies.lm_audit.plots import plots
from gdc.studies.lm_audit.render import render

GAPS = ("lcs_chars", "lcs_row", "lcs_corpus", "lcs_words", "rouge_p", "rouge_f", "rouge_p_chars", "exact", "exact8")
TESTS = ("test_prefix", "test_inducer_tuned", "test_inducer_control")


def _stats(values, rate: bool = False) -> dict[str, float]:
    """Mean, sd and 95% t-interval over seeds (finite values only); ``rate`` clips the interval to [0, 1]."""
    v = list(values)
    t = M.t_interval(v)
    if rate and t["n"] > 1:
        t["lo"], t["hi"] = max(0.0, t["lo"]), min(1.0, t["hi"])
    arr = np.asarray([x for x in v if x is not None], np.float64)
    arr = arr[np.isfinite(arr)]
    t["sd"] = float(arr.std(ddof=1)) if arr.size > 1 else (0.0 if arr.size else float("nan"))
    return t


def _gap_block(seeds: list[dict], get, g_idx) -> dict:
    return {
        m: {
            "groups": [_stats(get(s)["groups"][g][m]["gap"] for s in seeds) for g in g_idx],
            "groups_ci_excludes_0": [sum(get(s)["groups"][g][m]["lo"] > 0 for s in seeds) for g in g_idx],
            "train_mean": [_stats(get(s)["groups"][g][m]["train_mean"] for s in seeds) for g in g_idx],
            "ordinary": _stats(get(s)["ordinary"][m]["gap"] for s in seeds),
            "control_mean": _stats(get(s)["control_mean"][m] for s in seeds),
        }
        for m in GAPS
    }


def _test(seeds: list[dict], key: str, g_idx) -> dict:
    sizes = seeds[0][key]["fpr"]["sizes"]
    out = {"sizes": sizes}
    for t in ("mannwhitney", "welch"):
        out[t] = {
            "groups": [
                [_stats((s[key]["power"][g][t][i] for s in seeds), rate=True) for i in range(len(sizes))] for g in g_idx
            ],
            "fpr": [_stats((s[key]["fpr"][t][i] for s in seeds), rate=True) for i in range(len(sizes))],
        }
    return out


def _inducer(cfg: AuditConfig, seeds: list[dict]) -> dict:
    out: dict = {"pretrain_loss": [s["inducer"]["pretrain_loss"] for s in seeds]}
    names = list(seeds[0]["inducer"]["tuned"]["extracted"])
    for arm in hunt.ARMS:
        runs = [s["inducer"][arm] for s in seeds]
        rounds = len(runs[0]["history"])
        arm_out = {
            "accept_rate": [_stats((r["history"][i]["accept_rate"] for r in runs), rate=True) for i in range(rounds)],
            "reward_mean": [_stats(r["history"][i]["reward_mean"] for r in runs) for i in range(rounds)],
            "eval_reward_mean": _stats(r["eval_reward_mean"] for r in runs),
            "distinct_prompts": [r["distinct_prompts"] for r in runs],
            "best": [r["best"] for r in runs],
            "extracted": {},
        }
        for name in names:
            k = sum(r["extracted"][name] for r in runs)
            n = sum(r["num_rows"][name] for r in runs)
            lo, hi = M.wilson(k, n)
            arm_out["extracted"][name] = {
                "k": k,
                "n": n,
                "rate": k / n if n else float("nan"),
                "lo": lo,
                "hi": hi,
                "per_seed": [r["extracted"][name] for r in runs],
            }
        out[arm] = arm_out
    out["accept_last_tuned_minus_control"] = _stats(
        s["inducer"]["tuned"]["history"][-1]["accept_rate"] - s["inducer"]["control"]["history"][-1]["accept_rate"]
        for s in seeds
    )
    out["tuned_minus_control"] = {
        name: _stats(
            (s["inducer"]["tuned"]["extracted"][name] - s["inducer"]["control"]["extracted"][name])
            / s["inducer"]["tuned"]["num_rows"][name]
            for s in seeds
        )
        for name in names
    }
    return out


def _ablation(seeds: list[dict]) -> dict:
    abl_m = ("exact", "exact8", "rouge_p", "val_ppl")
    abl: dict = {"none": {m: _stats(s["ablation"]["none"][m] for s in seeds) for m in abl_m}}
    abl["num_test"] = [s["ablation"]["num_test"] for s in seeds]
    names = [n for n in seeds[0]["ablation"] if n not in ("layer", "none", "matched", "fit_auroc", "num_test")]
    for kind in ("probe", "meandiff", "random"):
        members = [n for n in names if n.startswith(kind)]
        abl[kind] = {
            a: {m: _stats([s["ablation"][n][a][m] for s in seeds for n in members]) for m in abl_m}
            for a in (seeds[0]["ablation"][members[0]] if members else ())
        }
    matched = {}
    for ratio in seeds[0]["ablation"]["matched"]:
        rows = [s["ablation"]["matched"][ratio] for s in seeds]
        entry = {}
        for m in ("exact8", "rouge_p"):
            entry[m] = {
                "probe": _stats((r["probe"][m] for r in rows), rate=True),
                "meandiff": _stats((r["meandiff"][m] for r in rows), rate=True),
                "random": _stats((r["random_mean"][m] for r in rows), rate=True),
                "probe_per_seed": [r["probe"][m] for r in rows],
                "random_per_seed": [r["random_mean"][m] for r in rows],
                "random_reached": [r["random_mean"][f"{m}_reached"] for r in rows],
                "probe_minus_random": _stats(r["probe"][m] - r["random_mean"][m] for r in rows),
            }
        matched[ratio] = entry
    abl["matched"] = matched
    return abl


def aggregate(cfg: AuditConfig, seeds: list[dict]) -> dict:
    g_idx = range(len(cfg.dup_counts))
    prefixes = sorted(seeds[0]["prefix_sweep"], key=int)
    res: dict = {"dup_counts": list(cfg.dup_counts), "seeds": [s["seed"] for s in seeds]}
    res["prefix_sweep"] = {p: _gap_block(seeds, lambda s, p=p: s["prefix_sweep"][p], g_idx) for p in prefixes}
    templates = [t for t in seeds[0]["templates"] if t != "framing"]
    res["templates"] = {t: _gap_block(seeds, lambda s, t=t: s["templates"][t], g_idx) for t in templates}
    res["templates_prompt_len"] = {t: seeds[0]["templates"][t]["prompt_len"] for t in templates}
    res["templates_framing"] = [s["templates"]["framing"] for s in seeds]
    res["size_sweep"] = {
        size: {m: [_stats(s["size_sweep"][size][g][m]["gap"] for s in seeds) for g in g_idx] for m in GAPS}
        for size in seeds[0]["size_sweep"]
    }
    res["tests"] = {key: _test(seeds, key, g_idx) for key in TESTS}
    res["inducer"] = _inducer(cfg, seeds)
    k = len(seeds[0]["probe"]["auroc"])
    pr = [s["probe"] for s in seeds]
    res["probe"] = {
        "auroc": [_stats(p["auroc"][i] for p in pr) for i in range(k)],
        "auroc_vs_wrong": [_stats(p["auroc_vs_wrong"][i] for p in pr) for i in range(k)],
        "auroc_reference_model": [_stats(p["auroc_reference_model"][i] for p in pr) for i in range(k)],
        "best_layer": [p["best_layer"] for p in pr],
        "num_memorized": [p["num_memorized"] for p in pr],
        "num_predictable": [p["num_predictable"] for p in pr],
        "memorized_frac_by_group": [_stats(p["memorized_frac_by_group"][g] for p in pr) for g in g_idx],
        "target_acc_by_group": [_stats(p["target_acc_by_group"][g] for p in pr) for g in g_idx],
        "reference_acc_by_group": [_stats(p["reference_acc_by_group"][g] for p in pr) for g in g_idx],
    }
    res["ablation"] = _ablation(seeds)
    res["quadrants"] = {
        "groups": [[_stats(s["quadrants"]["groups"][g][q] for s in seeds) for q in range(4)] for g in g_idx],
        "ordinary": [_stats(s["quadrants"]["ordinary"][q] for s in seeds) for q in range(4)],
    }
    res["m_rouge_spearman"] = _stats(s["m_rouge_spearman"] for s in seeds)
    res["m_probe_spearman"] = _stats(s["m_probe_spearman"] for s in seeds)
    res["hotspot"] = {name: _hotspot([s["hotspot"][name] for s in seeds]) for name in seeds[0]["hotspot"]}
    return res


def _hotspot(hs: list[dict]) -> dict:
    ok = [h for h in hs if "gap_hot" in h]
    out = {"num_hotspot": [h["num_hotspot"] for h in hs], "seeds_with_hotspots": len(ok)}
    if not ok:
        return out
    out.update(
        {
            f"{which}_{m}": _stats(h[which][m]["gap"] for h in ok)
            for which in ("gap_hot", "gap_other", "hot_minus_other")
            for m in ("lcs_chars", "rouge_p_chars")
        }
    )
    out["hot_minus_other_ci_excludes_0"] = sum(h["hot_minus_other"]["rouge_p_chars"]["lo"] > 0 for h in ok)
    for key in ("probe_hot_mean", "probe_other_mean", "probe_auroc_hot", "probe_mwu_p"):
        out[key] = _stats(h[key] for h in ok)
    out["min_size_hot"] = [h["min_size_hot"] for h in ok]
    out["min_size_random"] = [h["min_size_random"] for h in ok]
    for which in ("power_hot", "power_random"):
        n = min(len(h[which]["sizes"]) for h in ok)
        out[which] = {
            "sizes": ok[0][which]["sizes"][:n],
            "mannwhitney": [_stats(h[which]["mannwhitney"][i] for h in ok) for i in range(n)],
        }
    return out


def write(cfg: AuditConfig, workdir: str, command: str = "") -> dict:
    seeds = []
    for seed in cfg.seeds:
        path = os.path.join(workdir, f"seed_{seed}", "eval.json")
        if not os.path.exists(path):
            raise StageInputError(f"{path} is missing: run --mode=evaluate (or all) first.")
        seeds.append(jsonio.read(path))
    res = aggregate(cfg, seeds)
    res["command"] = command
    res["config"] = {k: getattr(cfg, k) for k in cfg.__dataclass_fields__}
    files = plots(cfg, res, workdir)
    jsonio.write(os.path.join(workdir, "results.json"), res)
    with open(os.path.join(workdir, "report.md"), "w") as f:
        f.write(render(cfg, res, files))
    return res
