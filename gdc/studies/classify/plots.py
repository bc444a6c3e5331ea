"""The classify parts' figures, from the per-seed results and arrays: mat_toy.png, demem_tradeoff.png and
demem_roc.png, fairness_pred_vs_meas.png. ``PLOTS[part](seeds, arrays, workdir)`` returns the file names written."""

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


def plot_demem(seeds, arrays, workdir) -> list[str]:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, attack in zip(axes, ("lira", "loss"), strict=True):
        for i, arm in enumerate(seeds[0]["arms"]):
            acc = [s["arms"][arm]["test_accuracy"] for s in seeds]
            tpr = [s["arms"][arm][f"{attack}_all_tpr_at_1pct_fpr"] for s in seeds]
            ax.errorbar(
                np.mean(acc),
                np.mean(tpr),
                xerr=np.std(acc),
                yerr=np.std(tpr),
                fmt="o",
                color=f"C{i}",
                label=arm,
                capsize=3,
            )
        ax.set(xlabel="test accuracy", ylabel="TPR at 1% FPR", title=f"{attack} attack, all examples (3 seeds)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    paths = [os.path.join(workdir, "demem_tradeoff.png")]
    fig.savefig(paths[0], dpi=110)
    plt.close(fig)
    a = arrays[0]
    curves = {
        arm: (a[f"{arm}__lira_member"], a[f"{arm}__lira_nonmember"])
        for arm in seeds[0]["arms"]
        if f"{arm}__lira_member" in a
    }
    if curves:
        paths.append(os.path.join(workdir, "demem_roc.png"))
        mia.plot_roc(curves, paths[1], title=f"LiRA, pooled over targets, seed {seeds[0]['seed']}")
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
    return [os.path.basename(path)]


PLOTS = {"mat": plot_mat, "demem": plot_demem, "fairness": plot_fairness}
PLOTS["demem_robust"] = robust_report.plot
