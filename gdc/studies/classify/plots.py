"""The classify parts' figures, from the per-seed results and arrays: mat_toy.png, demem_tradeoff.png,
demem_roc.png and demem_roc_offline.png (log-log), fairness_pred_vs_meas.png and fairness_zero_bias.png.
``PLOTS[part](seeds, arrays, workdir)`` returns the file names written."""

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from gdc.evaluation import mia  # noqa: E402
from gdc.studies.classify import robust_report  # noqa: E402


def plot_mat(seeds, arrays, workdir) -> list[str]:
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for name, color in (("erm", "C3"), ("mat", "C0"), ("erm_no_noise", "C7")):
        for i, s in enumerate(seeds):
            ax1.plot(
                s[name]["curve_epochs"],
                s[name]["curve_test_minority"],
                color=color,
                alpha=0.7,
                label=name if i == 0 else None,
            )
    ax1.set(xlabel="epoch", ylabel="minority test accuracy", title="MAT toy: minority test accuracy (3 seeds)")
    ax1.legend()
    a = arrays[0]
    if a:
        minority = a["minority_N"].astype(bool)
        ax2.scatter(a["d_N"][~minority], a["score_N"][~minority], s=6, label="majority", alpha=0.5)
        ax2.scatter(a["d_N"][minority], a["score_N"][minority], s=6, label="minority", alpha=0.8)
        ax2.set(xlabel="d (early ERM loss)", ylabel="1 - p_ho(y|x)", title=f"scorers, seed {seeds[0]['seed']}")
        ax2.legend()
    fig.tight_layout()
    path = os.path.join(workdir, "mat_toy.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [os.path.basename(path)]


def plot_demem(seeds, arms_arrays, workdir) -> list[str]:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, fpr in zip(axes, ("1pct", "0.1pct"), strict=True):
        for i, arm in enumerate(seeds[0]["arms"]):
            acc = [s["arms"][arm]["test_accuracy"] for s in seeds]
            tpr = [s["arms"][arm][f"lira_all_tpr_at_{fpr}_fpr"] for s in seeds]
            eps = seeds[0].get("dp", {}).get(arm, {}).get("epsilon_rdp")
            label = f"{arm} (eps {eps:.1f})" if eps is not None else arm
            kw = dict(xerr=np.std(acc), yerr=np.std(tpr), fmt="o", color=f"C{i % 10}", label=label, capsize=3)
            ax.errorbar(np.mean(acc), np.mean(tpr), **kw)
        ax.set(
            xlabel="test accuracy",
            ylabel=f"LiRA TPR at {fpr.replace('pct', '%')} FPR",
            title=f"online LiRA, all examples ({len(seeds)} seeds, ± std)",
        )
        ax.legend(fontsize=6)
    fig.tight_layout()
    paths = [os.path.join(workdir, "demem_tradeoff.png")]
    fig.savefig(paths[0], dpi=110)
    plt.close(fig)
    a = arms_arrays[0]
    for attack, file in (("lira", "demem_roc.png"), ("lira_offline", "demem_roc_offline.png")):
        curves = {
            arm: (a[f"{arm}__{attack}_member"], a[f"{arm}__{attack}_nonmember"])
            for arm in seeds[0]["arms"]
            if f"{arm}__{attack}_member" in a
        }
        if curves:
            paths.append(os.path.join(workdir, file))
            name = "online" if attack == "lira" else "offline"
            mia.plot_roc(curves, paths[-1], title=f"LiRA {name}, pooled over targets, seed {seeds[0]['seed']}")
    return [os.path.basename(p) for p in paths]


def plot_fairness(seeds, arrays, workdir) -> list[str]:
    del arrays
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    for ax, act in zip(axes, ("memorize", "prune"), strict=True):
        for j, q in enumerate(seeds[0]["quadrants"]):
            for k, metric in enumerate(("sp", "tpr", "fpr")):
                xs, ys = [], []
                for s in seeds:
                    r = s["quadrants"][q].get(act)
                    if r:
                        xs += r[f"{metric}_gap_change_predicted"]
                        ys += r[f"{metric}_gap_change_measured"]
                ax.scatter(xs, ys, s=18, marker="os^"[k], color=f"C{j}", alpha=0.7, label=f"{q}, {metric}")
        lim = max(0.05, *(abs(v) for v in ax.get_xlim() + ax.get_ylim()))
        ax.plot([-lim, lim], [-lim, lim], "k--", lw=0.8)
        ax.set(
            xlabel="predicted change of the group gap", ylabel="measured change", title=f"{act} D (3 seeds x 3 classes)"
        )
        ax.legend(fontsize=6)
    fig.tight_layout()
    path = os.path.join(workdir, "fairness_pred_vs_meas.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    paths = [os.path.basename(path)]
    if all("zero_bias" in s for s in seeds):
        paths.append(plot_zero_bias(seeds, os.path.join(workdir, "fairness_zero_bias.png")))
    return paths


def _val(v) -> float:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else np.nan


def plot_zero_bias(seeds, path) -> str:
    """Least memorized mass against its bounds, and the bias left after memorizing the least set, per table."""
    tables = ["synthetic", *sorted(k for k in seeds[0]["zero_bias"] if k.startswith("diabetes_"))]
    metrics = ("sp", "eo", "eodds")
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    mass_keys = (("bound_lower", "lower bound", "_"), ("lp_min_mass", "least (LP)", "o"))
    mass_keys += (("bound_upper", "upper bound", "_"), ("composition_min_mass", "composition only", "x"))
    bias_keys = (("base_bias", "base", "s"), ("bias_after_lookup", "lookup, least set", "o"))
    bias_keys += (("bias_after_random_lookup", "lookup, random rows", "x"), ("bias_after_finetune", "fine-tuned", "^"))
    labels = [f"{t.replace('diabetes_', 'diabetes K=')}\n{m}" for t in tables for m in metrics]
    for ax, keys in ((ax1, mass_keys), (ax2, bias_keys)):
        for j, (key, label, marker) in enumerate(keys):
            for i, (t, m) in enumerate((t, m) for t in tables for m in metrics):
                ys = [_val(s["zero_bias"][t][m].get(key)) for s in (seeds if t == "synthetic" else seeds[:1])]
                xs = np.full(len(ys), i + 0.15 * (j - 1.5))
                ax.scatter(xs, ys, marker=marker, color=f"C{j}", s=40, label=label if i == 0 else None)
        ax.set_xticks(range(len(labels)), labels, fontsize=7)
        ax.legend(fontsize=7)
    ax1.set(ylabel="memorized mass (share of rows)", title="zero-bias sets: least mass and bounds (n/a not drawn)")
    ax2.set(ylabel="largest |group gap| of the metric", title="bias before and after memorizing")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return os.path.basename(path)


PLOTS = {"mat": plot_mat, "demem": plot_demem, "fairness": plot_fairness}
PLOTS["demem_robust"] = robust_report.plot
