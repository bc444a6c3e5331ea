"""The LM audit's figures from the aggregated results (matplotlib's Agg backend): prefix_sweep.png, power.png,
inducer.png, probes_ablation.png and size_sweep.png. Error bars: sd over seeds for gaps, 95% t-intervals over seeds
for rejection rates and matched-perplexity points, Wilson intervals for pooled extraction rates."""

import os

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from gdc.studies.lm_audit.config import AuditConfig  # noqa: E402

PPL_CLIP = 1.5  # the ablation panel's x axis ends at this perplexity ratio: the comparison lives near 1


def _errorbar(ax, x, stats_list, label, **kw):
    ax.errorbar(x, [d["mean"] for d in stats_list], yerr=[d["sd"] for d in stats_list], label=label, capsize=3, **kw)


def _ci_bar(ax, x, stats_list, label, **kw):
    m = np.array([d["mean"] for d in stats_list])
    lo = np.array([d["lo"] if np.isfinite(d["lo"]) else d["mean"] for d in stats_list])
    hi = np.array([d["hi"] if np.isfinite(d["hi"]) else d["mean"] for d in stats_list])
    ax.errorbar(x, m, yerr=[m - lo, hi - m], label=label, capsize=3, **kw)


def _save(fig, out: str, name: str, files: list[str]) -> None:
    fig.tight_layout()
    fig.savefig(os.path.join(out, name), dpi=100)
    plt.close(fig)
    files.append(name)


def plots(cfg: AuditConfig, res: dict, out: str) -> list[str]:
    """Writes the figures into ``out``; returns their file names."""
    files: list[str] = []
    prefixes = [int(p) for p in res["prefix_sweep"]]
    panels = (
        ("lcs_chars", "LCSubstring, aligned continuation"),
        ("lcs_row", "LCSubstring, whole row"),
        ("lcs_corpus", "LCSubstring, whole training text"),
        ("exact8", "exact match, first 8 chars"),
    )
    fig, axes = plt.subplots(1, 4, figsize=(18, 4))
    for ax, (m, title) in zip(axes, panels, strict=True):
        for g, k in enumerate(cfg.dup_counts):
            pts = [res["prefix_sweep"][str(p)][m]["groups"][g] for p in prefixes]
            _errorbar(ax, prefixes, pts, f"dup {k}", marker="o")
        pts = [res["prefix_sweep"][str(p)][m]["ordinary"] for p in prefixes]
        _errorbar(ax, prefixes, pts, "ordinary train rows", ls="--")
        ax.axhline(0, color="grey", lw=0.8)
        ax.set(xlabel="prefix length (characters)", ylabel="train - control", title=title)
    axes[0].legend()
    _save(fig, out, "prefix_sweep.png", files)

    fig, axes = plt.subplots(1, 3, figsize=(15, 4), sharey=True)
    titles = ("true prefix", "inducer", "control inducer")
    for ax, key, title in zip(axes, ("test_prefix", "test_inducer_tuned", "test_inducer_control"), titles, strict=True):
        t = res["tests"][key]
        for g, k in enumerate(cfg.dup_counts):
            _ci_bar(ax, t["sizes"], t["mannwhitney"]["groups"][g], f"dup {k}", marker="o")
        _ci_bar(ax, t["sizes"], t["mannwhitney"]["fpr"], "never-trained (FPR)", marker="x", color="red", ls=":")
        ax.axhline(cfg.alpha, color="grey", lw=0.8)
        ax.set(xlabel="|S|", ylabel=f"MW rejection rate, alpha={cfg.alpha}", title=title, ylim=(-0.02, 1.02))
        ax.legend(fontsize=7)
    _save(fig, out, "power.png", files)

    ind = res["inducer"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    rounds = range(len(ind["tuned"]["accept_rate"]))
    for arm, marker in (("tuned", "o-"), ("control", "s--")):
        _ci_bar(axes[0], list(rounds), ind[arm]["accept_rate"], f"{arm} inducer", fmt=marker)
    axes[0].set(xlabel="round", ylabel="acceptance rate", title="rejection sampling", ylim=(0, None))
    axes[0].set_xticks(list(rounds))
    axes[0].legend()
    names = list(ind["tuned"]["extracted"])
    for arm, shift in (("tuned", -0.15), ("control", 0.15)):
        e = [ind[arm]["extracted"][n] for n in names]
        rate = np.array([x["rate"] for x in e])
        err = [rate - np.array([x["lo"] for x in e]), np.array([x["hi"] for x in e]) - rate]
        axes[1].bar(np.arange(len(names)) + shift, rate, 0.3, yerr=err, capsize=3, label=f"{arm} inducer")
    axes[1].set_xticks(range(len(names)), names)
    axes[1].set(ylabel=f"rows with >= {cfg.extract_chars} chars emitted", title="extraction (pooled, Wilson)")
    axes[1].legend()
    _save(fig, out, "inducer.png", files)

    fig, axes = plt.subplots(1, 3, figsize=(16, 4))
    layers = list(range(len(res["probe"]["auroc"])))
    _errorbar(axes[0], layers, res["probe"]["auroc"], "memorized vs predictable", marker="o")
    _errorbar(axes[0], layers, res["probe"]["auroc_vs_wrong"], "memorized vs target-wrong", marker="s")
    _errorbar(axes[0], layers, res["probe"]["auroc_reference_model"], "same labels, reference", marker="^", ls=":")
    axes[0].axhline(0.5, color="grey", lw=0.8)
    axes[0].set(xlabel="layer (0 = embedding)", ylabel="cross-canary AUROC", title="probe AUROC", ylim=(0.3, 1.02))
    axes[0].legend(fontsize=7)
    axes[0].set_xticks(layers)
    abl = res["ablation"]
    base = abl["none"]
    ax = axes[1]
    ax.plot(1.0, base["exact8"]["mean"], "k*", ms=12, label="no ablation")
    for kind, fmt in (("probe", "o-"), ("meandiff", "^-"), ("random", "s--")):
        pts = abl[kind]
        xs = [pts[a]["val_ppl"]["mean"] / base["val_ppl"]["mean"] for a in pts]
        ys = [pts[a]["exact8"]["mean"] for a in pts]
        ax.plot([1.0, *xs], [base["exact8"]["mean"], *ys], fmt, label=f"{kind} (a sweep, mean over seeds)")
    ax.set(
        xlim=(0.99, PPL_CLIP),
        xlabel=f"validation perplexity / unablated (clipped at {PPL_CLIP})",
        ylabel=f"held-out dup-{max(cfg.dup_counts)} canaries: exact match, first 8",
        title="ablation trade-off",
    )
    ax.legend(fontsize=7)
    ratios = [float(r) for r in abl["matched"]]
    for m, shift in (("exact8", -0.002), ("rouge_p", 0.002)):
        pts = [abl["matched"][r][m]["probe_minus_random"] for r in abl["matched"]]
        _ci_bar(axes[2], [r + shift for r in ratios], pts, m, fmt="o")
    axes[2].axhline(0, color="grey", lw=0.8)
    axes[2].set(
        xlabel="matched perplexity ratio",
        ylabel="probe - random (paired by seed, 95% t-interval)",
        title="probe vs random directions at matched perplexity",
    )
    axes[2].legend()
    _save(fig, out, "probes_ablation.png", files)

    fig, ax = plt.subplots(figsize=(5, 4))
    sizes = list(res["size_sweep"])
    for g, k in enumerate(cfg.dup_counts):
        _errorbar(ax, range(len(sizes)), [res["size_sweep"][s]["lcs_row"][g] for s in sizes], f"dup {k}", marker="o")
    ax.set_xticks(range(len(sizes)), sizes)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set(xlabel="model (width x depth)", ylabel="whole-row LCSubstring gap", title=f"prefix {cfg.test_prefix}")
    ax.legend()
    _save(fig, out, "size_sweep.png", files)
    return files
