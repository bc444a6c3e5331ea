"""Membership inference (paper §10 item 16): loss-threshold and calibrated attacks, ROC metrics, plots.

Scores are "higher = more likely a member":
  * loss attack (Yeom et al. 2018): score = -loss_target;
  * calibrated attack: score = loss_ref - loss_target, with a reference model trained WITHOUT the examples
    under attack. It must also not have trained on the non-members (a reference trained on the held-out split
    would make the held-out losses low for a reason unrelated to the target and inflate the attack); hold out
    a third split, or pass precomputed reference losses to ``calibrated_scores``.

Metrics (``roc_metrics``): ROC AUC (``sklearn.metrics.roc_auc_score``); TPR at FPR 1% and 0.1%, taken as the
largest TPR among ROC points with FPR <= target (a threshold that really achieves that FPR on this data;
LiRA's plotting code takes the last point with FPR strictly below the target, which differs only when a point
sits exactly on it; ``tpr_at_fpr(..., interpolate=True)`` gives the linear interpolation instead); balanced
accuracy = the best (TPR + TNR) / 2 over thresholds (picked on the evaluated data, so it is optimistic). With
N non-members the smallest non-zero FPR is 1/N: below it the TPR is the one at FPR = 0; ``num_nonmembers`` is
reported so this can be read.

Canary attack (canary copies vs never-inserted control canaries placed into held-out rows, see
``canaries.control_sequences``), two scores: the whole row's mean NLL ("sequence"; confounded by the rows'
context being trained text for copies and held-out text for controls) and the mean NLL over the secret digits
only ("secret": a 6-digit secret is diluted ~10x in the mean over a 64-character row).
"""

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn import metrics

from gdc.evaluation import canaries
from gdc.evaluation.common import EvalContext, per_example_losses

FPR_TARGETS = (0.01, 0.001)


def loss_scores(loss_N: np.ndarray) -> np.ndarray:
    """Loss-threshold attack score: -loss."""
    return -np.asarray(loss_N, np.float64)


def calibrated_scores(loss_target_N: np.ndarray, loss_ref_N: np.ndarray) -> np.ndarray:
    """Reference-calibrated score loss_ref - loss_target: high when the target fits an example better than a
    model that never saw it."""
    return np.asarray(loss_ref_N, np.float64) - np.asarray(loss_target_N, np.float64)


def roc(scores_member: np.ndarray, scores_nonmember: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) of every threshold (``drop_intermediate=False``), FPR ascending."""
    labels = np.r_[np.ones(len(scores_member)), np.zeros(len(scores_nonmember))]
    fpr, tpr, _ = metrics.roc_curve(labels, np.r_[scores_member, scores_nonmember], drop_intermediate=False)
    return fpr, tpr


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, target: float, *, interpolate: bool = False) -> float:
    """TPR at FPR ``target`` on a ROC curve (FPR ascending).

    Default: max TPR over points with FPR <= target. ``interpolate``: linear interpolation between the best
    point at or below the target and the worst point above it (achievable by randomising between two
    thresholds).
    """
    fpr, tpr = np.asarray(fpr), np.asarray(tpr)
    below = fpr <= target
    low = float(tpr[below].max()) if below.any() else 0.0
    if not interpolate or below.all():
        return low
    f0 = float(fpr[below].max()) if below.any() else 0.0
    above = ~below
    f1 = float(fpr[above].min())
    t1 = float(tpr[above][fpr[above] == f1].min())
    return low + (t1 - low) * (target - f0) / (f1 - f0)


def roc_metrics(scores_member: np.ndarray, scores_nonmember: np.ndarray, prefix: str = "mia") -> dict[str, float]:
    """AUC, TPR at 1% and 0.1% FPR, best balanced accuracy, and the two counts."""
    if len(scores_member) == 0 or len(scores_nonmember) == 0:
        raise ValueError("an attack needs at least one member and one non-member.")
    labels = np.r_[np.ones(len(scores_member)), np.zeros(len(scores_nonmember))]
    fpr, tpr = roc(scores_member, scores_nonmember)
    out = {f"{prefix}_auc": float(metrics.roc_auc_score(labels, np.r_[scores_member, scores_nonmember]))}
    for target in FPR_TARGETS:
        out[f"{prefix}_tpr_at_{target * 100:g}pct_fpr"] = tpr_at_fpr(fpr, tpr, target)
    out[f"{prefix}_balanced_accuracy"] = float(np.max((tpr + 1.0 - fpr) / 2.0))
    out[f"{prefix}_num_members"] = float(len(scores_member))
    out[f"{prefix}_num_nonmembers"] = float(len(scores_nonmember))
    return out


def plot_roc(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: str, title: str = "") -> None:
    """Draws log-log ROC curves to a PNG.

    Args:
        curves: name -> (member scores, non-member scores).
        path: output .png path.
        title: figure title.
    """
    fig = Figure(figsize=(4.5, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    floor = 1.0
    for name, (member, nonmember) in curves.items():
        fpr, tpr = roc(member, nonmember)
        # FPR = 0 cannot sit on a log axis: draw it at half the smallest step, 1 / (2 N_nonmembers).
        eps = 0.5 / len(nonmember)
        floor = min(floor, eps, 0.5 / len(member))
        auc = metrics.auc(fpr, tpr)
        ax.plot(np.maximum(fpr, eps), np.maximum(tpr, 0.5 / len(member)), label=f"{name} (AUC {auc:.3f})")
    ax.plot([floor, 1.0], [floor, 1.0], "k--", lw=0.8, label="chance")
    ax.set(
        xscale="log",
        yscale="log",
        xlim=(floor, 1.0),
        ylim=(floor, 1.0),
        xlabel="false positive rate",
        ylabel="true positive rate",
        title=title,
    )
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=120)


def canary_attack_sets(ctx: EvalContext) -> dict[str, dict[str, np.ndarray]]:
    """The canary MIA's inputs: {"members", "nonmembers"} -> {"sequence": arrays, "secret": arrays}."""
    out = {}
    for side, seqs in (
        ("members", canaries.member_sequences(ctx.dataset)),
        ("nonmembers", canaries.control_sequences(ctx.dataset, ctx.seed)),
    ):
        out[side] = {
            "sequence": {"tokens": seqs["tokens"], "token_mask": seqs["token_mask"]},
            "secret": {"tokens": seqs["tokens"], "token_mask": seqs["secret_mask"]},
        }
    return out


def evaluate(ctx: EvalContext) -> dict[str, float | np.ndarray]:
    """Loss attack on train (members) vs held-out (non-members), the canary attack when the dataset has
    canaries, and the calibrated versions of both when ``ctx.reference_params`` is set.

    Returns:
        ``mia_*`` (loss attack), ``mia_canary_sequence_*`` and ``mia_canary_secret_*``, and
        ``mia_calibrated_*`` for each when a reference is given; the per-example scores as arrays
        ``*_scores_members`` and ``*_scores_nonmembers``.
    """
    groups = {"mia": (ctx.dataset.train, ctx.dataset.heldout)}
    if ctx.dataset.meta.get("canaries"):
        canary = canary_attack_sets(ctx)
        for span in ("sequence", "secret"):
            groups[f"mia_canary_{span}"] = (canary["members"][span], canary["nonmembers"][span])
    out: dict[str, float | np.ndarray] = {}
    for name, (member_arrays, nonmember_arrays) in groups.items():
        loss_m = per_example_losses(ctx, member_arrays)
        loss_n = per_example_losses(ctx, nonmember_arrays)
        variants = [(name, loss_scores(loss_m), loss_scores(loss_n))]
        if ctx.reference_params is not None:
            ref_m = per_example_losses(ctx, member_arrays, ctx.reference_params)
            ref_n = per_example_losses(ctx, nonmember_arrays, ctx.reference_params)
            calibrated = name.replace("mia", "mia_calibrated", 1)
            variants.append((calibrated, calibrated_scores(loss_m, ref_m), calibrated_scores(loss_n, ref_n)))
        for prefix, s_m, s_n in variants:
            out.update(roc_metrics(s_m, s_n, prefix))
            out[f"{prefix}_scores_members"] = s_m
            out[f"{prefix}_scores_nonmembers"] = s_n
    return out
