"""The LM audit's figures from the aggregated results: prefix_sweep.png, power.png, probes_ablation.png and
size_sweep.png (mean ± sd over seeds as error bars), written with matplotlib's Agg backend."""

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from gdc.studies.lm_audit.config import AuditConfig  # noqa: E402


def _errorbar(ax, x, stats_list, label, **kw):
    ax.errorbar(x, [d["mean"] for d in stats_list], yerr=[d["sd"] for d in stats_list], label=label, capsize=3, **kw)


def plots(cfg: AuditConfig, res: dict, out: str) -> list[str]:
    """Writes the four figures into ``out``; returns their file names, in the order report.md cites them."""
    files = []
    prefixes = [int(p) for p in res["prefix_sweep"]]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for ax, m, title in zip(
        axes,
        ("lcs_chars", "rouge_p", "exact"),
        ("longest common substring (chars)", "ROUGE-L precision (words)", "exact match"),
        strict=True,
    ):
        for g, k in enumerate(cfg.dup_counts):
            _errorbar(
                ax, prefixes, [res["prefix_sweep"][str(p)][m]["groups"][g] for p in prefixes], f"dup {k}", marker="o"
            )
        _errorbar(
            ax,
            prefixes,
            [res["prefix_sweep"][str(p)][m]["ordinary"] for p in prefixes],
            "all other train rows",
            ls="--",
        )
        ax.axhline(0, color="grey", lw=0.8)
        ax.set(xlabel="prefix length (characters)", ylabel="train - control", title=title)
    axes[0].legend()
    fig.tight_layout()
    files.append("prefix_sweep.png")
    fig.savefig(os.path.join(out, files[-1]), dpi=100)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, t in zip(axes, ("mannwhitney", "welch"), strict=True):
        p = res["power"][t]
        for g, k in enumerate(cfg.dup_counts):
            _errorbar(ax, p["sizes"], p["groups"][g], f"dup {k}", marker="o")
        if t == "mannwhitney" and "power_hot" in res["hotspot"]["high_m"]:
            for which, label in (("power_hot", "high-m rows"), ("power_random", "random ordinary rows")):
                h = res["hotspot"]["high_m"][which]
                _errorbar(ax, h["sizes"], h["mannwhitney"], label, ls="--", marker="s")
        ax.axhline(res["fpr"][t]["mean"], color="red", ls=":", label=f"FPR never-trained (|S|={res['fpr']['size']})")
        ax.axhline(cfg.alpha, color="grey", lw=0.8)
        ax.set(xscale="log", xlabel="|S|", ylabel=f"rejection rate at alpha={cfg.alpha}", title=t, ylim=(-0.02, 1.02))
        ax.set_xticks(p["sizes"], [str(int(x)) for x in p["sizes"]])
        ax.minorticks_off()
        ax.legend(fontsize=7)
    fig.tight_layout()
    files.append("power.png")
    fig.savefig(os.path.join(out, files[-1]), dpi=100)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    layers = list(range(len(res["probe"]["auroc"])))
    _errorbar(axes[0], layers, res["probe"]["auroc"], "memorized vs predictable", marker="o")
    _errorbar(axes[0], layers, res["probe"]["auroc_vs_wrong"], "memorized vs target-wrong", marker="s")
    _errorbar(
        axes[0], layers, res["probe"]["auroc_reference_model"], "same labels, reference model", marker="^", ls=":"
    )
    axes[0].axhline(0.5, color="grey", lw=0.8)
    axes[0].set(
        xlabel="layer (0 = embedding)", ylabel="cross-canary AUROC", title="probe AUROC per layer", ylim=(0.3, 1.02)
    )
    axes[0].legend()
    base = res["ablation"]["none"]
    axes[1].plot(base["val_ppl"]["mean"], base["exact8"]["mean"], "k*", ms=12, label="no ablation")
    for kind, marker in (("probe", "o-"), ("meandiff", "^-"), ("random", "s--")):
        pts = res["ablation"][kind]
        xs = [pts[a]["val_ppl"]["mean"] for a in pts]
        ys = [pts[a]["exact8"]["mean"] for a in pts]
        axes[1].plot(xs, ys, marker, label=f"{kind} direction")
        for a, x, y in zip(pts, xs, ys, strict=True):
            axes[1].annotate(f"a={a}", (x, y), fontsize=7)
    axes[1].set(
        xscale="log",
        xlabel="validation perplexity (log)",
        ylabel=f"canary exact match, first 8 chars (dup {max(cfg.dup_counts)})",
        title="ablation trade-off",
    )
    axes[1].legend()
    fig.tight_layout()
    files.append("probes_ablation.png")
    fig.savefig(os.path.join(out, files[-1]), dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 4))
    sizes = list(res["size_sweep"])
    for g, k in enumerate(cfg.dup_counts):
        _errorbar(ax, range(len(sizes)), [res["size_sweep"][s]["lcs_chars"][g] for s in sizes], f"dup {k}", marker="o")
    ax.set_xticks(range(len(sizes)), sizes)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set(
        xlabel="model (width x depth)", ylabel="LCSubstring gap (chars)", title=f"model size, prefix {cfg.test_prefix}"
    )
    ax.legend()
    fig.tight_layout()
    files.append("size_sweep.png")
    fig.savefig(os.path.join(out, files[-1]), dpi=100)
    plt.close(fig)
    return files
