"""The zero-bias part of the fairness report: Pepin et al.'s linear programs, mass bounds and equalized-odds
condition (``fairness_lp``) summarised over seeds (95% t-intervals) and, on the diabetes table, with bootstrap
intervals over rows."""

import numpy as np
from scipy import stats

from gdc.studies.classify import pepin

KEYS = (
    "base_bias",
    "bound_lower",
    "lp_min_mass",
    "bound_upper",
    "composition_min_mass",
    "lp_max_mass",
    "realised_mass",
    "bias_after_lookup",
    "bias_after_random_lookup",
    "bias_after_finetune",
    "bias_after_random_finetune",
    "finetune_drift_off_D",
)
BOOT_KEYS = ("base_bias", "bound_lower", "lp_min_mass", "bound_upper", "composition_min_mass")


def _num(v) -> float:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else float("nan")


def t_interval(values) -> dict:
    """Mean and 95% t-interval over the finite values (n = how many)."""
    v = np.asarray([_num(x) for x in values], np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {"mean": None, "lo": None, "hi": None, "n": 0}
    half = stats.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size) if v.size > 1 else float("nan")
    return {"mean": float(v.mean()), "lo": float(v.mean() - half), "hi": float(v.mean() + half), "n": int(v.size)}


def _brackets(r: dict) -> bool | None:
    lo, mid, hi = (_num(r.get(k)) for k in ("bound_lower", "lp_min_mass", "bound_upper"))
    if not np.isfinite(mid):
        return None
    return bool(lo - 1e-9 <= mid <= (hi + 1e-9 if np.isfinite(hi) else np.inf))


def _within_rounding(r: dict) -> bool | None:
    """The lookup memorizer's measured bias is no larger than rounding the LP's set to whole rows can leave."""
    bias, bound = _num(r.get("bias_after_lookup")), _num(r.get("rounding_bound"))
    return bool(bias <= bound + 1e-12) if np.isfinite(bias) and np.isfinite(bound) else None


def summarize(seeds: list[dict]) -> dict:
    """Synthetic table: every key's t-interval over seeds, feasibility and bracketing counts; real tables: seed 0."""
    rows = [s["zero_bias"] for s in seeds if "zero_bias" in s]
    if not rows:
        return {}
    out = {"synthetic": {}, "seeds": len(rows)}
    for m in pepin.METRICS:
        res = [r["synthetic"][m] for r in rows]
        out["synthetic"][m] = {k: t_interval(x.get(k) for x in res) for k in KEYS}
        out["synthetic"][m]["feasible_seeds"] = sum(bool(x["feasible"]) for x in res)
        out["synthetic"][m]["bracketed_seeds"] = sum(_brackets(x) is True for x in res)
        out["synthetic"][m]["within_rounding_seeds"] = sum(_within_rounding(x) is True for x in res)
        if m == "sp":
            k = len(res[0]["per_class"])
            out["synthetic"]["sp"]["per_class_feasible_seeds"] = [
                sum(bool(x["per_class"][c]["feasible"]) for x in res) for c in range(k)
            ]
            out["synthetic"]["sp"]["per_class_bracketed_seeds"] = [
                sum(
                    _brackets(
                        {("bound_" + k if k in ("lower", "upper") else k): v for k, v in x["per_class"][c].items()}
                    )
                    is True
                    for x in res
                )
                for c in range(k)
            ]
            out["synthetic"]["sp"]["per_class_min_mass"] = [
                t_interval(x["per_class"][c]["lp_min_mass"] for x in res) for c in range(k)
            ]
    out["synthetic"]["eodds_condition_holds_seeds"] = sum(
        bool(r["synthetic"]["equalized_odds_condition"]["holds"]) for r in rows
    )
    out["synthetic"]["error_mass"] = t_interval(r["synthetic"]["error_mass"] for r in rows)
    for m in pepin.METRICS:
        out["synthetic"][m]["rounding_bound"] = t_interval(r["synthetic"][m].get("rounding_bound") for r in rows)
    for name in sorted(k for k in rows[0] if k.startswith("diabetes_")):
        real = rows[0][name]
        out[name] = {
            "train_accuracy": real["train_accuracy"],
            "group_sizes": real["group_sizes"],
            "eodds_condition": real["equalized_odds_condition"],
            "bootstrap": real["bootstrap"],
        }
        for m in pepin.METRICS:
            extra = ("feasible", "rounding_bound", "bootstrap_95", "bootstrap_feasible_share", "bootstrap_bracketed")
            out[name][m] = {k: real[m].get(k) for k in (*KEYS, *extra)}
            out[name][m]["bracketed"] = _brackets(real[m])
            out[name][m]["within_rounding"] = _within_rounding(real[m])
    return out


def _ci(ms: dict | None, digits: int = 3) -> str:
    if not ms or ms.get("mean") is None:
        return "n/a"
    if ms["n"] < 2:
        return f"{ms['mean']:.{digits}f}"
    return f"{ms['mean']:.{digits}f} [{ms['lo']:.{digits}f}, {ms['hi']:.{digits}f}]"


def _pt(v, boot=None, digits: int = 3) -> str:
    x = _num(v)
    if not np.isfinite(x):
        return "n/a"
    return f"{x:.{digits}f}" + (f" [{boot[0]:.{digits}f}, {boot[1]:.{digits}f}]" if boot else "")


HEADER = (
    "metric",
    "base bias",
    "zero-bias set exists",
    "lower bound",
    "least mass (LP)",
    "upper bound",
    "least mass, composition only (LP)",
    "largest mass (LP)",
    "realised least set: mass",
    "bias after: lookup",
    "random rows, same count",
    "fine-tuned MLP",
    "fine-tuned MLP, random rows",
)

INTRO = (
    "A memorized set D is described by how many rows it takes from each (group, label, base prediction) cell; every "
    "rate of the lookup memorizer (the label on D, the base prediction elsewhere) is linear in those counts, so the "
    "zero-bias sets form a polytope and their least and largest mass are linear programs (scipy's HiGHS). "
    "'Composition only' restricts D to a share of each (group, label) cell taken blind to the base model's errors, "
    "as in the paper's expressions (D's label and group distribution and f's bias off D). Bounds (closed forms, our "
    "derivation where the paper's statement is not available in full): equal opportunity, lower = sum over classes "
    "of P(Y=c, A=lo)(t_hi - t_lo), upper = the same divided by (1 - t_lo); equalized odds, lower = sum over "
    "off-diagonal entries of P(Y=y, A=hi)|gap|, upper = the composition-only least mass from the ratio condition; "
    "statistical parity, lower = min_a P(A=a) max(largest |gap|, sum |gap| / 2), upper = max_a P(A=a)|gap| for two "
    "classes, else the error mass, and none where a class's reachable rates [P(f=c, Y=c | a), P(f=c or Y=c | a)] do "
    "not overlap. Bias = the largest |group 0 - group 1| gap of the metric's rates (SP: P(f=c | a) for every c; EO: "
    "TPR of every class; equalized odds: every entry of the confusion rows), measured from predictions. The least "
    "set is made concrete by rounding its row counts; the control memorizes as many rows drawn uniformly."
)


def render(s: dict) -> list[str]:
    if not s:
        return []
    syn, n = s["synthetic"], s["seeds"]
    out = ["### Pepin et al.'s results: zero-bias sets, mass bounds, equalized-odds condition", "", INTRO, ""]
    out += [
        f"Synthetic table (the base MLP's training predictions; error mass {_ci(syn['error_mass'])}), mean and 95% "
        f"t-interval over {n} seeds (n/a: no zero-bias set, or not applicable):",
        "",
    ]
    rows = []
    for m in pepin.METRICS:
        r = syn[m]
        rows.append(
            [
                m,
                _ci(r["base_bias"]),
                f"{r['feasible_seeds']}/{n}",
                *(_ci(r[k], 4) for k in KEYS[1:7]),
                *(_ci(r[k]) for k in KEYS[7:11]),
            ]
        )
    out += _table(HEADER, rows)
    sp = syn["sp"]
    per_class = ", ".join(
        f"class {c}: {f}/{n} ({_ci(ms, 4)}; between the bounds in {b}/{f})"
        for c, (f, ms, b) in enumerate(
            zip(
                sp["per_class_feasible_seeds"],
                sp["per_class_min_mass"],
                sp.get("per_class_bracketed_seeds", ["?"] * len(sp["per_class_min_mass"])),
                strict=True,
            )
        )
    )
    out += [
        "The LP's least mass lies between the closed-form bounds in "
        + ", ".join(f"{syn[m]['bracketed_seeds']}/{syn[m]['feasible_seeds']}" for m in pepin.METRICS)
        + " of the seeds with a zero-bias set (SP, EO, equalized odds). "
        f"The lookup memorizer's measured bias is within what rounding the LP's set to "
        f"whole rows can leave (EO bound {_ci(syn['eo']['rounding_bound'])}, equalized odds "
        f"{_ci(syn['eodds']['rounding_bound'])}) in {syn['eo']['within_rounding_seeds']}/{n} and "
        f"{syn['eodds']['within_rounding_seeds']}/{n} seeds. SP one class at a time (seeds with a zero-bias set, least "
        f"mass): {per_class}. "
        f"Equalized odds, ratio condition (off-diagonal confusion rows proportional between groups for every label) "
        f"holds in {syn['eodds_condition_holds_seeds']}/{n} seeds; where it fails, composition-only memorization "
        f"reaches equalized odds only by memorizing whole (label) cells of both groups. Fine-tuned MLP: drift off D "
        f"{_ci(syn['eo']['finetune_drift_off_D'])} (EO set), {_ci(syn['eodds']['finetune_drift_off_D'])} "
        f"(equalized-odds set).",
        "",
    ]
    for name in sorted(k for k in s if k.startswith("diabetes_")):
        real = s[name]
        k = name.split("_")[1]
        cond = real["eodds_condition"]
        out += [
            f"Real table: scikit-learn's bundled diabetes table (442 patients, Efron et al. 2004), group = sex (codes "
            f"1 / 2: {real['group_sizes'][0]:.0f} / {real['group_sizes'][1]:.0f} rows), label = disease progression "
            f"in {k} quantile bins, base model = logistic regression on the other nine columns (training accuracy "
            f"{real['train_accuracy']:.3f}). Point values; 95% bootstrap intervals over rows "
            f"({real['bootstrap']} resamples, classifier fixed) in brackets. Equalized-odds ratio condition: "
            f"{'holds' if cond['holds'] else 'fails'} (ratios {', '.join(f'{r:.2f}' for r in cond['rho_Y'])}). "
            "Least mass between the bounds (and in how many resamples with a zero-bias set) / lookup bias within "
            "the rounding bound: "
            + ", ".join(
                f"{m} {_yn(real[m]['bracketed'])} ({_frac(real[m].get('bootstrap_bracketed'))}) / "
                f"{_yn(real[m]['within_rounding'])} ({_pt(real[m]['rounding_bound'], None, 4)})"
                for m in pepin.METRICS
            )
            + ".",
            "",
        ]
        rows = []
        for m in pepin.METRICS:
            r = real[m]
            boot = r.get("bootstrap_95") or {}
            rows.append(
                [
                    m,
                    _pt(r["base_bias"], boot.get("base_bias")),
                    f"{'yes' if r['feasible'] else 'no'} ({100 * (r.get('bootstrap_feasible_share') or 0):.0f}% of "
                    "resamples)",
                    *(_pt(r[key], boot.get(key), 4) for key in KEYS[1:5]),
                    _pt(r["lp_max_mass"], None, 4),
                    _pt(r["realised_mass"], None, 4),
                    _pt(r["bias_after_lookup"]),
                    _pt(r["bias_after_random_lookup"]),
                    "n/a",
                    "n/a",
                ]
            )
        out += _table(HEADER, rows)
    return out


def _frac(kn) -> str:
    return "n/a" if not kn else f"{kn[0]}/{kn[1]}"


def _yn(v) -> str:
    return "n/a" if v is None else ("yes" if v else "no")


def _table(header, rows) -> list[str]:
    return (
        ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
        + [""]
    )
