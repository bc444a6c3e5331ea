"""The study report's figures, written with matplotlib's Agg canvas (no pyplot state): data_map.png,
trajectories.png, pruning.png, eps_sweep.png and extraction_by_epoch.png."""

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from gdc.scoring import QUADRANT_NAMES
from gdc.studies.carto.claims import extraction_rate


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
                ext = [extraction_rate(base, kind)[0]] + [extraction_rate(r, kind)[0] for _, r in pts]
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


def plot_extraction_by_epoch(by_epoch: dict, path: str) -> None:
    fig = _figure(5, 3.5)
    ax = fig.add_subplot()
    for seed, rows in by_epoch.items():
        ax.plot([e + 1 for e, _ in rows], [c for _, c in rows], "o-", label=f"seed {seed}")
    ax.set(xlabel="epoch", ylabel="canaries extracted greedily", title="baseline: when memorization appears")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
