"""A part's summary over seeds (mean and std) and report.md for every part in results.json.

``SUMMARIES[part](seeds)`` reduces the per-seed results to ``{metric: {"mean", "std"}}``; ``render(results)`` writes
the Markdown of the parts present, in the order mat, demem, fairness, demem_robust (robust_report.py), each with its
command, runtime, the paper's numbers, what was scaled down, its tables and its figures.
"""

import numpy as np

from gdc.studies.classify import common, robust_report

PAPER = {
    "mat": "the interpretable toy of Bayat et al., as re-derived in numpy for the research digest (App. A): ERM "
    "minority test accuracy 0.108, MAT 0.940",
    "demem": "DeMem (CIFAR-10, PGD-AT): privacy-leakage risk -8% at unchanged accuracy; DP-SGD on CIFAR-100 drops "
    "test accuracy 50.87% -> 20.35%",
    "fairness": "Pepin et al. (theory only): the identities are exact for a lookup memorizer; research digest App. B "
    "matches them to 1e-12 and equalises TPR with mass P(Y=c, A=a)(t_b - t_a)",
}

# Setup and what was scaled down, per part (the numbers are in the tables below each).
NOTES = {
    "mat": "Setup of the public toy, re-implemented in JAX and not scaled down: n = 1000 per split, d = 1800 "
    "(core x_1, spurious 5 x_2, 1798 example-specific N(0, 0.5^2) dimensions), 90% majority in train and 50% in the "
    "validation and test splits, bias-free linear softmax, full-batch GD with lr 1e-2 for 1000 steps for each of "
    "ERM, XRM and MAT, tau = 0.1. Seeds change the data, the initialisations and XRM's coins. The public toy reports "
    "the final step; the paper early-stops on worst-group validation accuracy (true validation groups here), so both "
    "are shown. d and m are scored on the noisy ERM run's per-step losses (loss < ln 2 = learned); under full-batch "
    "GD forget events are rare, so m is the weakest axis (research digest, recommendation 8).",
    "demem": "Scaled down from CIFAR-10 ResNets with adversarial training to natural training of 2 x 64 MLPs on a "
    "1000-row synthetic pool (4 Gaussian classes in 16 dims, 5% flipped labels, 5% atypical rows far from their class "
    "mean), 60 epochs of SGD. Each arm trains 16 models in one vmap, each on a random half of the pool; each model is "
    "LiRA's target once with the other 15 as shadows (online, fixed variance), and the ROC pools all 16 targets. The "
    "penalty form is ours (DeMem's is not public): lambda max(0, b - loss) with lambda = 2 (per-example flooding) and "
    "b = 2 nats on the flagged rows; flags come from one GenDataCarto probe run (60 epochs, eps = 0.5, median "
    "quadrants) on the whole pool, so they never depend on a target's membership. DP-SGD is "
    "optax.contrib.differentially_private_aggregate (clip 1) followed by SGD; no privacy accounting is done (the "
    "noise multipliers are for comparison only).",
    "fairness": "1500 training rows, 3 Gaussian classes in 7 dims plus the group bit; group 1 (30%) has other class "
    "priors and 1.6x noisier features. The base classifier is a 1 x 128 MLP trained 30 epochs (not to interpolation), "
    "which is also the GenDataCarto probe (eps = 0.5, median quadrants). Rates are measured on the training set, "
    "because memorization is of training points. Memorize: fine-tune the base model on all rows with D weighted 20x "
    "until D is fit (at most 10 rounds of 10 epochs); its prediction is the identity with the base model's "
    "predictions on D^c. Prune: retrain from the same initialisation without D; its prediction is the identity's "
    "un-memorized form (each point of D behaves like the base model's unmemorized points of its (y, a) cell).",
}


# The minimal-memorized-mass summary (fairness part): aggregated over seeds and tabulated in the report.
MINIMAL_MASS_METRICS = (
    "mass_misclassified",
    "mass_uniform",
    "realised_mass",
    "tpr_gap_before",
    "tpr_gap_after_lookup",
    "tpr_gap_after_finetune",
    "finetune_accuracy_on_D",
)


def _ms(values) -> dict:
    return common.mean_std([float(v) for v in values if v is not None and not isinstance(v, str)])


def summarize_mat(seeds: list[dict]) -> dict:
    out = {}
    for run_name in ("erm_no_noise", "erm", "mat"):
        for metric in (
            "train_majority",
            "train_minority",
            "test_majority",
            "test_minority",
            "early_stop_epoch",
            "early_stop_test_majority",
            "early_stop_test_minority",
        ):
            out[f"{run_name}.{metric}"] = _ms(s[run_name].get(metric) for s in seeds)
    for metric in seeds[0]["scores"]:
        out[f"scores.{metric}"] = _ms(s["scores"][metric] for s in seeds)
    return out


def summarize_demem(seeds: list[dict]) -> dict:
    out = {"flagged": _ms(s["flagged"] for s in seeds)}
    for key in ("overlap_hotspot_top_loss", "hard_in_hotspot", "hard_in_top_loss", "hard_total"):
        out[key] = _ms(s[key] for s in seeds)
    for metric in seeds[0].get("scorers", {}):
        out[f"scorers.{metric}"] = _ms(s["scorers"].get(metric) for s in seeds if "scorers" in s)
    for arm in seeds[0]["arms"]:
        for metric in sorted({m for s in seeds for m in s["arms"][arm]}):
            if "num_" in metric:
                continue
            out[f"{arm}.{metric}"] = _ms(s["arms"][arm].get(metric) for s in seeds)
    return out


def summarize_fairness(seeds: list[dict]) -> dict:
    out = {"train_accuracy": _ms(s["train_accuracy"] for s in seeds)}
    for q in seeds[0]["quadrants"]:
        rows = [s["quadrants"][q] for s in seeds]
        out[f"{q}.size"] = _ms(r["size"] for r in rows)
        out[f"{q}.base_accuracy_on_D"] = _ms(r["base_accuracy_on_D"] for r in rows)
        out[f"{q}.lookup_identity_max_abs_error"] = _ms(
            r["lookup"]["identity_max_abs_error"] for r in rows if "lookup" in r
        )
        for act in ("memorize", "prune"):
            for metric in (
                "accuracy_on_D",
                "drift_off_D",
                "sp_gap_abs_error",
                "tpr_gap_abs_error",
                "fpr_gap_abs_error",
            ):
                out[f"{q}.{act}.{metric}"] = _ms(r[act][metric] for r in rows if act in r)
            pairs = [
                (p, m)
                for r in rows
                if act in r
                for g in ("sp", "tpr", "fpr")
                for p, m in zip(r[act][f"{g}_gap_change_predicted"], r[act][f"{g}_gap_change_measured"], strict=True)
            ]
            pred, meas = np.asarray(pairs).reshape(-1, 2).T
            out[f"{q}.{act}.mean_abs_predicted_change"] = float(np.abs(pred).mean()) if pairs else None
            out[f"{q}.{act}.mean_abs_measured_change"] = float(np.abs(meas).mean()) if pairs else None
            ok = len(pairs) > 2 and pred.std() > 0 and meas.std() > 0
            out[f"{q}.{act}.pearson_predicted_measured"] = float(np.corrcoef(pred, meas)[0, 1]) if ok else None
    for metric in MINIMAL_MASS_METRICS:
        out[f"minimal_mass.{metric}"] = _ms(s["minimal_mass"][metric] for s in seeds)
    return out


SUMMARIES = {"mat": summarize_mat, "demem": summarize_demem, "fairness": summarize_fairness}


def _f(ms: dict | None, digits: int = 3) -> str:
    if not ms or not isinstance(ms, dict) or isinstance(ms.get("mean"), str):
        return "-"
    m, s = ms["mean"], ms["std"]
    if m != 0 and abs(m) < 10 ** (-digits):
        return f"{m:.1e} ± {s:.0e}"
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def _n(x, digits: int = 3) -> str:
    return "-" if x is None or isinstance(x, str) else f"{x:.{digits}f}"


def _table(header, rows) -> list[str]:
    return (
        ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
        + [""]
    )


def _render_mat(r: dict) -> list[str]:
    s = r["summarize"]
    metrics = ("train_majority", "train_minority", "test_majority", "test_minority")
    early = ("early_stop_test_majority", "early_stop_test_minority", "early_stop_epoch")
    rows = [
        [
            name,
            *(_f(s[f"{name}.{m}"]) for m in metrics),
            *(_f(s.get(f"{name}.{m}"), 1 if "epoch" in m else 3) for m in early),
        ]
        for name in ("erm_no_noise", "erm", "mat")
    ]
    out = [
        "Accuracy by group (majority: the spurious feature agrees with the label), mean ± std over seeds; final step "
        "(as the public toy reports), and test accuracy at the step of best worst-group validation accuracy (the "
        "paper's early stopping):",
        "",
    ]
    out += _table(
        [
            "run",
            "train maj",
            "train min",
            "test maj",
            "test min",
            "early-stop test maj",
            "early-stop test min",
            "early-stop step",
        ],
        rows,
    )
    out += ["Scorers on the noisy ERM run, AUROC for flagging the minority (memorized) training rows:", ""]
    out += _table(
        ["d (early loss)", "m (forget events)", "1 - p_ho (XRM)", "XRM inferred-group agreement"],
        [
            [
                _f(s["scores.auroc_minority_d"]),
                _f(s["scores.auroc_minority_m"]),
                _f(s["scores.auroc_minority_1_minus_p_ho"]),
                _f(s["scores.inferred_group_agreement"]),
            ]
        ],
    )
    return out


def _render_demem(r: dict) -> list[str]:
    s = r["summarize"]
    arms = [k.removesuffix(".test_accuracy") for k in s if k.endswith(".test_accuracy")]
    out = [
        f"Flagged set size k = {_f(s['flagged'], 1)} (the hotspot quadrant; the loss arm flags the top-k by d). "
        f"Overlap hotspot/top-loss: {_f(s['overlap_hotspot_top_loss'], 1)}; label-noise or atypical rows among "
        f"them: hotspot {_f(s['hard_in_hotspot'], 1)}, top-loss {_f(s['hard_in_top_loss'], 1)} "
        f"(of {_f(s['hard_total'], 1)}).",
        "",
    ]
    rows = [
        [
            a,
            _f(s[f"{a}.test_accuracy"]),
            _f(s[f"{a}.train_accuracy"]),
            _f(s[f"{a}.lira_all_auc"]),
            _f(s[f"{a}.lira_all_tpr_at_1pct_fpr"]),
            _f(s[f"{a}.loss_all_auc"]),
            _f(s[f"{a}.loss_all_tpr_at_1pct_fpr"]),
        ]
        for a in arms
    ]
    out += ["All pool examples (pooled over every target model):", ""]
    out += _table(["arm", "test acc", "train acc", "LiRA AUC", "LiRA TPR@1%FPR", "loss AUC", "loss TPR@1%FPR"], rows)
    rows = [
        [
            a,
            *(
                f"{_f(s[f'{a}.lira_{sub}_auc'])} / {_f(s[f'{a}.lira_{sub}_tpr_at_1pct_fpr'])}"
                for sub in ("hotspot", "top_loss", "noisy_or_atypical")
            ),
        ]
        for a in arms
    ]
    out += ["LiRA AUC / TPR@1%FPR on subsets:", ""]
    out += _table(["arm", "hotspot set", "top-loss set", "noisy or atypical rows"], rows)
    if any(k.startswith("scorers.") for k in s):
        out += [
            "Scorers under ERM: AUROC for the flipped-label or atypical rows, and Spearman with per-example LiRA "
            "exposure (mean LiRA score as a member minus as a non-member); 1 - p_ho is cross-fitted from the ERM "
            "arm's own models (each example's held-out models), calibrated as in MAT:",
            "",
        ]
        out += _table(
            ["scorer", "AUROC flipped/atypical", "Spearman with exposure"],
            [
                [name, _f(s.get(f"scorers.auroc_hard_{key}")), _f(s.get(f"scorers.spearman_exposure_{key}"))]
                for name, key in (("d (early loss)", "d"), ("m (forget events)", "m"), ("1 - p_ho", "1_minus_p_ho"))
            ],
        )
    return out


def _render_fairness(r: dict) -> list[str]:
    s = r["summarize"]
    qs = sorted({k.removesuffix(".size") for k in s if k.endswith(".size")})
    out = [
        f"Base model train accuracy {_f(s['train_accuracy'])}. Errors: max over the 3 classes of "
        "|predicted - measured| change of the group-0 minus group-1 gap (mean ± std over seeds); the last three "
        "columns pool the 3 gaps x 3 classes x seeds.",
        "",
    ]
    rows = []
    for q in qs:
        for act in ("memorize", "prune"):
            rows.append(
                [
                    q,
                    _f(s[f"{q}.size"], 1),
                    _f(s.get(f"{q}.base_accuracy_on_D")),
                    act,
                    _f(s[f"{q}.lookup_identity_max_abs_error"]),
                    _f(s[f"{q}.{act}.accuracy_on_D"]),
                    _f(s[f"{q}.{act}.drift_off_D"]),
                    *(_f(s[f"{q}.{act}.{m}_gap_abs_error"]) for m in ("sp", "tpr", "fpr")),
                    _n(s.get(f"{q}.{act}.mean_abs_predicted_change")),
                    _n(s.get(f"{q}.{act}.mean_abs_measured_change")),
                    _n(s.get(f"{q}.{act}.pearson_predicted_measured")),
                ]
            )
    out += _table(
        [
            "D",
            "size of D",
            "base acc on D",
            "action",
            "lookup identity error",
            "acc on D after",
            "drift off D",
            "SP err",
            "TPR err",
            "FPR err",
            "mean abs pred. change",
            "mean abs meas. change",
            "Pearson(pred, meas)",
        ],
        rows,
    )
    out += ["Minimal memorized mass equalising the TPR of the class with the largest base TPR gap:", ""]
    out += _table(
        [
            "mass (misclassified)",
            "mass (uniform)",
            "realised",
            "TPR gap before",
            "after (lookup)",
            "after (fine-tuned MLP)",
            "fine-tune acc on D",
        ],
        [[_f(s[f"minimal_mass.{m}"], 4) for m in MINIMAL_MASS_METRICS]],
    )
    return out


TITLES = {
    "mat": "1. MAT on the interpretable toy",
    "demem": "2. DeMem-style selective penalty vs DP-SGD",
    "fairness": "3. Fairness identities (Pepin et al.)",
}
RENDER = {"mat": _render_mat, "demem": _render_demem, "fairness": _render_fairness}
# DeMem inside adversarial training: its summary, text and tables live in robust_report.
PAPER["demem_robust"], NOTES["demem_robust"], TITLES["demem_robust"] = (
    robust_report.PAPER,
    robust_report.NOTES,
    robust_report.TITLE,
)
SUMMARIES["demem_robust"], RENDER["demem_robust"] = robust_report.summarize, robust_report.render


def render(results: dict) -> str:
    lines = ["# Memorization in classifiers: MAT, DeMem, fairness identities", ""]
    total = sum(r.get("seconds_total", 0.0) for r in results.values())
    lines += [
        f"Reproduce each part with its command (from the repository root); {len(results)} part(s) below, "
        f"{total / 60:.1f} min of compute in all (seed runs, excluding start-up).",
        "",
    ]
    for part in ("mat", "demem", "fairness", "demem_robust"):
        if part not in results:
            continue
        r = results[part]
        lines += [f"## {TITLES[part]}", "", f"    {r.get('command') or '(command not recorded)'}", ""]
        lines += [
            f"Runtime {r['seconds_total']:.0f} s over {len(r['seeds'])} seeds ({r['environment']}). "
            f"Paper: {PAPER[part]}.",
            "",
            NOTES[part],
            "",
        ]
        lines += RENDER[part](r)
        lines += [f"![{p}]({p})" for p in r["plots"]] + [""]
    return "\n".join(lines)
