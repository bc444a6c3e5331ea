"""Sharpness of the learned log-density over a grid of steps t and thresholds kappa, for flagging replicas.

At each step index t of ``tabular.sharp_steps`` the eigenvalues of the symmetrised score Jacobian
(``sharpness.eigenvalues``) are taken at every generated row. Their scale grows like 1 / (1 - alpha_bar_t) as t
shrinks, so a fixed kappa is meaningless across t: kappa is set at each t to the ``tabular.sharp_quantiles`` of the
magnitudes |lambda| of the negative eigenvalues pooled over all generated rows (label-free: replicas and the other
rows together). Per (t, kappa): the AUROC of #(lambda < -kappa) for the replica label; per t: the AUROCs of
-sum(negative eigenvalues) and -trace. The same statistics of the untrained model (the seed's initial parameters, same
rows) are the control: what the architecture alone gives. Over seeds: mean with a 95% Student-t interval.
"""

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from gdc.scoring.sweep import detector_auroc  # noqa: E402
from gdc.studies.carto.verdicts import mean_interval  # noqa: E402
from gdc.studies.tabular import sharpness  # noqa: E402


def kappa_grid(eigs_QxD: np.ndarray, quantiles) -> np.ndarray:
    """kappa at ``quantiles`` of |lambda| over the negative eigenvalues of all rows (of all of them if none is)."""
    neg = -eigs_QxD[eigs_QxD < 0]
    pool = neg if neg.size else np.abs(eigs_QxD).ravel()
    return np.quantile(pool, np.asarray(quantiles, np.float64)) if pool.size else np.zeros(len(quantiles))


def _group_spectrum(eigs_QxD: np.ndarray, rows_Q: np.ndarray) -> list:
    """Mean of each ascending eigenvalue over the rows; Nones when the group is empty."""
    if not rows_Q.any():
        return [None] * eigs_QxD.shape[1]
    return eigs_QxD[rows_Q].mean(axis=0).tolist()


def at_step(eigs_QxD: np.ndarray, replica_Q: np.ndarray, quantiles) -> dict:
    """The statistics of one step: kappas, AUROCs, the eigenvalue scale, mean spectra of replicas and other rows."""
    replica_Q = np.asarray(replica_Q, bool)
    kappas = kappa_grid(eigs_QxD, quantiles)
    full = sharpness.summary(eigs_QxD, 0.0)
    return {
        "kappa": kappas.tolist(),
        "auroc_count": [detector_auroc(sharpness.summary(eigs_QxD, k)["count_below"], replica_Q) for k in kappas],
        "auroc_neg_sum": detector_auroc(-full["neg_sum"], replica_Q),
        "auroc_neg_trace": detector_auroc(-full["trace"], replica_Q),
        "eig_min": float(eigs_QxD.min()) if eigs_QxD.size else None,
        "eig_median_abs": float(np.median(np.abs(eigs_QxD))) if eigs_QxD.size else None,
        "eig_max": float(eigs_QxD.max()) if eigs_QxD.size else None,
        "spectrum_replica": _group_spectrum(eigs_QxD, replica_Q),
        "spectrum_other": _group_spectrum(eigs_QxD, ~replica_Q),
    }


def sweep(graphdef, params, params_untrained, x_QxD: np.ndarray, replica_Q: np.ndarray, steps, quantiles) -> dict:
    """{str(t): {"trained": at_step(...), "untrained": at_step(...)}} over the generated rows ``x_QxD``."""
    out = {}
    for t in steps:
        out[str(t)] = {
            name: at_step(sharpness.eigenvalues(graphdef, p, x_QxD, int(t)), replica_Q, quantiles)
            for name, p in (("trained", params), ("untrained", params_untrained))
        }
    return out


def location_control(x_QxD: np.ndarray, replica_Q: np.ndarray) -> dict:
    """AUROC of the row's norm (its distance from the standardised table's centre) for the replica label: what a
    statistic that only knows where a row lies gives, beside the untrained model."""
    return {"auroc_row_norm": detector_auroc(np.linalg.norm(np.asarray(x_QxD, np.float64), axis=1), replica_Q)}


def _ci(values) -> str:
    v = [x for x in values if x is not None and np.isfinite(x)]
    m, lo, hi = mean_interval(v)
    if np.isnan(m):
        return "n/a"
    return f"{m:.3f}" if np.isnan(lo) else f"{m:.3f} [{lo:.3f}, {hi:.3f}]"


def _reading(values) -> str:
    v = [x for x in values if x is not None and np.isfinite(x)]
    _, lo, hi = mean_interval(v)
    if np.isnan(lo):
        return "one seed: no interval"
    return "above chance" if lo > 0.5 else "below chance (inverted)" if hi < 0.5 else "includes chance (0.5)"


def markdown(per_seed: list[dict], cfg: dict) -> list[str]:
    """The report section (empty when the seeds carry no sweep)."""
    if not per_seed or "sharpness_sweep" not in per_seed[0]:
        return []
    sw = [r["sharpness_sweep"] for r in per_seed]
    steps = list(sw[0])
    qs = list(cfg.get("sharp_quantiles", ()))
    what = "the numeric columns (categories held at the row's)" if cfg.get("model") == "multinomial" else "all columns"
    lines = [
        "",
        "## Sharpness sweep over the step t and the threshold kappa",
        "",
        f"Eigenvalues of the symmetrised Jacobian of the learned score over {what}, at every generated row of the "
        "final probe model. kappa at each t: quantiles of |lambda| over the negative eigenvalues of all generated "
        "rows (replicas and others pooled). AUROC for the replica label; mean and 95% t-interval over seeds "
        f"({len(sw)}). Control: the same statistics of the seed's untrained model at the same rows. The paper "
        "reports no number for tabular rows (its detection AUCs are for text-conditioned image models and another "
        "statistic), so none is set beside ours. Spectra: `tabular_sharpness_spectrum.png`.",
        "",
        "| t | eigenvalues min / median abs / max | AUROC -sum(neg) | reading | AUROC -trace | untrained -sum(neg) |",
        "|---|---|---|---|---|---|",
    ]
    for t in steps:
        tr = [s[t]["trained"] for s in sw]
        un = [s[t]["untrained"] for s in sw]
        scale = " / ".join(
            "n/a" if any(x[k] is None for x in tr) else f"{np.mean([x[k] for x in tr]):.3g}"
            for k in ("eig_min", "eig_median_abs", "eig_max")
        )
        lines.append(
            f"| {t} | {scale} | {_ci([x['auroc_neg_sum'] for x in tr])} | {_reading([x['auroc_neg_sum'] for x in tr])}"
            f" | {_ci([x['auroc_neg_trace'] for x in tr])} | {_ci([x['auroc_neg_sum'] for x in un])} |"
        )
    if "sharpness_location" in per_seed[0]:
        norm = [r["sharpness_location"]["auroc_row_norm"] for r in per_seed]
        lines += ["", f"Location control, AUROC of the generated row's norm: {_ci(norm)} ({_reading(norm)})."]
    lines += [
        "",
        "| t | quantile | kappa (mean over seeds) | AUROC #(lambda < -kappa) | reading | untrained, same quantile |",
        "|---|---|---|---|---|---|",
    ]
    for t in steps:
        for j, q in enumerate(qs):
            tr = [s[t]["trained"] for s in sw]
            un = [s[t]["untrained"] for s in sw]
            auc = [x["auroc_count"][j] for x in tr]
            lines.append(
                f"| {t} | {q} | {np.mean([x['kappa'][j] for x in tr]):.3g} | {_ci(auc)} | {_reading(auc)} | "
                f"{_ci([x['auroc_count'][j] for x in un])} |"
            )
    return lines


def plot(per_seed: list[dict], out_dir: str, cfg: dict) -> list[str]:
    """``tabular_sharpness_spectrum.png``: mean ascending spectra of replicas vs other generated rows per t (top) and
    AUROC of #(lambda < -kappa) against the kappa quantile (bottom)."""
    if not per_seed or "sharpness_sweep" not in per_seed[0]:
        return []
    steps = list(per_seed[0]["sharpness_sweep"])
    qs = list(cfg.get("sharp_quantiles", ()))
    fig, axes = plt.subplots(2, len(steps), figsize=(3.6 * len(steps), 6.4), squeeze=False)
    for i, t in enumerate(steps):
        ax = axes[0, i]
        for r in per_seed:
            st = r["sharpness_sweep"][t]["trained"]
            for key, color in (("spectrum_replica", "tab:red"), ("spectrum_other", "tab:blue")):
                v = np.array([np.nan if x is None else x for x in st[key]], np.float64)
                label = (
                    ("replicas" if key == "spectrum_replica" else "other generated rows") if r is per_seed[0] else None
                )
                ax.plot(np.arange(len(v)), v, "o-", ms=2, color=color, alpha=0.7, label=label)
            if r is per_seed[0]:
                for k in st["kappa"]:
                    ax.axhline(-k, color="gray", lw=0.5, ls=":")
        scale = per_seed[0]["sharpness_sweep"][t]["trained"]["eig_median_abs"]
        ax.set_yscale("symlog", linthresh=scale if scale else 1.0)  # linear within the median magnitude
        ax.set(title=f"t = {t}", xlabel="eigenvalue index (ascending)")
        axes[0, 0].set_ylabel("mean eigenvalue (symlog)")
        ax = axes[1, i]
        for name, color in (("trained", "tab:green"), ("untrained", "gray")):
            per = np.array([[np.nan if x is None else x for x in r["sharpness_sweep"][t][name]["auroc_count"]]
                            for r in per_seed], np.float64)  # fmt: skip
            ax.plot(qs, np.nanmean(per, axis=0), "o-", color=color, label=name)
            for row in per:
                ax.plot(qs, row, ".", color=color, alpha=0.4)
        ax.axhline(0.5, color="k", lw=0.5, ls="--")
        ax.set(
            ylim=(0, 1),
            xlabel="kappa (quantile of |negative eigenvalues|)",
            title=f"t = {t}",
        )
    axes[1, 0].set_ylabel("AUROC of #(lambda < -kappa) for replicas")
    axes[0, 0].legend(fontsize=7)
    axes[1, 0].legend(fontsize=7)
    fig.tight_layout()
    path = os.path.join(out_dir, "tabular_sharpness_spectrum.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return [path]
