"""The study report: ``results.json``, ``report.md`` and PNGs, aggregated over seeds and random replicates.

Extraction counts are pooled over seeds (and over the random controls' replicates) with Wilson 95% intervals; other
numbers are mean and standard deviation over seeds. Verdicts are computed from the numbers by
``gdc.studies.carto.verdicts`` (each scored arm against its random replicates, seed by seed), never written by hand.
"""

import collections
import json
import os
import re

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from gdc.scoring import QUADRANT_NAMES
from gdc.studies.carto.config import CartoConfig
from gdc.studies.carto.verdicts import mean_interval, reduction_verdict, wilson, within_seed_permutation

PAPER_A = (
    "canary extraction 100% -> 40% after pruning the top 5% by m, validation perplexity +0.5%; >40% reduction at 10%"
)
PAPER_B = "down-weighting hotspots (alpha = 0.5): leakage -30%, MIA AUC -15%, validation perplexity < +1%"
EXTRACTION = {"greedy": "inserted_extracted_count", "digits": "inserted_rank1_count"}
EXTRACTION_LABEL = {
    "greedy": "greedy extraction",
    "digits": "digit-constrained extraction: the secret is the most likely of all 10^d digit strings",
}
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


def arm_group(name: str) -> str:
    """``prune_random@5#2`` -> ``prune_random@5`` (replicates pooled)."""
    return re.sub(r"#\d+", "", name)


def load_evals(workdir: str, seeds) -> dict[str, dict[int, dict]]:
    out: dict[str, dict[int, dict]] = collections.defaultdict(dict)
    for seed in seeds:
        folder = os.path.join(workdir, f"seed_{seed}", "evals")
        for fname in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
            if fname.endswith(".json"):
                rec = json.load(open(os.path.join(folder, fname)))
                arrays = os.path.join(folder, fname[:-5] + ".npz")
                if os.path.exists(arrays):
                    with np.load(arrays) as z:
                        if "inserted_rank" in z.files:  # rank 1 of all 10^d secrets: digit-constrained extraction
                            rec["inserted_rank1_count"] = float((z["inserted_rank"] == 1).sum())
                out[fname[:-5]][seed] = rec
    return out


def aggregate(evals: dict[str, dict[int, dict]]) -> dict[str, dict]:
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
            pooled = _pooled(evals, group, key)
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


def _extraction(row: dict, kind: str = "greedy") -> tuple[float, float, float]:
    p = row.get(f"extraction_{kind}")
    if not p:
        return float("nan"), float("nan"), float("nan")
    return p["extracted"] / p["total"], *p["wilson95"]


def _per_seed(evals: dict, arm: str, key: str) -> dict[int, float]:
    return {s: float(r[key]) for s, r in evals.get(arm, {}).items() if key in r}


def _replicates(evals: dict, group: str, key: str) -> dict[int, list[float]]:
    """Per seed, the values of every replicate ``group#r``."""
    out: dict[int, list[float]] = collections.defaultdict(list)
    for name in sorted(evals):
        if arm_group(name) == group and name != group:
            for s, v in _per_seed(evals, name, key).items():
                out[s].append(v)
    return dict(out)


def compare(evals: dict, arm: str, control: str, key: str) -> dict:
    """The arm against its random control's replicates on ``key`` (lower = less memorization), seeds paired."""
    a, c = _per_seed(evals, arm, key), _replicates(evals, control, key)
    seeds = sorted(set(a) & set(c))
    test = within_seed_permutation([a[s] for s in seeds], [c[s] for s in seeds])
    return {"seeds": seeds, "arm": [a[s] for s in seeds], "control": [c[s] for s in seeds], **test}


def _pooled(evals: dict, group: str, count_key: str) -> dict:
    """Extraction pooled over seeds (and replicates) with its Wilson interval."""
    recs = [r for name, per in evals.items() if arm_group(name) == group for r in per.values() if count_key in r]
    k = sum(r[count_key] for r in recs)
    n = sum(r.get("inserted_num_canaries", 0.0) for r in recs)
    lo, hi = wilson(k, n)
    return {"extracted": k, "total": n, "rate": k / n if n else float("nan"), "wilson95": [lo, hi]}


def _ppl_claim(evals: dict, arm: str, limit: float) -> dict:
    """Relative validation-perplexity change of ``arm`` against the baseline, per seed; t-interval; the claim that
    it is at most ``limit``."""
    key = "heldout_perplexity_token"
    base, a = _per_seed(evals, "baseline", key), _per_seed(evals, arm, key)
    rel = [a[s] / base[s] - 1 for s in sorted(set(a) & set(base))]
    mean, lo, hi = mean_interval(rel)
    if not rel:
        v = "not testable"
    elif mean <= limit:
        v = "reproduced"
    elif np.isfinite(lo) and lo > limit:
        v = "contradicted"
    else:
        v = "not reproduced"
    return {"verdict": v, "change": rel, "mean": mean, "t95": [lo, hi], "claimed_at_most": limit}


CLAIMS_A = {  # fraction -> (claimed post-prune extraction as a share of the baseline's, perplexity limit)
    "5": (0.4, 0.005),  # body: 100% -> 40%, perplexity +0.5%
    "10": (0.6, 0.005),  # abstract: "over 40%" reduction at 10% pruning, perplexity < +0.5%
}


def verdicts(evals: dict) -> dict[str, dict]:
    """Every claim's verdict with the numbers behind it (see ``gdc.studies.carto.verdicts``)."""
    out: dict[str, dict] = {}
    if "baseline" not in evals:
        return out
    for kind, count_key in EXTRACTION.items():
        base = _pooled(evals, "baseline", count_key)
        if not base["total"]:
            continue
        for frac, (share, ppl_limit) in CLAIMS_A.items():
            arm = f"prune_m@{frac}"
            if arm not in evals:
                continue
            pooled, ctrl = _pooled(evals, arm, count_key), _pooled(evals, f"prune_random@{frac}", count_key)
            test = compare(evals, arm, f"prune_random@{frac}", count_key)
            claimed = share * base["rate"]
            v = reduction_verdict(
                base_rate=base["rate"],
                rate=pooled["rate"],
                interval=tuple(pooled["wilson95"]),
                claimed_rate=claimed,
                p_vs_random=test["p_value"],
            )
            out[f"A{frac}_{kind}"] = {
                "claim": f"pruning the top {frac}% by m lowers {EXTRACTION_LABEL[kind]} to <= {share:.0%} of the "
                "baseline's",
                "verdict": v,
                "baseline": base,
                "arm": pooled,
                "random": ctrl,
                "claimed_rate": claimed,
                "vs_random": test,
            }
            if kind == "greedy":
                out[f"A{frac}_perplexity"] = {
                    "claim": f"pruning the top {frac}% by m costs at most +{ppl_limit:.1%} validation perplexity",
                    **_ppl_claim(evals, arm, ppl_limit),
                }
    if "downweight_hotspot" in evals:
        out.update(_verdicts_b(evals))
    return out


def _verdicts_b(evals: dict) -> dict[str, dict]:
    out: dict[str, dict] = {}
    arm, ctrl = "downweight_hotspot", "downweight_random"
    base = _pooled(evals, "baseline", EXTRACTION["greedy"])
    pooled = _pooled(evals, arm, EXTRACTION["greedy"])
    test = compare(evals, arm, ctrl, EXTRACTION["greedy"])
    claimed = 0.7 * base["rate"]
    out["B_leakage"] = {
        "claim": "down-weighting hotspots (alpha 0.5) lowers greedy extraction by >= 30% (relative)",
        "verdict": reduction_verdict(
            base_rate=base["rate"],
            rate=pooled["rate"],
            interval=tuple(pooled["wilson95"]),
            claimed_rate=claimed,
            p_vs_random=test["p_value"],
        ),
        "baseline": base,
        "arm": pooled,
        "random": _pooled(evals, ctrl, EXTRACTION["greedy"]),
        "claimed_rate": claimed,
        "vs_random": test,
    }
    key = "mia_canary_secret_auc"
    b, a = _per_seed(evals, "baseline", key), _per_seed(evals, arm, key)
    rel = [a[s] / b[s] - 1 for s in sorted(set(a) & set(b))]
    mean, lo, hi = mean_interval(rel)
    test = compare(evals, arm, ctrl, key)
    if not rel:
        v = "not testable"
    elif mean <= -0.15 and np.isfinite(test["p_value"]) and test["p_value"] < 0.05:
        v = "reproduced"
    elif np.isfinite(lo) and lo > -0.15:
        v = "contradicted"
    else:
        v = "not reproduced"
    out["B_mia"] = {
        "claim": "down-weighting hotspots lowers the canary MIA AUC by >= 15% (relative)",
        "verdict": v,
        "change": rel,
        "mean": mean,
        "t95": [lo, hi],
        "vs_random": test,
    }
    out["B_perplexity"] = {
        "claim": "down-weighting hotspots costs under +1% validation perplexity",
        **_ppl_claim(evals, arm, 0.01),
    }
    return out


def arm_tests(evals: dict) -> dict[str, dict]:
    """Every scored prune or down-weight arm against its random control, on greedy extraction and exposure."""
    out = {}
    for name in sorted(evals):
        # Only scored prunes and down-weights have a random control (drop_noisy and upsample_hard have none).
        if "#" in name or "random" in name or not name.startswith(("prune_", "downweight_")):
            continue
        base, tm = name.split("+")[0], "+tm" if name.endswith("+tm") else ""
        control = (f"prune_random@{base.split('@')[1]}" if "@" in base else "downweight_random") + tm
        if not _replicates(evals, control, EXTRACTION["greedy"]):
            continue
        out[name] = {
            key: compare(evals, name, control, key)
            for key in (EXTRACTION["greedy"], "inserted_exposure_mean")
            if _per_seed(evals, name, key)
        }
        out[name]["control"] = control
    return out


# ---------------------------------------------------------------------------------------------------------------
# Figures.
# ---------------------------------------------------------------------------------------------------------------
def _figure(w=5.0, h=4.0):
    fig = Figure(figsize=(w, h))
    FigureCanvasAgg(fig)
    return fig


def plot_data_map(scores: dict, is_canary: np.ndarray, path: str) -> None:
    fig = _figure()
    ax = fig.add_subplot()
    rng = np.random.default_rng(0)
    m = scores["m_N"] + rng.uniform(-0.004, 0.004, len(scores["m_N"]))  # jitter: m is discrete
    for q, name in enumerate(QUADRANT_NAMES):
        sel = scores["quadrant_N"] == q
        ax.scatter(scores["d_N"][sel], m[sel], s=3, alpha=0.4, label=f"{name} ({sel.sum()})")
    if is_canary.any():
        ax.scatter(scores["d_N"][is_canary], m[is_canary], s=30, marker="x", c="k", label="canary copies")
    ax.set(xlabel="difficulty d (mean early loss)", ylabel="memorization m (jittered)", title="data map")
    ax.legend(fontsize=6, markerscale=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_trajectories(loss_ExN: np.ndarray, scores: dict, path: str, per: int = 4) -> None:
    fig = _figure(8, 5)
    rng = np.random.default_rng(0)
    for q, name in enumerate(QUADRANT_NAMES):
        ax = fig.add_subplot(2, 2, q + 1)
        ids = np.flatnonzero(scores["quadrant_N"] == q)
        for i in rng.choice(ids, min(per, len(ids)), replace=False) if len(ids) else []:
            ax.plot(loss_ExN[:, i], lw=1)
        ax.set(title=f"{name} ({len(ids)})", xlabel="checkpoint", ylabel="loss")
        ax.title.set_fontsize(8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_pruning(table: dict, path: str) -> None:
    """Extraction (greedy solid, digit-constrained dashed), exposure and perplexity change against the pruned %."""
    fig = _figure(13, 3.8)
    axes = [fig.add_subplot(1, 3, i + 1) for i in range(3)]
    base = table.get("baseline", {})
    methods = sorted({g.split("@")[0] for g in table if "@" in g and "+tm" not in g})
    for i, method in enumerate(methods):
        color = f"C{i}"
        pts = sorted(
            (float(g.split("@")[1]), r) for g, r in table.items() if g.startswith(method + "@") and "+tm" not in g
        )
        xs = [0.0] + [p for p, _ in pts]
        for kind, style in (("greedy", "o-"), ("digits", "s--")):
            if f"extraction_{kind}" in base:
                ext = [_extraction(base, kind)[0]] + [_extraction(r, kind)[0] for _, r in pts]
                axes[0].plot(xs, ext, style, color=color, label=f"{method} ({kind})")
        key = "inserted_exposure_mean"
        if key in base:
            exp = [base[key]["mean"]] + [r.get(key, {}).get("mean", np.nan) for _, r in pts]
            err = [base[key]["std"]] + [r.get(key, {}).get("std", np.nan) for _, r in pts]
            axes[1].errorbar(xs, exp, yerr=err, fmt="o-", color=color, capsize=3, label=method)
        ppl = [0.0] + [100 * r.get("perplexity_change", {}).get("mean", np.nan) for _, r in pts]
        axes[2].plot(xs, ppl, "o-", color=color, label=method)
    axes[0].set(xlabel="pruned (%)", ylabel="canary extraction rate (pooled over seeds)", ylim=(-0.05, 1.05))
    axes[1].set(xlabel="pruned (%)", ylabel="mean canary exposure (bits, mean ± sd over seeds)")
    axes[2].set(xlabel="pruned (%)", ylabel="val. perplexity change vs baseline (%)")
    for ax in axes:
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_sweep(sweep: dict, path: str) -> None:
    fig = _figure(8, 3.5)
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    eps = sweep["eps_low_S"]
    ax1.plot(eps, sweep["frac_m_pos_S"], "o-")
    ax1.set(xlabel="eps (absolute, nats)", ylabel="share of examples with m > 0")
    ax2.plot(eps, sweep["spearman_uv_S"], "o-", label="m(eps) vs upward variation")
    ax2.plot(eps[:-1], sweep["jaccard_adjacent_S"][: len(eps) - 1], "s-", label="top-5% Jaccard, next eps")
    ax2.set(xlabel="eps", ylabel="agreement", ylim=(-0.1, 1.05))
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def extraction_by_epoch(workdir: str, seeds) -> dict[int, list[tuple[int, float]]]:
    """The probe's greedy extraction count after each epoch (``canary_extracted`` in its metrics.jsonl)."""
    out = {}
    for seed in seeds:
        path = os.path.join(workdir, f"seed_{seed}", "probe", "metrics.jsonl")
        if not os.path.exists(path):
            continue
        rows = {}
        for line in open(path):
            rec = json.loads(line)
            if "canary_extracted" in rec:
                rows[int(rec["epoch"])] = float(rec["canary_extracted"])
        if rows:
            out[seed] = sorted(rows.items())
    return out


def plot_extraction_by_epoch(by_epoch: dict, path: str) -> None:
    fig = _figure(5, 3.5)
    ax = fig.add_subplot()
    for seed, rows in by_epoch.items():
        ax.plot([e + 1 for e, _ in rows], [c for _, c in rows], "o-", label=f"seed {seed}")
    ax.set(xlabel="epoch", ylabel="canaries extracted greedily", title="baseline: when memorization appears")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


# ---------------------------------------------------------------------------------------------------------------
# Report.
# ---------------------------------------------------------------------------------------------------------------
def detectors_over_seeds(workdir: str, seeds) -> dict:
    """Per score: AUROC mean/sd over seeds and, per top-p% cut, "positives/k" of every seed."""
    per_seed = []
    for seed in seeds:
        path = os.path.join(workdir, f"seed_{seed}", "probe", "scores", "sweep.json")
        if os.path.exists(path):
            per_seed.append(json.load(open(path)).get("detectors") or {})
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
    score_summary = json.load(open(os.path.join(probe, "scores", "scores.json")))
    extra = json.load(open(os.path.join(probe, "scores", "sweep.json")))
    extra["detectors"] = detectors_over_seeds(workdir, seeds)
    meta = json.load(open(os.path.join(probe, "dataset.json")))
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
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump(results, f, indent=2, default=str)
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
            rate, lo, hi = _extraction(row, kind)
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
