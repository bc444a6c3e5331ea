"""The study report: ``results.json``, ``report.md`` and PNGs, aggregated over seeds and random replicates.

Extraction counts are pooled over seeds (and over the random controls' replicates) with Wilson 95% intervals; other
numbers are mean and standard deviation over seeds. Verdicts are computed from the numbers by
``gdc.studies.carto.claims`` (each scored arm against its random replicates, seed by seed, with the statistics of
``gdc.studies.carto.verdicts``), never written by hand; the figures are ``gdc.studies.carto.plots``. This module
loads the evaluations, aggregates them into the per-arm table and writes the Markdown.
"""

import collections
import json
import os

import numpy as np

from gdc import jsonio
from gdc.studies.carto.claims import (
    EXTRACTION,
    PAPER_A,
    PAPER_B,
    arm_group,
    arm_tests,
    extraction_rate,
    pooled_extraction,
    verdicts,
)
from gdc.studies.carto.config import CartoConfig
from gdc.studies.carto.plots import (
    plot_data_map,
    plot_extraction_by_epoch,
    plot_pruning,
    plot_sweep,
    plot_trajectories,
)

METRICS = {  # key in evals/*.json -> column title
    "inserted_extraction_rate": "extraction",
    "inserted_exposure_mean": "exposure (bits)",
    "heldout_perplexity_token": "val. perplexity",
    "mia_auc": "MIA AUC (train/held-out)",
    "mia_canary_secret_auc": "canary MIA AUC",
    "mia_calibrated_canary_secret_auc": "canary MIA AUC (calibrated)",
    "canary_fraction_of_pruned": "pruned that are canaries",
    "canary_copies_pruned_fraction": "canary copies pruned",
    "inserted_digit_accuracy": "secret digits right (greedy)",
    "inserted_first_digit_mass": "P(a digit follows the prefix)",
    "inserted_first_secret_prob": "P(the secret's first digit follows)",
}


def load_evals(workdir: str, seeds) -> dict[str, dict[int, dict]]:
    """arm -> seed -> its ``evals/<arm>.json``, plus ``inserted_rank1_count`` where the arrays hold secret ranks."""
    out: dict[str, dict[int, dict]] = collections.defaultdict(dict)
    for seed in seeds:
        folder = os.path.join(workdir, f"seed_{seed}", "evals")
        for fname in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
            if fname.endswith(".json"):
                rec = jsonio.read(os.path.join(folder, fname))
                arrays = os.path.join(folder, fname[:-5] + ".npz")
                if os.path.exists(arrays):
                    with np.load(arrays) as z:
                        if "inserted_rank" in z.files:  # rank 1 of all 10^d secrets: digit-constrained extraction
                            rec["inserted_rank1_count"] = float((z["inserted_rank"] == 1).sum())
                out[fname[:-5]][seed] = rec
    return out


def aggregate(evals: dict[str, dict[int, dict]]) -> dict[str, dict]:
    """Per arm group: METRICS as mean/std over runs, pooled extraction, perplexity change against the baseline."""
    groups: dict[str, list[tuple[int, dict]]] = collections.defaultdict(list)
    for arm, per_seed in evals.items():
        for seed, rec in per_seed.items():
            groups[arm_group(arm)].append((seed, rec))
    base = {seed: rec for seed, rec in evals.get("baseline", {}).items()}
    table = {}
    for group, recs in sorted(groups.items()):
        row = {"runs": len(recs), "seeds": sorted({s for s, _ in recs})}
        for key in METRICS:
            vals = [r[key] for _, r in recs if key in r]
            if vals:
                row[key] = {"mean": float(np.mean(vals)), "std": float(np.std(vals)), "n": len(vals)}
        for kind, key in EXTRACTION.items():
            pooled = pooled_extraction(evals, group, key)
            if pooled["total"]:
                row[f"extraction_{kind}"] = pooled
        rel = [
            r["heldout_perplexity_token"] / base[s]["heldout_perplexity_token"] - 1
            for s, r in recs
            if s in base and "heldout_perplexity_token" in r
        ]
        if rel:
            row["perplexity_change"] = {"mean": float(np.mean(rel)), "std": float(np.std(rel))}
        table[group] = row
    return table


def _fmt(row: dict, key: str, pct: bool = False) -> str:
    if key not in row:
        return "-"
    m, s = row[key]["mean"], row[key]["std"]
    return f"{100 * m:.1f}% ± {100 * s:.1f}" if pct else f"{m:.3f} ± {s:.3f}"


def extraction_by_epoch(workdir: str, seeds) -> dict[int, list[tuple[int, float]]]:
    """The probe's greedy extraction count after each epoch (``canary_extracted`` in its metrics.jsonl)."""
    out = {}
    for seed in seeds:
        path = os.path.join(workdir, f"seed_{seed}", "probe", "metrics.jsonl")
        if not os.path.exists(path):
            continue
        rows = {}
        for line in open(path):
            rec = jsonio.loads(line)
            if "canary_extracted" in rec:
                rows[int(rec["epoch"])] = float(rec["canary_extracted"])
        if rows:
            out[seed] = sorted(rows.items())
    return out


def detectors_over_seeds(workdir: str, seeds) -> dict:
    """Per score: AUROC mean/sd over seeds and, per top-p% cut, "positives/k" of every seed."""
    per_seed = []
    for seed in seeds:
        path = os.path.join(workdir, f"seed_{seed}", "probe", "scores", "sweep.json")
        if os.path.exists(path):
            per_seed.append(jsonio.read(path).get("detectors") or {})
    out = {}
    for name in per_seed[0] if per_seed else []:
        aurocs = [d[name]["auroc"] for d in per_seed]
        tops = {
            f: ", ".join(f"{d[name]['top'][f]['positives']}/{d[name]['top'][f]['k']}" for d in per_seed)
            for f in per_seed[0][name]["top"]
        }
        out[name] = {
            "auroc_mean": float(np.mean(aurocs)),
            "auroc_std": float(np.std(aurocs)),
            "aurocs": aurocs,
            "top": tops,
        }
    return out


def write_report(cfg: CartoConfig, workdir: str) -> dict:
    from gdc.evaluation import mia
    from gdc.scoring import load_loss_matrix

    seeds = list(cfg.study.seeds)
    evals = load_evals(workdir, seeds)
    table = aggregate(evals)
    verdict = verdicts(evals)
    tests = arm_tests(evals)
    first = os.path.join(workdir, f"seed_{seeds[0]}")
    probe = os.path.join(first, "probe")
    scores = dict(np.load(os.path.join(probe, "scores", "scores.npz")))
    score_summary = jsonio.read(os.path.join(probe, "scores", "scores.json"))
    extra = jsonio.read(os.path.join(probe, "scores", "sweep.json"))
    extra["detectors"] = detectors_over_seeds(workdir, seeds)
    meta = jsonio.read(os.path.join(probe, "dataset.json"))
    is_canary = np.zeros(len(scores["m_N"]), bool)
    for c in meta.get("canaries", {}).get("inserted", []):
        is_canary[c["ids"]] = True
    loss_ExN, loss_meta = load_loss_matrix(probe, "auto")
    plot_data_map(scores, is_canary, os.path.join(workdir, "data_map.png"))
    plot_trajectories(loss_ExN, scores, os.path.join(workdir, "trajectories.png"))
    plot_pruning(table, os.path.join(workdir, "pruning.png"))
    curves_by_epoch = extraction_by_epoch(workdir, seeds)
    if curves_by_epoch:
        plot_extraction_by_epoch(curves_by_epoch, os.path.join(workdir, "extraction_by_epoch.png"))
    plot_sweep(dict(np.load(os.path.join(probe, "scores", "sweep.npz"))), os.path.join(workdir, "eps_sweep.png"))
    curves = {}
    for arm in ("baseline", "downweight_hotspot", f"prune_m@{round(100 * cfg.study.prune_fractions[0])}"):
        path = os.path.join(first, "evals", f"{arm}.npz")
        if os.path.exists(path):
            z = np.load(path)
            key = "mia_canary_secret" if "mia_canary_secret_scores_members" in z.files else "mia"
            if f"{key}_scores_members" in z.files:
                curves[arm] = (z[f"{key}_scores_members"], z[f"{key}_scores_nonmembers"])
    if curves:
        mia.plot_roc(curves, os.path.join(workdir, "roc.png"), title=f"seed {seeds[0]}: canary-secret loss attack")

    results = {
        "config": cfg.to_dict(),
        "table": table,
        "verdicts": verdict,
        "arm_tests": tests,
        "baseline_extraction_by_epoch": curves_by_epoch,
        "scores_seed0": score_summary,
        "loss_source": loss_meta.get("loss_source"),
        "detectors": extra.get("detectors"),
        "paper": {"A": PAPER_A, "B": PAPER_B},
    }
    jsonio.write(os.path.join(workdir, "results.json"), results, indent=2)
    with open(os.path.join(workdir, "report.md"), "w") as f:
        f.write(_markdown(cfg, workdir, table, verdict, tests, curves_by_epoch, score_summary, extra, loss_meta))
    return results


def _rate(p: dict) -> str:
    lo, hi = p["wilson95"]
    return f"{p['rate']:.0%} ({p['extracted']:.0f}/{p['total']:.0f}) [{lo:.0%}, {hi:.0%}]"


def _verdict_line(name: str, v: dict) -> str:
    head = f"* **{name}** ({v['claim']}): **{v['verdict']}**."
    if "arm" in v:
        t = v["vs_random"]
        return (
            f"{head} Baseline {_rate(v['baseline'])}; arm {_rate(v['arm'])}; random control {_rate(v['random'])}; "
            f"claimed level <= {v['claimed_rate']:.0%}; arm vs random, seeds paired: statistic {t['statistic']:+.2f} "
            f"canaries, exact one-sided p = {t['p_value']:.3f} ({t['relabellings']:.0f} relabellings)."
        )
    lo, hi = v["t95"]
    extra = ""
    if "vs_random" in v:
        extra = f" Arm vs random, seeds paired: p = {v['vs_random']['p_value']:.3f}."
    seeds = ", ".join(f"{c:+.2%}" for c in v["change"])
    interval = f"t 95%: {lo:+.2%}, {hi:+.2%}" if np.isfinite(lo) else "no interval from one seed"
    return f"{head} Change {v['mean']:+.2%} [{interval}] (per seed: {seeds}).{extra}"


def _markdown(cfg, workdir, table, verdict, tests, by_epoch, score_summary, extra, loss_meta) -> str:
    lines = ["# GenDataCarto study report", ""]
    lines += [
        f"Seeds: {list(cfg.study.seeds)}; model: {cfg.model.name} (width {cfg.model.width}, depth "
        f"{cfg.model.depth}); data: {cfg.data.source}, seq_len {cfg.data.seq_len}; {cfg.train.num_epochs} epochs.",
        f"Scores came from: **{loss_meta.get('loss_source')}** ({loss_meta.get('checkpoints')} checkpoints).",
        "",
    ]
    commands = os.path.join(workdir, "commands.txt")
    if os.path.exists(commands):
        lines += ["Commands that produced this workdir (in order):", "", "```"]
        lines += [c.rstrip() for c in open(commands) if c.strip()] + ["```", ""]
    lines += ["## Verdicts", "", f"* Paper, experiment A: {PAPER_A}.", f"* Paper, experiment B: {PAPER_B}.", ""]
    lines += [_verdict_line(k, v) for k, v in verdict.items()] or ["* (no verdict: arms missing)"]
    lines += [
        "",
        "Verdicts: *reproduced* = the claimed level is reached and the arm beats its random control (exact "
        "within-seed permutation test, p < 0.05); *contradicted* = the claimed level lies outside the arm's 95% "
        "interval; *not reproduced* = neither; *not testable* = the baseline extracts fewer than half its canaries.",
    ]
    if tests:
        lines += [
            "",
            "## Each scored arm against its random control (seeds paired; lower = less memorization)",
            "",
            "| arm | control | extraction: arm - random (canaries, summed over seeds) | p | exposure: arm - random "
            "(bits, summed over seeds) | p |",
            "|---|---|---|---|---|---|",
        ]
        for name, t in tests.items():
            cells = []
            for key in (EXTRACTION["greedy"], "inserted_exposure_mean"):
                cells += [f"{t[key]['statistic']:+.2f}", f"{t[key]['p_value']:.3f}"] if key in t else ["-", "-"]
            lines.append(f"| {name} | {t['control']} | " + " | ".join(cells) + " |")
    if by_epoch:
        lines += ["", "## When the baseline memorizes: greedy extraction after each epoch", ""]
        for seed, rows in by_epoch.items():
            lines.append(f"* seed {seed}: " + ", ".join(f"e{e}: {c:.0f}" for e, c in rows))
    lines += ["", "## All arms (mean ± sd over seeds; extraction pooled over seeds and replicates, Wilson 95%)", ""]
    cols = list(METRICS)
    lines.append(
        "| arm | runs | greedy extraction, pooled | digit-constrained extraction, pooled | "
        + " | ".join(METRICS[c] for c in cols)
        + " | ppl change |"
    )
    lines.append("|---" * (len(cols) + 5) + "|")
    for group, row in table.items():
        ext = []
        for kind in EXTRACTION:
            rate, lo, hi = extraction_rate(row, kind)
            ext.append(f"{rate:.0%} [{lo:.0%}, {hi:.0%}]" if np.isfinite(rate) else "-")
        ext = " | ".join(ext)
        ppl = row.get("perplexity_change")
        ppl_s = f"{100 * ppl['mean']:+.2f}% ± {100 * ppl['std']:.2f}" if ppl else "-"
        vals = [_fmt(row, c, pct=c.endswith(("rate", "fraction", "pruned", "accuracy"))) for c in cols]
        lines.append(f"| {group} | {row['runs']} | {ext} | " + " | ".join(vals) + f" | {ppl_s} |")
    q = score_summary.get("quadrants", {})
    lines += [
        "",
        "## Scores (first seed)",
        "",
        f"Scoring threshold (what m, the quadrants and every prune_m arm use): "
        f"{json.dumps(score_summary.get('thresholds'))}; tau_d = {q.get('tau_d')}, tau_m = {q.get('tau_m')}. "
        f"The on-device tracker's own rule (tracker.eps_low = {cfg.tracker.eps_low}, tracker.eps_high = "
        f"{cfg.tracker.eps_high}, criterion {cfg.tracker.criterion}) only feeds the agreement check below.",
        f"Quadrant counts: {q.get('counts')}; never-learned examples per quadrant: {q.get('never_learned')}; "
        f"examples with m > 0: {score_summary.get('frac_m_pos')}; examples tied at tau_m: {q.get('n_m_at_tau')}.",
        f"Offline forget counts vs the on-device tracker: {json.dumps(score_summary.get('tracker_agreement'))}.",
        "",
    ]
    if extra.get("detectors"):
        lines += [
            "Each score of the probe run as a canary-copy detector, before any retraining (what an intervention "
            "built on it can possibly remove): AUROC (mean ± sd over seeds) and the canary copies inside each top-p% "
            "set (per seed):",
            "",
        ]
        for name, d in extra["detectors"].items():
            tops = "; ".join(f"top {float(f):.0%}: {v}" for f, v in d["top"].items())
            lines.append(f"* {name}: AUROC {d['auroc_mean']:.3f} ± {d['auroc_std']:.3f}; {tops}")
    lines += [
        "",
        "Figures: `data_map.png`, `trajectories.png`, `pruning.png`, `eps_sweep.png`, `roc.png`, "
        "`extraction_by_epoch.png`.",
        "",
    ]
    return "\n".join(lines)
