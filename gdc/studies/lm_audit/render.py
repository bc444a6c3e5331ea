"""report.md of the LM audit from the aggregated results (``report.aggregate``): mean ± sd over seeds in tables,
95% t-intervals over seeds ``[lo, hi]`` where a claim is decided, Wilson intervals for pooled proportions."""

import numpy as np

from gdc.studies.lm_audit import render_sections
from gdc.studies.lm_audit.config import AuditConfig
from gdc.studies.lm_audit.render_sections import _ci, _f, _wilson, matched_verdict

DEFAULT_COMMAND = "python launch.py --config=configs/lm_audit.py --workdir=runs/lm_audit --mode=all"
QUADRANTS = ("Stable-Easy", "Ambiguous-Hard", "Hotspot-Memorized", "Noisy-Outlier")


def summary(cfg: AuditConfig, res: dict) -> list[str]:
    """The headline table: each paper's claim beside our numbers."""
    ks, tp, top = cfg.dup_counts, str(cfg.test_prefix), len(cfg.dup_counts) - 1
    ps, n = res["prefix_sweep"], len(res["seeds"])
    by_dup = ", ".join(
        f"dup {k}: {_f(ps[tp]['lcs_row']['groups'][g])} ({ps[tp]['lcs_row']['groups_ci_excludes_0'][g]}/{n})"
        for g, k in enumerate(ks)
    )
    by_prefix = ", ".join(f"{p}: {_f(ps[p]['lcs_row']['groups'][top])}" for p in ps)
    by_size = ", ".join(f"{s}: {_f(v['lcs_row'][top])}" for s, v in res["size_sweep"].items())
    tm = res["templates"]
    by_template = ", ".join(f"{t}: {_f(tm[t]['lcs_row']['groups'][top])}" for t in tm)
    tests, ind = res["tests"], res["inducer"]
    last = len(tests["test_prefix"]["sizes"]) - 1
    size_last = int(tests["test_prefix"]["sizes"][last])

    def power(key: str) -> str:
        mw = tests[key]["mannwhitney"]
        cells = ", ".join(f"dup {k}: {_ci(mw['groups'][g][last], 2)}" for g, k in enumerate(ks))
        return f"{cells}; FPR {_ci(mw['fpr'][last], 3)}"

    acc = {arm: ind[arm]["accept_rate"] for arm in ("tuned", "control")}
    top_name = f"dup{ks[top]}"
    pr = res["probe"]
    best = int(np.argmax([d["mean"] if d["n"] else -1 for d in pr["auroc"]]))
    ratio = min(res["ablation"]["matched"], key=float)
    mt = res["ablation"]["matched"][ratio]["exact8"]
    return [
        "## Summary beside the papers",
        "",
        "Our numbers: mean ± sd over seeds, or mean [95% t-interval over seeds]; proportions pooled over seeds with "
        "Wilson intervals. The papers' columns quote what they claim; none of their numbers is for a model like ours.",
        "",
        "| claim | paper | ours |",
        "|---|---|---|",
        "| extraction gap > 0, larger with duplication (Freeman et al.) | highly duplicated articles memorized more; "
        "headline metric: longest common substring in characters with the original article | whole-row "
        f"LCSubstring gap at prefix {tp}: {by_dup} |",
        f"| gap grows with prefix length (Freeman et al.) | prefix sweep 25..400 tokens | dup-{ks[top]} whole-row gap "
        f"by prefix (up to the longest a row allows, {cfg.max_allowed_prefix}): {by_prefix} |",
        "| prompt templates (Freeman et al.) | request, request + conversation, role-play + prefix | "
        f"dup-{ks[top]} whole-row gap: {by_template} |",
        "| gap grows with model size (Freeman et al.) | sharp rise beyond ~100B parameters | "
        f"dup-{ks[top]} whole-row gap by width x depth: {by_size} |",
        "| dataset-level test detects a trained set S (MemHunter; v3 withdrawn, numbers not reusable) | reject H0 at "
        f"alpha | MW power at \\|S\\| = {size_last} from pools of {cfg.group_size}: true prefix "
        f"{power('test_prefix')}; inducer {power('test_inducer_tuned')}; control inducer "
        f"{power('test_inducer_control')} |",
        "| the inducer extracts more training data (MemHunter) | up to 40% more under constrained time | acceptance "
        f"in the last round {_ci(acc['tuned'][-1])} vs control {_ci(acc['control'][-1])}; {top_name} rows "
        f"extracted (>= {cfg.extract_chars} chars) {_wilson(ind['tuned']['extracted'][top_name])} vs "
        f"{_wilson(ind['control']['extracted'][top_name])}; never-trained rows "
        f"{_wilson(ind['tuned']['extracted']['control'])} |",
        "| probes detect memorized tokens (Slonski) | 'near-perfect accuracy' | "
        f"layer {best}: {_f(pr['auroc'][best], 3)} cross-canary AUROC; same labels in the reference model "
        f"{_f(pr['auroc_reference_model'][best], 3)}; embedding layer {_f(pr['auroc'][0], 3)} |",
        "| ablating the direction suppresses memorization at little cost (Slonski) | no number retrieved | held-out "
        f"dup-{ks[top]} canaries, exact-8 at {float(ratio):g}x perplexity: probe {_ci(mt['probe'])}, random "
        f"{_ci(mt['random'])}, probe - random {_ci(mt['probe_minus_random'])}: "
        f"{matched_verdict(mt['probe_minus_random'], 'verdict')} |",
    ]


def _power_table(test: dict, ks, name: str) -> list[str]:
    """Markdown rows: one per duplication count plus the false-positive rate, one column per |S|."""
    sizes = test["sizes"]
    lines = ["| S drawn from | " + " | ".join(f"\\|S\\|={int(s)}" for s in sizes) + " |", "|---|" + "---|" * len(sizes)]
    for g, k in enumerate(ks):
        lines.append(f"| dup {k} | " + " | ".join(_ci(d, 2) for d in test[name]["groups"][g]) + " |")
    lines.append("| never-trained (FPR) | " + " | ".join(_ci(d, 3) for d in test[name]["fpr"]) + " |")
    return lines


def render(cfg: AuditConfig, res: dict, files: list[str]) -> str:
    ks = cfg.dup_counts
    lines = [
        "# LM audit: extraction protocol, dataset-level membership test with MemHunter's inducer, activation probes",
        "",
        f"Command: `{res.get('command') or DEFAULT_COMMAND}`",
        "",
        f"Seeds {res['seeds']}. Target: {cfg.model} {cfg.width}x{cfg.depth}, {cfg.epochs} epochs on {cfg.num_train} "
        f"pydoc rows of {cfg.seq_len + 1} characters, a seeded random subset of the first {cfg.num_rows} rows of the "
        f"train split; candidate groups of {cfg.group_size} rows duplicated {list(ks)} times; control: "
        f"{cfg.num_control} never-trained rows of the same {cfg.num_rows} (same topics). Greedy continuations of "
        f"{cfg.continuation} characters.",
        "",
        *summary(cfg, res),
        "",
        *render_sections.extraction(cfg, res),
        *render_sections.dataset_test(cfg, res, _power_table),
        *render_sections.inducer(cfg, res),
        *render_sections.probes(cfg, res),
        *render_sections.hotspot(cfg, res),
    ]
    return "\n".join(lines) + "\n"
