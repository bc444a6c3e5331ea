"""Pepin et al.'s zero-bias memorized sets checked on a trained classifier's training table (``gdc...pepin``).

Per metric (statistical parity over all classes, equal opportunity over all classes, equalized odds): the base bias
(largest |rate of group 1 - rate of group 0|), the closed-form bounds on the least memorized mass, the linear
programs' least and largest mass (selective and composition-only memorization), then the least selective set made
concrete (its fractional row counts rounded) and memorized by the lookup memorizer and, on the synthetic table, by
fine-tuning the MLP; the bias left is measured from the predictions (``fairness.rates``, not the LP's algebra).
Control: as many rows drawn uniformly at random, memorized the same ways.

Real table: scikit-learn's bundled diabetes table (``sklearn.datasets.load_diabetes(scaled=False)``, 442 patients,
Efron, Hastie, Johnstone & Tibshirani 2004, "Least Angle Regression"; read from the package's own data files, no
download). Group: the ``sex`` column (coded 1 / 2; the source does not say which code is which). Label: disease
progression after one year above its median (2 classes) or in its upper / middle / lower third (3 classes). Base
classifier: scikit-learn's logistic regression on the other nine columns, standardised, fit on all rows (the rows
are its training set, as memorization is of training points). Intervals: a bootstrap over rows of the (group,
label, prediction) table, the classifier held fixed.
"""

import numpy as np

from gdc.studies.classify import fairness, pepin

METRIC_NAMES = {"sp": "statistical parity", "eo": "equal opportunity", "eodds": "equalized odds"}


def measured_bias(pred_N, y_N, a_N, metric: str, num_classes: int) -> float:
    """Largest |group 0 - group 1| rate gap of the metric, from the predictions (rates of empty cells skipped)."""
    r = fairness.rates(pred_N, y_N, a_N, num_classes=num_classes)
    if metric == "sp":
        return float(np.abs(r["sp_AxK"][0] - r["sp_AxK"][1]).max())
    cell_AxY = np.zeros((2, num_classes))
    np.add.at(cell_AxY, (np.asarray(a_N), np.asarray(y_N)), 1.0)
    ok_Y = (cell_AxY > 0).all(axis=0)
    diff_YxK = np.abs(r["conf_AxYxK"][0] - r["conf_AxYxK"][1])[ok_Y]
    if metric == "eo":
        return float(np.einsum("yy->y", np.abs(r["conf_AxYxK"][0] - r["conf_AxYxK"][1]))[ok_Y].max(initial=0.0))
    return float(diff_YxK.max(initial=0.0))


def table_section(pred_N, y_N, a_N, num_classes: int, seed: int, memorize=None) -> dict:
    """Bounds, LPs and the realised least set per metric; ``memorize(in_D_N) -> pred_N`` adds a real memorizer."""
    pred_N, y_N, a_N = (np.asarray(v) for v in (pred_N, y_N, a_N))
    n_AxYxK = pepin.counts(pred_N, y_N, a_N, num_classes)
    out = {
        "group_sizes": n_AxYxK.sum(axis=(1, 2)).tolist(),
        "error_mass": float(np.mean(pred_N != y_N)),
        "equalized_odds_condition": {k: v for k, v in pepin.equalized_odds_condition(n_AxYxK).items() if k != "m_YxA"},
    }
    rng = np.random.default_rng([seed, 7])
    for metric in pepin.METRICS:
        res = {"base_bias": measured_bias(pred_N, y_N, a_N, metric, num_classes)}
        res.update({f"bound_{k}": v for k, v in pepin.mass_bounds(n_AxYxK, metric).items()})
        sel = pepin.zero_bias_lp(n_AxYxK, metric, model="selective")
        comp = pepin.zero_bias_lp(n_AxYxK, metric, model="composition")
        res.update(
            feasible=sel["feasible"],
            lp_min_mass=sel["min_mass"],
            lp_max_mass=sel["max_mass"],
            composition_feasible=comp["feasible"],
            composition_min_mass=comp["min_mass"],
            composition_max_mass=comp["max_mass"],
        )
        if sel["feasible"]:
            in_D_N = pepin.realise(pred_N, y_N, a_N, sel["x_AxYxK"], seed)
            size = int(in_D_N.sum())
            res.update(
                size=size,
                realised_mass=float(in_D_N.mean()),
                rounding_bound=pepin.rounding_bound(n_AxYxK, metric, sel["x_AxYxK"]),
                bias_after_lookup=measured_bias(fairness.lookup(pred_N, y_N, in_D_N), y_N, a_N, metric, num_classes),
            )
            rand_N = np.zeros(len(y_N), bool)
            rand_N[rng.permutation(len(y_N))[:size]] = True
            res["bias_after_random_lookup"] = measured_bias(
                fairness.lookup(pred_N, y_N, rand_N), y_N, a_N, metric, num_classes
            )
            if memorize is not None and size:
                pred_m, acc_d = memorize(in_D_N)
                res["bias_after_finetune"] = measured_bias(pred_m, y_N, a_N, metric, num_classes)
                res["finetune_accuracy_on_D"] = acc_d
                res["finetune_drift_off_D"] = float((pred_m != pred_N)[~in_D_N].mean())
                pred_r, _ = memorize(rand_N)  # control: the same fine-tuning on the random rows
                res["bias_after_random_finetune"] = measured_bias(pred_r, y_N, a_N, metric, num_classes)
        if metric == "sp":  # one class at a time: a weaker requirement than equal prediction distributions
            res["per_class"] = []
            for c in range(num_classes):
                lp = pepin.zero_bias_lp(n_AxYxK, "sp", [c], largest=False)
                b = pepin.mass_bounds(n_AxYxK, "sp", [c])
                res["per_class"].append({"feasible": lp["feasible"], "lp_min_mass": lp["min_mass"], **b})
        out[metric] = res
    return out


def diabetes_table(num_classes: int = 2) -> dict[str, np.ndarray]:
    """The bundled diabetes table: x (the nine non-sex columns), y (progression bins), a (sex code - 1)."""
    from sklearn import datasets

    d = datasets.load_diabetes(scaled=False)
    a = (d.data[:, 1] == 2).astype(np.int64)
    x = np.delete(d.data, 1, axis=1)
    edges = np.quantile(d.target, np.linspace(0, 1, num_classes + 1)[1:-1])
    y = np.searchsorted(edges, d.target, side="right").astype(np.int64)
    return {"x": x, "y": y, "a": a}


def real_table_section(num_classes: int, seed: int, bootstrap: int) -> dict:
    """The table section on the diabetes table, plus bootstrap intervals of each metric's bias and masses."""
    from sklearn import linear_model, pipeline, preprocessing

    t = diabetes_table(num_classes)
    clf = pipeline.make_pipeline(preprocessing.StandardScaler(), linear_model.LogisticRegression(max_iter=2000))
    pred = clf.fit(t["x"], t["y"]).predict(t["x"]).astype(np.int64)
    out = table_section(pred, t["y"], t["a"], num_classes, seed)
    out["num_classes"] = num_classes
    out["bootstrap"] = bootstrap
    out["train_accuracy"] = float(np.mean(pred == t["y"]))
    rng = np.random.default_rng([seed, 11])
    keys = ("base_bias", "bound_lower", "lp_min_mass", "bound_upper", "composition_min_mass")
    draws = {m: {k: [] for k in keys} for m in pepin.METRICS}
    for _ in range(bootstrap):
        idx = rng.integers(len(pred), size=len(pred))
        n_AxYxK = pepin.counts(pred[idx], t["y"][idx], t["a"][idx], num_classes)
        for m in pepin.METRICS:
            b = pepin.mass_bounds(n_AxYxK, m)
            lp = pepin.zero_bias_lp(n_AxYxK, m, largest=False)
            comp = pepin.zero_bias_lp(n_AxYxK, m, model="composition", largest=False)
            vals = (
                np.abs(pepin.gaps(n_AxYxK, m)).max(initial=0.0),
                b["lower"],
                lp["min_mass"],
                b["upper"],
                comp["min_mass"],
            )
            for k, v in zip(keys, vals, strict=True):
                draws[m][k].append(float(v))
    for m in pepin.METRICS:
        out[m]["bootstrap_95"] = {
            k: [float(q) for q in np.nanpercentile(v, [2.5, 97.5])] if np.isfinite(v).any() else None
            for k, v in draws[m].items()
        }
        lo, mid, hi = (np.asarray(draws[m][k]) for k in ("bound_lower", "lp_min_mass", "bound_upper"))
        ok = np.isfinite(mid)
        out[m]["bootstrap_feasible_share"] = float(np.mean(ok))
        # Resamples with a zero-bias set whose least mass lies between the closed-form bounds.
        inside = (lo[ok] - 1e-9 <= mid[ok]) & (mid[ok] <= hi[ok] + 1e-9)
        out[m]["bootstrap_bracketed"] = [int(inside.sum()), int(ok.sum())]
    return out
