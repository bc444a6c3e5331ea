"""The DeMem part's summary over seeds and its Markdown: arms with their epsilon, t-intervals, DP vs selective.

Intervals are 95% Student-t intervals over seeds (3 seeds: t = 4.30, so they are wide). The DP-vs-selective
comparison pairs the arms seed by seed (same pool, halves and initialisations): for each DP arm and each non-private
arm, the interval of the difference (DP minus the other) in test accuracy and in LiRA TPR at 1% and 0.1% FPR, and a
verdict read from those intervals alone: "DP dominates" needs the TPR@1%FPR interval below 0 and the accuracy
interval above 0; "DP more private, no accuracy difference resolved" when the accuracy interval contains 0; "DP
more private, less accurate" when it lies below 0; "no privacy difference resolved" when the TPR interval
contains 0; "DP less private" when the TPR interval lies above 0.
"""

import numpy as np
import scipy.stats

ATTACKS = (("lira", "LiRA online"), ("lira_offline", "LiRA offline"), ("loss", "loss"))
PAIRED = ("test_accuracy", "lira_all_tpr_at_1pct_fpr", "lira_all_tpr_at_0.1pct_fpr", "lira_all_auc")


def interval(values) -> dict:
    """{"mean", "std" (ddof 0), "n", "lo", "hi"}: the 95% t-interval of the mean (NaN bounds for n < 2)."""
    v = np.asarray([x for x in values if x is not None and not isinstance(x, str) and np.isfinite(x)], np.float64)
    if v.size == 0:
        return {"mean": float("nan"), "std": 0.0, "n": 0, "lo": float("nan"), "hi": float("nan")}
    half = scipy.stats.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size) if v.size > 1 else float("nan")
    m = float(v.mean())
    return {"mean": m, "std": float(v.std()), "n": int(v.size), "lo": m - half, "hi": m + half}


def verdict(acc: dict, tpr: dict) -> str:
    """The DP-vs-other verdict from the paired intervals of accuracy and TPR@1%FPR (module docstring)."""
    if not tpr["n"] > 1:
        return "not resolved (one seed)"
    if tpr["lo"] > 0:
        return "DP less private"
    if tpr["hi"] >= 0:
        return "no privacy difference resolved"
    if acc["lo"] > 0:
        return "DP dominates"
    return "DP more private, less accurate" if acc["hi"] < 0 else "DP more private, no accuracy difference resolved"


def summarize(seeds: list[dict]) -> dict:
    out = {"flagged": interval(s["flagged"] for s in seeds)}
    for key in ("overlap_hotspot_top_loss", "hard_in_hotspot", "hard_in_top_loss", "hard_total"):
        out[key] = interval(s[key] for s in seeds)
    for metric in seeds[0].get("scorers", {}):
        out[f"scorers.{metric}"] = interval(s["scorers"].get(metric) for s in seeds if "scorers" in s)
    arms = list(seeds[0]["arms"])
    for arm in arms:
        for metric in sorted({m for s in seeds for m in s["arms"][arm]}):
            if "num_" not in metric and not metric.startswith("epsilon"):
                out[f"{arm}.{metric}"] = interval(s["arms"][arm].get(metric) for s in seeds)
    out["dp"] = seeds[0].get("dp", {})  # the accounting depends on the config only
    others = [a for a in arms if a not in out["dp"] and a != "untrained"]
    out["paired"] = {}
    for dp in out["dp"]:
        for other in others:
            row = {m: interval(s["arms"][dp][m] - s["arms"][other][m] for s in seeds) for m in PAIRED}
            row["verdict"] = verdict(row["test_accuracy"], row["lira_all_tpr_at_1pct_fpr"])
            out["paired"][f"{dp}-vs-{other}"] = row
    return out


def _finite(v) -> bool:
    return isinstance(v, int | float) and bool(np.isfinite(v))  # results.json spells NaN as the string "nan"


def _ci(x: dict | None, digits: int = 3) -> str:
    if not x or not isinstance(x, dict) or not _finite(x.get("mean")):
        return "-"
    if not (_finite(x.get("lo")) and _finite(x.get("hi"))):
        return f"{x['mean']:.{digits}f}"
    return f"{x['mean']:.{digits}f} [{x['lo']:.{digits}f}, {x['hi']:.{digits}f}]"


def _eps(acc: dict | None) -> str:
    if acc is None:
        return "∞ (none)"
    return f"{acc['epsilon_rdp']:.2f} ({acc['epsilon_pld']:.2f})"


def _table(header, rows) -> list[str]:
    return (
        ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
        + [""]
    )


def render(r: dict) -> list[str]:
    s = r["summarize"]
    dp = s.get("dp", {})
    arms = [k.removesuffix(".test_accuracy") for k in s if k.endswith(".test_accuracy")]
    seeds = r.get("seeds", [])

    def per_seed(key):  # counts: the mean and each seed's value (a t-interval of 3 counts says little)
        return f"{s[key]['mean']:.1f} (seeds: {', '.join(str(x[key]) for x in seeds)})"

    out = [
        f"Flagged set size k = {per_seed('flagged')} (the hotspot quadrant; the loss arm flags the top-k by d). "
        f"Overlap hotspot/top-loss: {per_seed('overlap_hotspot_top_loss')}; label-noise or atypical rows among "
        f"them: hotspot {per_seed('hard_in_hotspot')}, top-loss {per_seed('hard_in_top_loss')} "
        f"(of {per_seed('hard_total')}). Other values are means with 95% t-intervals over seeds.",
        "",
    ]
    if dp:
        out += [
            "DP-SGD accounting (Poisson sampling, add/remove-one neighbours, delta as listed; epsilon from "
            "dp_accounting's RDP accountant, the tighter PLD value in brackets; the extra delta term bounds the chance "
            "that a step "
            "held more examples than the padded batch):",
            "",
        ]
        out += _table(
            ["arm", "noise multiplier", "q", "steps", "padded batch", "delta", "epsilon RDP (PLD)", "extra delta"],
            [
                [
                    name,
                    f"{a['noise_multiplier']:.3f}",
                    f"{a['sampling_rate']:g}",
                    a["steps"],
                    a["padded_batch"],
                    f"{a['delta']:g}",
                    _eps(a),
                    f"{a['delta_truncation_term']:.1e}",
                ]
                for name, a in dp.items()
            ],
        )
    out += [
        "All pool examples (pooled over every target model); epsilon ∞ = no formal guarantee:",
        "",
    ]
    header = ["arm", "epsilon RDP (PLD)", "test acc", "train acc"]
    for _, label in ATTACKS:
        header += [f"{label} AUC", f"{label} TPR@0.1%FPR", f"{label} TPR@1%FPR"]
    rows = []
    for a in arms:
        row = [a, _eps(dp.get(a)), _ci(s[f"{a}.test_accuracy"]), _ci(s[f"{a}.train_accuracy"])]
        for key, _ in ATTACKS:
            row += [_ci(s.get(f"{a}.{key}_all_{m}")) for m in ("auc", "tpr_at_0.1pct_fpr", "tpr_at_1pct_fpr")]
        rows.append(row)
    out += _table(header, rows)
    if s.get("paired"):
        out += [
            "DP arms against the non-private arms, paired by seed (DP minus the other arm; 95% t-intervals). The "
            "non-private arms have no epsilon, so no comparison is at matched epsilon; matched utility is read from "
            "the accuracy difference:",
            "",
        ]
        out += _table(
            ["DP arm", "vs", "Δ test acc", "Δ LiRA TPR@1%FPR", "Δ LiRA TPR@0.1%FPR", "Δ LiRA AUC", "verdict"],
            [[*key.split("-vs-"), *(_ci(row[m]) for m in PAIRED), row["verdict"]] for key, row in s["paired"].items()],
        )
    rows = [
        [
            a,
            *(
                f"{_ci(s.get(f'{a}.lira_{sub}_auc'))} / {_ci(s.get(f'{a}.lira_{sub}_tpr_at_1pct_fpr'))}"
                for sub in ("hotspot", "top_loss", "noisy_or_atypical")
            ),
        ]
        for a in arms
    ]
    out += ["LiRA online AUC / TPR@1%FPR on subsets:", ""]
    out += _table(["arm", "hotspot set", "top-loss set", "noisy or atypical rows"], rows)
    if any(k.startswith("scorers.") for k in s):
        out += [
            "Scorers under ERM: AUROC for the flipped-label or atypical rows, and Spearman with per-example LiRA "
            "exposure (mean online LiRA score as a member minus as a non-member); 1 - p_ho is cross-fitted from the "
            "ERM arm's own models (each example's held-out models), calibrated as in MAT:",
            "",
        ]
        out += _table(
            ["scorer", "AUROC flipped/atypical", "Spearman with exposure"],
            [
                [name, _ci(s.get(f"scorers.auroc_hard_{key}")), _ci(s.get(f"scorers.spearman_exposure_{key}"))]
                for name, key in (("d (early loss)", "d"), ("m (forget events)", "m"), ("1 - p_ho", "1_minus_p_ho"))
            ],
        )
    return out
