"""A part's summary over seeds (mean and std) and report.md for every part in results.json.

``SUMMARIES[part](seeds)`` reduces the per-seed results to ``{metric: {"mean", "std"}}``; ``render(results)`` writes
the Markdown of the parts present, in the order mat, demem, fairness, demem_robust (robust_report.py), each with its
command, runtime, the paper's numbers, what was scaled down, its tables and its figures.
"""

import numpy as np

from gdc.studies.classify import common, demem_report, report_pepin, robust_report

# What stands beside our numbers: the paper's own figures where it gives them, and otherwise what the number is.
REFERENCE = {
    "mat": "Paper: we have no figure from the paper for this toy to set beside ours (its reported results are on "
    "Waterbirds, CelebA, MultiNLI and CivilComments). For comparison only, our own earlier numpy re-derivation of the "
    "public toy (not a figure from the paper): ERM minority test accuracy 0.108, MAT 0.940",
    "demem": "Paper: DeMem (CIFAR-10, PGD-AT): privacy-leakage risk -8% at unchanged accuracy; DP-SGD on CIFAR-100 "
    "drops test accuracy 50.87% -> 20.35%",
    "fairness": "Paper: Pepin et al. is theory only, with no numbers to compare: explicit bias expressions, zero-bias "
    "memorized sets as linear-constraint systems, upper and lower bounds on the memorized mass for statistical parity "
    "and equal opportunity, and a ratio condition for equalized odds",
}

# Setup and what was scaled down, per part (the numbers are in the tables below each).
NOTES = {
    "mat": "Setup of the public toy, re-implemented in JAX and not scaled down: n = 1000 per split, d = 1800 "
    "(core x_1, spurious 5 x_2, 1798 example-specific N(0, 0.5^2) dimensions), 90% majority in train and 50% in the "
    "validation and test splits, bias-free linear softmax, full-batch GD with lr 1e-2 for 1000 steps for each of "
    "ERM, XRM and MAT, tau = 0.1. Seeds change the data, the initialisations and XRM's coins. The public toy reports "
    "the final step; the paper early-stops on worst-group validation accuracy (true validation groups here), so both "
    "are shown. d and m are scored on the noisy ERM run's per-step losses (loss < ln 2 = learned); under full-batch "
    "GD forget events are rare, so m is the weakest axis.",
    "demem": "Scaled down from CIFAR-10 ResNets with adversarial training to natural training of 2 x 64 MLPs on a "
    "1000-row synthetic pool (4 Gaussian classes in 16 dims, 5% flipped labels, 5% atypical rows far from their class "
    "mean), 60 epochs of SGD. Each arm trains 16 models in one vmap, each on a random half of the pool and from its "
    "own initialisation (the same 16 initialisations in every arm); each model is LiRA's target once with the other "
    "15 as shadows (fixed variance, per-example medians; online with in and out shadows, offline with out shadows "
    "only), and the ROC pools all 16 targets (8000 non-member pairs, so 0.1% FPR is 8 pairs). The penalty form is "
    "ours (DeMem's is not public): lambda max(0, b - loss) with lambda = 2 (per-example flooding) and b = 2 nats on "
    "the flagged rows; flags come from one GenDataCarto probe run (60 epochs, eps = 0.5, median quadrants) on the "
    "whole pool, so they never depend on a target's membership. DP-SGD samples each example with probability "
    "q = 0.1 per step (Poisson, a padded batch with a mask), clips per-example gradients to norm 1, adds Gaussian "
    "noise and divides by the expected batch size, for 600 steps (the non-private arms' number of steps and batch "
    "size); noise multipliers are calibrated to target epsilons by the RDP accountant. The untrained arm (the 16 "
    "initialisations) is the attacks' control.",
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
    out["zero_bias"] = report_pepin.summarize(seeds)
    return out


SUMMARIES = {"mat": summarize_mat, "demem": demem_report.summarize, "fairness": summarize_fairness}


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


def _render_fairness(r: dict) -> list[str]:
    s = r["summarize"]
    qs = sorted({k.removesuffix(".size") for k in s if k.endswith(".size")})
    out = [
        *report_pepin.render(s.get("zero_bias", {})),
        "### Derived check: conditional-probability identities (exact by construction)",
        "",
        "Conditioning on D writes every rate of the lookup memorizer through D's composition and the base model's "
        "rates off D; this is probability algebra, exact by construction (not one of the paper's results), so its "
        "error only checks the code. It then predicts what a real network does when it memorizes D (fine-tuning) "
        "and, in an un-memorized form (each row of D behaving like the base model's unmemorized rows of its (y, a) "
        "cell: an approximation), what pruning D and retraining does; no identity applies to the pruned model, "
        "hence n/a in its identity column.",
        "",
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
                    _f(s[f"{q}.lookup_identity_max_abs_error"]) if act == "memorize" else "n/a",
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
            "identity error (lookup)",
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
    "fairness": "3. Memorization and fairness (Pepin et al.)",
}
RENDER = {"mat": _render_mat, "demem": demem_report.render, "fairness": _render_fairness}
# DeMem inside adversarial training: its summary, text and tables live in robust_report.
REFERENCE["demem_robust"], NOTES["demem_robust"], TITLES["demem_robust"] = (
    "Paper: " + robust_report.PAPER,
    robust_report.NOTES,
    robust_report.TITLE,
)
SUMMARIES["demem_robust"], RENDER["demem_robust"] = robust_report.summarize, robust_report.render


def render(results: dict) -> str:
    lines = ["# Memorization in classifiers: MAT, DeMem, fairness (Pepin et al.)", ""]
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
            f"Runtime {r['seconds_total']:.0f} s over {len(r['seeds'])} seeds ({r['environment']}). {REFERENCE[part]}.",
            "",
            NOTES[part],
            "",
        ]
        lines += RENDER[part](r)
        lines += [f"![{p}]({p})" for p in r["plots"]] + [""]
    return "\n".join(lines)
