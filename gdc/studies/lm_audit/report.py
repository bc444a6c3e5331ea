"""Aggregates the seeds' eval.json into results.json, report.md and PNGs (mean and sd over seeds; the figures are
drawn by ``plots``)."""

import os

import numpy as np

from gdc import jsonio
from gdc.errors import StageInputError
from gdc.studies.lm_audit.config import AuditConfig
from gdc.studies.lm_audit.plots import plots

DEFAULT_COMMAND = "python launch.py --config=configs/lm_audit.py --workdir=runs/lm_audit --mode=all"
QUADRANTS = ("Stable-Easy", "Ambiguous-Hard", "Hotspot-Memorized", "Noisy-Outlier")


def _ms(values) -> dict[str, float]:
    """Mean and sd (ddof 1 when > 1 value) over seeds, ignoring NaN and inf."""
    x = np.asarray([v for v in values if v is not None], np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return {"mean": float("nan"), "sd": float("nan"), "n": 0}
    return {"mean": float(x.mean()), "sd": float(x.std(ddof=1)) if x.size > 1 else 0.0, "n": int(x.size)}


def _f(d: dict, digits: int = 2) -> str:
    if not d["n"]:
        return "n/a"
    if abs(d["mean"]) >= 1e4:  # exploded perplexities
        return f"{d['mean']:.2g} ± {d['sd']:.2g}"
    return f"{d['mean']:.{digits}f} ± {d['sd']:.{digits}f}"


def aggregate(cfg: AuditConfig, seeds: list[dict]) -> dict:
    g_idx = range(len(cfg.dup_counts))
    prefixes = sorted(seeds[0]["prefix_sweep"], key=int)
    res: dict = {"dup_counts": list(cfg.dup_counts), "seeds": [s["seed"] for s in seeds]}
    res["prefix_sweep"] = {
        p: {
            m: {
                "groups": [_ms(s["prefix_sweep"][p]["groups"][g][m]["gap"] for s in seeds) for g in g_idx],
                "groups_ci_excludes_0": [
                    sum(s["prefix_sweep"][p]["groups"][g][m]["lo"] > 0 for s in seeds) for g in g_idx
                ],
                "train_mean": [_ms(s["prefix_sweep"][p]["groups"][g][m]["train_mean"] for s in seeds) for g in g_idx],
                "ordinary": _ms(s["prefix_sweep"][p]["ordinary"][m]["gap"] for s in seeds),
                "control_mean": _ms(s["prefix_sweep"][p]["control_mean"][m] for s in seeds),
            }
            for m in ("lcs_chars", "lcs_words", "rouge_p", "rouge_f", "rouge_p_chars", "exact", "exact8")
        }
        for p in prefixes
    }
    res["size_sweep"] = {
        size: {
            m: [_ms(s["size_sweep"][size][g][m]["gap"] for s in seeds) for g in g_idx] for m in ("lcs_chars", "rouge_p")
        }
        for size in seeds[0]["size_sweep"]
    }
    sizes = seeds[0]["power"][0]["sizes"]
    res["power"] = {
        t: {
            "sizes": sizes,
            "groups": [[_ms(s["power"][g][t][i] for s in seeds) for i in range(len(sizes))] for g in g_idx],
        }
        for t in ("mannwhitney", "welch")
    }
    res["fpr"] = {t: _ms(s["fpr"][t] for s in seeds) for t in ("mannwhitney", "welch")}
    res["fpr"].update({f"{t}_ks_p": [s["fpr"][f"{t}_ks_p"] for s in seeds] for t in ("mannwhitney", "welch")})
    res["fpr"]["size"], res["fpr"]["reps_per_seed"] = seeds[0]["fpr"]["size"], seeds[0]["fpr"]["reps"]
    k = len(seeds[0]["probe"]["auroc"])
    res["probe"] = {
        "auroc": [_ms(s["probe"]["auroc"][i] for s in seeds) for i in range(k)],
        "auroc_vs_wrong": [_ms(s["probe"]["auroc_vs_wrong"][i] for s in seeds) for i in range(k)],
        "auroc_reference_model": [_ms(s["probe"]["auroc_reference_model"][i] for s in seeds) for i in range(k)],
        "best_layer": [s["probe"]["best_layer"] for s in seeds],
        "num_memorized": [s["probe"]["num_memorized"] for s in seeds],
        "num_predictable": [s["probe"]["num_predictable"] for s in seeds],
        "memorized_frac_by_group": [_ms(s["probe"]["memorized_frac_by_group"][g] for s in seeds) for g in g_idx],
        "target_acc_by_group": [_ms(s["probe"]["target_acc_by_group"][g] for s in seeds) for g in g_idx],
        "reference_acc_by_group": [_ms(s["probe"]["reference_acc_by_group"][g] for s in seeds) for g in g_idx],
    }
    abl_m = ("exact", "exact8", "rouge_p", "val_ppl")
    abl = {"none": {m: _ms(s["ablation"]["none"][m] for s in seeds) for m in abl_m}}
    names = [n for n in seeds[0]["ablation"] if n not in ("layer", "none")]
    for kind in ("probe", "meandiff", "random"):
        members = [n for n in names if n.startswith(kind)]
        abl[kind] = {
            a: {m: _ms(s["ablation"][n][a][m] for s in seeds for n in members) for m in abl_m}
            for a in (seeds[0]["ablation"][members[0]] if members else ())
        }
    res["ablation"] = abl
    res["quadrants"] = {
        "groups": [[_ms(s["quadrants"]["groups"][g][q] for s in seeds) for q in range(4)] for g in g_idx],
        "ordinary": [_ms(s["quadrants"]["ordinary"][q] for s in seeds) for q in range(4)],
    }
    res["m_rouge_spearman"] = _ms(s["m_rouge_spearman"] for s in seeds)
    res["m_probe_spearman"] = _ms(s["m_probe_spearman"] for s in seeds)
    res["hotspot"] = {name: _hotspot([s["hotspot"][name] for s in seeds]) for name in seeds[0]["hotspot"]}
    return res


def _hotspot(hs: list[dict]) -> dict:
    ok = [h for h in hs if "gap_hot" in h]
    out = {"num_hotspot": [h["num_hotspot"] for h in hs], "seeds_with_hotspots": len(ok)}
    if not ok:
        return out
    out.update(
        {
            f"{which}_{m}": _ms(h[which][m]["gap"] for h in ok)
            for which in ("gap_hot", "gap_other", "hot_minus_other")
            for m in ("lcs_chars", "rouge_p_chars")
        }
    )
    out["hot_minus_other_ci_excludes_0"] = sum(h["hot_minus_other"]["rouge_p_chars"]["lo"] > 0 for h in ok)
    for key in ("probe_hot_mean", "probe_other_mean", "probe_auroc_hot", "probe_mwu_p"):
        out[key] = _ms(h[key] for h in ok)
    out["min_size_hot"] = [h["min_size_hot"] for h in ok]
    out["min_size_random"] = [h["min_size_random"] for h in ok]
    for which in ("power_hot", "power_random"):
        n = min(len(h[which]["sizes"]) for h in ok)
        out[which] = {
            "sizes": ok[0][which]["sizes"][:n],
            "mannwhitney": [_ms(h[which]["mannwhitney"][i] for h in ok) for i in range(n)],
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


def summary(cfg: AuditConfig, res: dict) -> list[str]:
    """The headline table: each paper's claim beside our numbers."""
    ks, tp, top = cfg.dup_counts, str(cfg.test_prefix), len(cfg.dup_counts) - 1
    ps = res["prefix_sweep"]
    n = len(res["seeds"])
    lcs = ps[tp]["lcs_chars"]
    by_dup = ", ".join(
        f"dup {k}: {_f(lcs['groups'][g])} ({lcs['groups_ci_excludes_0'][g]}/{n})" for g, k in enumerate(ks)
    )
    by_prefix = ", ".join(f"{p}: {_f(ps[p]['lcs_chars']['groups'][top])}" for p in ps)
    by_size = ", ".join(f"{s}: {_f(v['lcs_chars'][top])}" for s, v in res["size_sweep"].items())
    mw = res["power"]["mannwhitney"]
    power = ", ".join(f"dup {k}: {_f(mw['groups'][g][-1])}" for g, k in enumerate(ks))
    pr = res["probe"]
    best = int(np.argmax([d["mean"] if d["n"] else -1 for d in pr["auroc"]]))
    abl, top_a = res["ablation"], max(res["ablation"]["probe"], key=float, default=None)

    def abl_cell(kind: str) -> str:
        if top_a is None or top_a not in abl.get(kind, {}):
            return f"{kind}: n/a"
        d = abl[kind][top_a]
        return f"{kind} a={top_a}: exact8 {_f(d['exact8'])}, ppl {_f(d['val_ppl'])}"

    h = res["hotspot"]["high_m"]
    hot = (
        f"high-m minus other ordinary rows, char ROUGE-L P gap {_f(h['hot_minus_other_rouge_p_chars'], 3)} "
        f"({h['hot_minus_other_ci_excludes_0']}/{h['seeds_with_hotspots']} seeds above 0); probe-score AUROC "
        f"{_f(h['probe_auroc_hot'])}; rows per seed {h['num_hotspot']}"
        if h["seeds_with_hotspots"]
        else f"too few high-m rows ({h['num_hotspot']})"
    )
    return [
        "## Summary beside the papers",
        "",
        "| claim | paper | ours (mean ± sd over seeds) |",
        "|---|---|---|",
        "| extraction gap > 0, larger with duplication (Freeman et al.) | highly duplicated articles memorized more; "
        f"headline metric: longest common substring in characters | LCSubstring gap at prefix {tp}: {by_dup} |",
        "| gap grows with prefix length (Freeman et al.) | prefix sweep 25..400 tokens | "
        f"dup-{ks[top]} gap by prefix: {by_prefix} |",
        "| gap grows with model size (Freeman et al.) | sharp rise beyond ~100B parameters | "
        f"dup-{ks[top]} gap by width x depth: {by_size} |",
        "| dataset-level test detects a trained set S (MemHunter; v3 withdrawn, numbers not reusable) | "
        "reject H0 at alpha; research digest's target: power -> 1 at n <= 50, FPR ~ alpha | "
        f"Mann-Whitney power at n = {int(mw['sizes'][-1])}: {power}; FPR MW {_f(res['fpr']['mannwhitney'], 3)}, "
        f"Welch {_f(res['fpr']['welch'], 3)} |",
        "| probes detect memorized tokens (Slonski) | 'near-perfect accuracy'; digest's target AUROC >= 0.95 | "
        f"layer {best}: {_f(pr['auroc'][best], 3)} cross-canary AUROC; same labels in the reference model "
        f"{_f(pr['auroc_reference_model'][best], 3)}; embedding layer {_f(pr['auroc'][0], 3)} |",
        "| ablating the direction suppresses memorization at little cost (Slonski) | digest's target: exact match "
        f"-50% at <= 5% perplexity | none: exact8 {_f(abl['none']['exact8'])}, ppl {_f(abl['none']['val_ppl'])}; "
        f"{abl_cell('probe')}; {abl_cell('meandiff')}; {abl_cell('random')} |",
        "| GenDataCarto: hotspot / high-m rows extract more, reach significance earlier, score higher | proposal | "
        f"{hot} |",
    ]


def _power_table(power: dict, ks) -> list[str]:
    """Markdown rows: one per duplication count k, one column per test-set size |S|."""
    lines = [
        "| dup | " + " | ".join(f"n={int(s)}" for s in power["sizes"]) + " |",
        "|---|" + "---|" * len(power["sizes"]),
    ]
    return lines + [f"| {k} | " + " | ".join(_f(d) for d in power["groups"][g]) + " |" for g, k in enumerate(ks)]


def render(cfg: AuditConfig, res: dict, files: list[str]) -> str:
    ks = cfg.dup_counts
    tp = str(cfg.test_prefix)
    lines = [
        "# LM audit: extraction protocol, dataset-level membership test, activation probes",
        "",
        f"Command: `{res.get('command') or DEFAULT_COMMAND}`",
        "",
        f"Seeds {res['seeds']}; mean ± sd over seeds. Target: {cfg.model} {cfg.width}x{cfg.depth}, {cfg.epochs} "
        f"epochs on {cfg.num_train} pydoc rows of {cfg.seq_len} characters; candidate groups of {cfg.group_size} rows "
        f"duplicated {list(ks)} times; control: {cfg.num_control} never-trained held-out rows. Greedy continuation of "
        f"{cfg.continuation} characters.",
        "",
        *summary(cfg, res),
        "",
        "## 1. Extraction protocol (Freeman et al.): train - control gaps",
        "",
        "| prefix | metric | " + " | ".join(f"dup {k}" for k in ks) + " | other train rows | control mean |",
        "|---|---|" + "---|" * len(ks) + "---|---|",
    ]
    for p, block in res["prefix_sweep"].items():
        for m in ("lcs_chars", "rouge_p", "rouge_p_chars", "exact", "exact8"):
            b = block[m]
            cells = [
                f"{_f(b['groups'][g])} ({b['groups_ci_excludes_0'][g]}/{len(res['seeds'])})" for g in range(len(ks))
            ]
            lines.append(f"| {p} | {m} | " + " | ".join(cells) + f" | {_f(b['ordinary'])} | {_f(b['control_mean'])} |")
    lines += [
        "",
        "(n/N): seeds whose 95% bootstrap interval of the gap lies above 0. ![prefix sweep](prefix_sweep.png)",
        "",
        f"Model size (prefix {tp}, longest-common-substring gap in characters):",
        "",
        "| model | " + " | ".join(f"dup {k}" for k in ks) + " |",
        "|---|" + "---|" * len(ks),
    ]
    for size, block in res["size_sweep"].items():
        lines.append(f"| {size} | " + " | ".join(_f(block["lcs_chars"][g]) for g in range(len(ks))) + " |")
    lines += [
        "",
        "![size sweep](size_sweep.png)",
        "",
        f"## 2. Dataset-level test (MemHunter, no inducer): character ROUGE-L precision at prefix {tp}, "
        f"alpha = {cfg.alpha}",
        "",
        "Power (Mann-Whitney, one-sided) by |S|:",
        "",
        *_power_table(res["power"]["mannwhitney"], ks),
    ]
    fpr = res["fpr"]
    lines += ["", "Power (Welch) by |S|:", "", *_power_table(res["power"]["welch"], ks)]
    lines += [
        "",
        f"False-positive rate on never-trained sets (|S| = {fpr['size']}, {fpr['reps_per_seed']} draws per seed from "
        f"the control pool): Mann-Whitney {_f(fpr['mannwhitney'], 3)}, Welch {_f(fpr['welch'], 3)} "
        f"(KS test of p-value uniformity, p per seed: MW {[round(x, 3) for x in fpr['mannwhitney_ks_p']]}, "
        f"Welch {[round(x, 3) for x in fpr['welch_ks_p']]}).",
        "",
        "![power](power.png)",
        "",
        "## 3. Activation probes (Slonski) and ablation",
        "",
        "Token labels: memorized = target reproduces the token (teacher-forced argmax) and the reference model trained "
        "without the canaries does not; negatives = both reproduce it. Cross-canary GroupKFold "
        f"({cfg.probe_folds} folds).",
        "",
        "| layer | AUROC memorized vs predictable | AUROC memorized vs target-wrong | same labels, reference model |",
        "|---|---|---|---|",
    ]
    pr = res["probe"]
    for i, (a, b, r) in enumerate(zip(pr["auroc"], pr["auroc_vs_wrong"], pr["auroc_reference_model"], strict=True)):
        lines.append(f"| {i} | {_f(a, 3)} | {_f(b, 3)} | {_f(r, 3)} |")
    lines += [
        "",
        f"Labelled tokens per seed: memorized {pr['num_memorized']}, predictable {pr['num_predictable']}; best layer "
        f"per seed {pr['best_layer']}. Memorized-token fraction by duplication: "
        + ", ".join(f"dup {k}: {_f(pr['memorized_frac_by_group'][g], 3)}" for g, k in enumerate(ks))
        + ". Teacher-forced accuracy target / reference: "
        + ", ".join(
            f"dup {k}: {_f(pr['target_acc_by_group'][g])} / {_f(pr['reference_acc_by_group'][g])}"
            for g, k in enumerate(ks)
        )
        + ".",
        "",
        f"Ablation at the best layer, x -> x - a (x.u) u, on the dup-{max(ks)} canaries (prefix {tp}):",
        "",
        "| direction | a | canary exact match (24 chars) | exact match (first 8) | canary ROUGE-L P (chars) | "
        "validation perplexity |",
        "|---|---|---|---|---|---|",
    ]
    base = res["ablation"]["none"]
    for kind, rows in (("none", {"0": base}), *((k, res["ablation"][k]) for k in ("probe", "meandiff", "random"))):
        for a, d in rows.items():
            lines.append(
                f"| {kind} | {a} | {_f(d['exact'], 3)} | {_f(d['exact8'], 3)} | {_f(d['rouge_p'], 3)} | "
                f"{_f(d['val_ppl'])} |"
            )
    lines += ["", "![probes and ablation](probes_ablation.png)", "", "## 4. GenDataCarto hotspot comparison", ""]
    q = res["quadrants"]
    lines += [
        "Quadrants of the target run (m at the median final loss, percentile eps), rows per group:",
        "",
        "| rows | " + " | ".join(QUADRANTS) + " |",
        "|---|---|---|---|---|",
    ]
    for g, k in enumerate(ks):
        lines.append(f"| dup {k} | " + " | ".join(_f(d, 1) for d in q["groups"][g]) + " |")
    lines.append("| ordinary | " + " | ".join(_f(d, 1) for d in q["ordinary"]) + " |")
    for name, title in (
        ("hotspot", "Hotspot-Memorized rows"),
        ("high_m", "High-m rows (Hotspot-Memorized + Noisy-Outlier)"),
    ):
        h = res["hotspot"][name]
        lines += ["", f"**{title}** vs the other ordinary (non-duplicated) rows; rows per seed: {h['num_hotspot']}."]
        if not h["seeds_with_hotspots"]:
            continue
        lines += [
            "",
            f"| quantity (prefix {tp}) | {name} | other ordinary rows |",
            "|---|---|---|",
            f"| LCSubstring gap vs control (chars) | {_f(h['gap_hot_lcs_chars'])} | {_f(h['gap_other_lcs_chars'])} |",
            f"| ROUGE-L P (chars) gap vs control | {_f(h['gap_hot_rouge_p_chars'], 3)} | "
            f"{_f(h['gap_other_rouge_p_chars'], 3)} |",
            f"| smallest n = size of S with MW power >= 0.8 (per seed) | {h['min_size_hot']} | "
            f"{h['min_size_random']} |",
            f"| mean probe score | {_f(h['probe_hot_mean'], 3)} | {_f(h['probe_other_mean'], 3)} |",
            "",
            f"{name} minus other: ROUGE-L P (chars) {_f(h['hot_minus_other_rouge_p_chars'], 3)} (interval above 0 in "
            f"{h['hot_minus_other_ci_excludes_0']}/{h['seeds_with_hotspots']} seeds), LCSubstring "
            f"{_f(h['hot_minus_other_lcs_chars'])}; probe-score AUROC for {name} vs other "
            f"{_f(h['probe_auroc_hot'], 3)} (one-sided MWU p {_f(h['probe_mwu_p'], 3)}).",
        ]
    lines += [
        "",
        f"Spearman over ordinary rows: m vs ROUGE-L P (chars) {_f(res['m_rouge_spearman'], 3)}, m vs probe score "
        f"{_f(res['m_probe_spearman'], 3)}.",
    ]
    return "\n".join(lines) + "\n"
