"""Aggregates the seeds' ``result.json`` into ``results.json``, ``report.md`` and PNGs (mean +- std over seeds)."""

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from gdc.studies.tabular import sharp_sweep  # noqa: E402

# TabCutMix paper, Table 1 (Mem. Ratio %, relative reduction of the "Improv." column); see related_systems.md §1.
PAPER = [
    ("TabSyn, Default", "TCM", 20.11, 16.86),
    ("TabSyn, Shoppers", "TCM", 27.68, 25.38),
    ("TabSyn, Shoppers", "TCMP", 27.68, 25.93),
    ("STaSy, Adult", "TCM", 26.02, 20.89),
    ("TabDDPM, Shoppers", "TCM", 31.37, 25.56),
]


def _ms(values) -> tuple[float, float]:
    v = np.array([np.nan if x is None else x for x in values], np.float64)
    if np.all(np.isnan(v)):
        return float("nan"), float("nan")
    return float(np.nanmean(v)), float(np.nanstd(v))


def _f(values, scale: float = 1.0, digits: int = 3) -> str:
    m, s = _ms(values)
    return "n/a" if np.isnan(m) else f"{m * scale:.{digits}f} ± {s * scale:.{digits}f}"


def aggregate(per_seed: list[dict]) -> dict:
    """Mean and std over seeds of every reported number (nested dicts of scalars; lists element-wise)."""

    def walk(items):
        first = items[0]
        if isinstance(first, dict):
            return {k: walk([it[k] for it in items if k in it]) for k in first}
        if isinstance(first, list) and first and isinstance(first[0], int | float):
            arr = np.array([[np.nan if x is None else x for x in it] for it in items], np.float64)
            return {"mean": np.nanmean(arr, 0).tolist(), "std": np.nanstd(arr, 0).tolist()}
        if isinstance(first, int | float) and not isinstance(first, bool) or first is None:
            m, s = _ms(items)
            return {"mean": m, "std": s}
        return first

    return walk(per_seed)


def plots(per_seed: list[dict], out_dir: str, cfg: dict | None = None) -> list[str]:
    paths = []
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for r in per_seed:
        ev = r["mem_vs_epochs"]
        axes[0].plot(ev["epochs"], np.array(ev["mem_ratio"]) * 100, "o-", alpha=0.7, label=f"seed {r['seed']}")
        sizes = sorted(r["mem_vs_size"], key=int)
        axes[1].plot([int(s) for s in sizes], [r["mem_vs_size"][s] * 100 for s in sizes], "o-", alpha=0.7)
    for ax in axes[:2]:
        ax.axhline(
            np.mean([r["heldout_mem_ratio"] for r in per_seed]) * 100, color="gray", ls="--", label="real held-out rows"
        )
    axes[0].set(xlabel="epochs", ylabel="Mem. Ratio (%)", title="memorization vs training length")
    axes[1].set(xlabel="training rows N", ylabel="Mem. Ratio (%)", title="memorization vs N")
    axes[0].legend(fontsize=7)
    arms = list(per_seed[0]["arms"])
    mem = [_ms([r["arms"][a]["mem_ratio"] for r in per_seed]) for a in arms]
    acc = [_ms([r["arms"][a]["accuracy"] for r in per_seed]) for a in arms]
    xs = np.arange(len(arms))
    axes[2].bar(xs - 0.2, [m * 100 for m, _ in mem], 0.4, yerr=[s * 100 for _, s in mem], label="Mem. Ratio %")
    axes[2].bar(xs + 0.2, [m * 100 for m, _ in acc], 0.4, yerr=[s * 100 for _, s in acc], label="utility acc %")
    axes[2].set_xticks(xs, arms, rotation=30, fontsize=7)
    axes[2].legend(fontsize=7)
    axes[2].set_title("interventions")
    fig.tight_layout()
    paths.append(os.path.join(out_dir, "tabular_memorization.png"))
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    names = [k for k in per_seed[0]["scores_vs_counts"] if isinstance(per_seed[0]["scores_vs_counts"][k], dict)]
    fig, ax = plt.subplots(figsize=(7, 3.4))
    rho = [_ms([r["scores_vs_counts"][k]["spearman"] for r in per_seed]) for k in names]
    prec = [_ms([r["scores_vs_counts"][k]["precision_at_10"] for r in per_seed]) for k in names]
    xs = np.arange(len(names))
    ax.bar(xs - 0.2, [m for m, _ in rho], 0.4, yerr=[s for _, s in rho], label="Spearman vs replica count")
    ax.bar(xs + 0.2, [m for m, _ in prec], 0.4, yerr=[s for _, s in prec], label="precision@10%")
    ax.axhline(
        np.mean([r["scores_vs_counts"]["base_rate"] for r in per_seed]),
        color="gray",
        ls="--",
        label="base rate (rows with count > 0)",
    )
    ax.set_xticks(xs, names, rotation=30, fontsize=7)
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(os.path.join(out_dir, "tabular_scores.png"))
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths + sharp_sweep.plot(per_seed, out_dir, cfg or {})


def render(per_seed: list[dict], cfg: dict, command: str) -> str:
    seeds = [r["seed"] for r in per_seed]
    lines = [
        "# Tabular DDPM: memorization, GenDataCarto scores, TabCutMix / TabCutMixPlus / DynamicCut, sharpness",
        "",
        f"Command: `{command}`",
        "",
        f"Seeds {seeds}; mean ± std over seeds. Dataset `{cfg['dataset']}`, N = {per_seed[0]['num_train']} training "
        f"rows, {per_seed[0]['num_heldout']} held-out rows, encoded width {per_seed[0]['encoded_width']}; MLP DDPM "
        f"width {cfg['width']} x depth {cfg['depth']}, T = {cfg['diffusion_steps']}, {cfg['epochs']} epochs, batch "
        f"{cfg['batch_size']}, Adam lr {cfg['learning_rate']} ({cfg['schedule']}). Generated rows per training row: "
        f"{cfg['generated_factor']}. Replica test: d(x, NN1) < d(x, NN2) / 3 with the reference mixed distance, "
        f"against the distinct training rows (dedupe={cfg['dedupe']}). Wall time per seed: "
        f"{_f([r['seconds'] for r in per_seed], 1, 0)} s.",
        "",
        "## Mem. Ratio against epochs and N",
        "",
        "| epochs | " + " | ".join(str(e) for e in per_seed[0]["mem_vs_epochs"]["epochs"]) + " |",
        "|---|" + "---|" * len(per_seed[0]["mem_vs_epochs"]["epochs"]),
    ]
    ev = [r["mem_vs_epochs"] for r in per_seed]
    for key in ("mem_ratio", "mem_auc", "mem_ratio_no_dedupe"):
        cols = [_f([e[key][i] for e in ev], 100, 1) for i in range(len(ev[0]["epochs"]))]
        lines.append(f"| {key} (%) | " + " | ".join(cols) + " |")
    sizes = sorted(per_seed[0]["mem_vs_size"], key=int)
    lines += [
        "",
        "| N | " + " | ".join(sizes) + " |",
        "|---|" + "---|" * len(sizes),
        "| Mem. Ratio (%) | " + " | ".join(_f([r["mem_vs_size"][s] for r in per_seed], 100, 1) for s in sizes) + " |",
        "",
        f"Real held-out rows (never trained on) tested against the training rows: Mem. Ratio "
        f"{_f([r['heldout_mem_ratio'] for r in per_seed], 100, 1)} % (the metric's floor for fresh real rows); "
        f"without de-duplication {_f([r['heldout_mem_ratio_no_dedupe'] for r in per_seed], 100, 1)} %.",
        "",
        "## Scores against the per-row replica count (final probe model)",
        "",
        f"Rows replicated at least once: {_f([r['scores_vs_counts']['base_rate'] for r in per_seed], 100, 1)} % "
        "(the base rate of precision@10%).",
        "",
        "| score (higher = more memorized) | Spearman | precision@10% | replica mass in top 10% | AUROC (count > 0) |",
        "|---|---|---|---|---|",
    ]
    sv = [r["scores_vs_counts"] for r in per_seed]
    for k, v in sv[0].items():
        if isinstance(v, dict):
            lines.append(
                f"| {k} | {_f([s[k]['spearman'] for s in sv])} | {_f([s[k]['precision_at_10'] for s in sv])} "
                f"| {_f([s[k].get('mass_at_10') for s in sv])} | {_f([s[k]['auroc'] for s in sv])} |"
            )
    lines += ["", "Planted rows of the synthetic table (mean replica count, AUROC of scores for flagging them):", ""]
    for k in per_seed[0].get("planted", {}):
        pl = [r["planted"][k] for r in per_seed]
        lines.append(
            f"* {k} ({pl[0]['rows']} rows): mean count {_f([p['mean_count'] for p in pl], 1, 2)} vs "
            f"{_f([p['mean_count_other'] for p in pl], 1, 2)} for the others (share of all replicas "
            f"{_f([p['replica_share'] for p in pl], 100, 1)} %); "
            f"AUROC m {_f([p['m_auroc'] for p in pl])}, "
            f"-d {_f([p['neg_d_auroc'] for p in pl])}, sharpness {_f([p['sharp_auroc'] for p in pl])}."
        )
    sg = [r["sharpness_generated"] for r in per_seed]
    lines += [
        "",
        "## Sharpness for flagging replicas among generated rows",
        "",
        f"Eigenvalues of the symmetrised Jacobian of the learned score at step t = {cfg['sharp_t']} (jax.jacfwd), "
        f"kappa = {cfg['kappa']}. Replicas among the generated rows: {_f([s['replicas'] for s in sg], 1, 1)}.",
        "",
        f"* AUROC of -sum(negative eigenvalues): {_f([s['auroc_neg_sum'] for s in sg])}",
        f"* AUROC of #eigenvalues < -kappa: {_f([s['auroc_count_below'] for s in sg])}",
        f"* AUROC of -trace: {_f([s['auroc_neg_trace'] for s in sg])}",
        f"* mean sum of negative eigenvalues, replicas vs others: {_f([s['mean_neg_sum_replica'] for s in sg], 1, 1)}"
        f" vs {_f([s['mean_neg_sum_other'] for s in sg], 1, 1)}",
        "",
        "## Interventions at matched budget",
        "",
        f"TCM / TCMP add {cfg['augment_fraction']:.0%} rows; the pruning arms remove {cfg['prune_fraction']:.0%} "
        "(DynamicCut: summed replica counts at the earlier probe stops; gdc_prune_m: top m_i, ties by lower d_i; "
        "gdc_prune_d: top d_i, ties by higher m_i; gdc_downweight_d: the same rows kept with loss weight "
        f"{cfg.get('downweight_alpha', '')}). "
        "Memorization is always measured against the real training rows; utility = random forest trained on the "
        "generated rows, tested on real held-out rows.",
        "",
        "| arm | Mem. Ratio (%) | Mem-AUC | relative change vs baseline | utility accuracy | utility AUC |",
        "|---|---|---|---|---|---|",
    ]
    for arm in per_seed[0]["arms"]:
        rel = [
            (r["arms"][arm]["mem_ratio"] - r["arms"]["baseline"]["mem_ratio"]) / r["arms"]["baseline"]["mem_ratio"]
            if r["arms"]["baseline"]["mem_ratio"]
            else None
            for r in per_seed
        ]
        a = [r["arms"][arm] for r in per_seed]
        lines.append(
            f"| {arm} | {_f([x['mem_ratio'] for x in a], 100, 1)} | {_f([x['mem_auc'] for x in a])} | "
            f"{_f(rel, 100, 1)} % | {_f([x['accuracy'] for x in a])} | {_f([x['auc'] for x in a])} |"
        )
    ru = [r["real_utility"] for r in per_seed]
    lines += [
        f"| (real training rows) | | | | {_f([x['accuracy'] for x in ru])} | {_f([x['auc'] for x in ru])} |",
        "",
        "The TabCutMix paper's relative reductions of Mem. Ratio (Table 1, TabSyn / STaSy / TabDDPM on real tables):",
        "",
        "| model, data | arm | baseline % | with arm % | relative change |",
        "|---|---|---|---|---|",
    ]
    for name, arm, base, new in PAPER:
        lines.append(f"| {name} | {arm} | {base:.2f} | {new:.2f} | {100 * (new - base) / base:.1f} % |")
    lines += sharp_sweep.markdown(per_seed, cfg)
    lines.append("")
    return "\n".join(lines)
