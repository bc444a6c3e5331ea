"""PNGs of one table's seeds: memorization vs epochs / N / arms, scores vs replica counts, flagged rows' distances."""

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _ms(values) -> tuple[float, float]:
    v = np.array([np.nan if x is None else x for x in values], np.float64)
    if np.all(np.isnan(v)):
        return float("nan"), float("nan")
    return float(np.nanmean(v)), float(np.nanstd(v))


def plots(per_seed: list[dict], out_dir: str, prefix: str = "", seed_root: str = "") -> list[str]:
    """Writes ``<prefix>tabular_memorization.png``, ``<prefix>tabular_scores.png`` and, when ``seed_root/seed_S``
    holds the seeds' ``gaps.npz``, ``<prefix>tabular_gaps.png``."""
    paths = []
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for r in per_seed:
        ev = r["mem_vs_epochs"]
        axes[0].plot(ev["epochs"], np.array(ev["mem_ratio"]) * 100, "o-", alpha=0.7, label=f"seed {r['seed']}")
        axes[0].plot(ev["epochs"], np.array(ev["mem_ratio_fixed"]) * 100, "s:", alpha=0.7, color="C3")
        sizes = sorted(r["mem_vs_size"], key=int)
        axes[1].plot([int(s) for s in sizes], [r["mem_vs_size"][s] * 100 for s in sizes], "o-", alpha=0.7)
    for ax in axes[:2]:
        floor = np.mean([r["heldout_mem_ratio"] for r in per_seed]) * 100
        ax.axhline(floor, color="gray", ls="--", label="held-out floor (per-query)")
    axes[0].axhline(
        np.mean([r["heldout_mem_ratio_fixed"] for r in per_seed]) * 100, color="C3", ls="--", label="floor (fixed)"
    )
    axes[0].set(xlabel="epochs", ylabel="Mem. Ratio (%)", title="per-query (o-) and fixed-scale (s:)")
    axes[1].set(xlabel="training rows N", ylabel="Mem. Ratio (%)", title="memorization vs N")
    axes[0].legend(fontsize=6)
    arms = list(per_seed[0]["arms"])
    ex = [_ms([r["arms"][a]["excess"] for r in per_seed]) for a in arms]
    exf = [_ms([r["arms"][a]["excess_fixed"] for r in per_seed]) for a in arms]
    xs = np.arange(len(arms))
    axes[2].bar(xs - 0.2, [m * 100 for m, _ in ex], 0.4, yerr=[s * 100 for _, s in ex], label="excess, per-query")
    axes[2].bar(xs + 0.2, [m * 100 for m, _ in exf], 0.4, yerr=[s * 100 for _, s in exf], label="excess, fixed")
    axes[2].axhline(0, color="k", lw=0.8)
    axes[2].set_xticks(xs, arms, rotation=30, fontsize=7)
    axes[2].set(ylabel="Mem. Ratio - held-out floor (pts)", title="interventions")
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    paths.append(os.path.join(out_dir, f"{prefix}tabular_memorization.png"))
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    names = [k for k in per_seed[0]["scores_vs_counts"] if isinstance(per_seed[0]["scores_vs_counts"][k], dict)]
    fig, ax = plt.subplots(figsize=(7, 3.4))
    rho = [_ms([r["scores_vs_counts"][k]["spearman"] for r in per_seed]) for k in names]
    prec = [_ms([r["scores_vs_counts"][k]["precision_at_10"] for r in per_seed]) for k in names]
    xs = np.arange(len(names))
    ax.bar(xs - 0.2, [m for m, _ in rho], 0.4, yerr=[s for _, s in rho], label="Spearman vs replica count")
    ax.bar(xs + 0.2, [m for m, _ in prec], 0.4, yerr=[s for _, s in prec], label="precision@10%")
    base = np.mean([r["scores_vs_counts"]["base_rate"] for r in per_seed])
    ax.axhline(base, color="gray", ls="--", label="base rate (rows with count > 0)")
    ax.set_xticks(xs, names, rotation=30, fontsize=7)
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(os.path.join(out_dir, f"{prefix}tabular_scores.png"))
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    flagged, held = [], []
    for r in per_seed:
        path = os.path.join(seed_root, f"seed_{r['seed']}", "gaps.npz")
        if os.path.exists(path):
            z = np.load(path)
            flagged.append(z["flagged"])
            held.append(z["heldout"])
    if flagged:
        fig, ax = plt.subplots(figsize=(6, 3.4))
        f, h = np.concatenate(flagged), np.concatenate(held)
        top = max(np.quantile(np.concatenate([f, h]), 0.995), 1e-3)
        bins = np.linspace(0, top, 40)
        ax.hist(np.clip(f, 0, top), bins, alpha=0.6, density=True, label="generated rows flagged (per-query)")
        ax.hist(np.clip(h, 0, top), bins, alpha=0.6, density=True, label="held-out real rows: nearest training row")
        ax.set(xlabel="numeric distance to the nearest training row (training sds; clipped)", ylabel="density")
        ax.legend(fontsize=7)
        fig.tight_layout()
        paths.append(os.path.join(out_dir, f"{prefix}tabular_gaps.png"))
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths
