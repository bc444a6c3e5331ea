"""results.json, report.md and PNGs of the SSL localization study, from the per-seed results in the workdir."""

import dataclasses
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402

from gdc import jsonio, scoring  # noqa: E402
from gdc.studies.ssl.config import SSLConfig  # noqa: E402


def _ms(xs) -> str:
    xs = np.asarray(xs, np.float64)
    return f"{xs.mean():.3f} ± {xs.std(ddof=1) if xs.size > 1 else 0.0:.3f}"


def _summary(values) -> dict:
    xs = np.asarray(values, np.float64)
    return {"mean": float(xs.mean()), "std": float(xs.std(ddof=1)) if xs.size > 1 else 0.0, "values": xs.tolist()}


def write(seed: int, cfg: SSLConfig, workdir: str, seconds: float = 0.0) -> dict:
    seeds = [seed + i for i in range(cfg.num_seeds)]
    per = []
    for s in seeds:
        per.append(jsonio.read(os.path.join(workdir, f"seed_{s}.json")))
    names = per[0]["layers"]
    trunk = names[:-1]
    train = np.load(os.path.join(workdir, "train.npz"))
    commands = ""
    if os.path.exists(os.path.join(workdir, "commands.txt")):
        with open(os.path.join(workdir, "commands.txt")) as f:
            commands = f.read().strip()
    hot = "Hotspot-Memorized"
    out = {
        "config": dataclasses.asdict(cfg),
        "seeds": seeds,
        "train_seconds": float(train["seconds"]),
        "study_seconds_this_call": seconds,
        "probe_accuracy": _summary([p["probe_accuracy"] for p in per]),
        "unitmem_mean": {n: _summary([p["unitmem"][n]["mean"] for p in per]) for n in trunk},
        "unitmem_mean_other_rest": {n: _summary([p["unitmem"][n]["mean_other_rest"] for p in per]) for n in trunk},
        "layermem_candidates": {
            n: _summary([p["layermem"]["candidates"]["layer_mem"][i] for p in per]) for i, n in enumerate(names)
        },
        "layermem_shared_control": {
            n: _summary([p["layermem"]["shared"]["layer_mem"][i] for p in per]) for i, n in enumerate(names)
        },
        "delta_layermem_candidates": {
            n: _summary([p["layermem"]["candidates"]["delta"][i] for p in per]) for i, n in enumerate(names)
        },
        "layermem_raw_candidates": {
            n: _summary([p["layermem"]["candidates"]["raw_mean"][i] for p in per]) for i, n in enumerate(names)
        },
        "layermem_raw_shared": {
            n: _summary([p["layermem"]["shared"]["raw_mean"][i] for p in per]) for i, n in enumerate(names)
        },
        "enrichment": {
            q: {
                "odds_ratio": _summary([p["enrichment"][q]["odds_ratio"] for p in per]),
                "p_value": [p["enrichment"][q]["p_value"] for p in per],
                "overlap": [p["enrichment"][q]["overlap"] for p in per],
                "expected_overlap": [p["enrichment"][q]["expected_overlap"] for p in per],
            }
            for q in scoring.QUADRANT_NAMES
        },
        "enrichment_hotspot_per_layer": {
            n: {
                "odds_ratio": _summary([p["enrichment_per_layer"][n]["odds_ratio"] for p in per]),
                "p_value": [p["enrichment_per_layer"][n]["p_value"] for p in per],
            }
            for n in trunk
        },
        "argmax_in_candidates": {
            "odds_ratio": _summary([p["top_units"]["argmax_in_candidates"]["odds_ratio"] for p in per]),
            "p_value": [p["top_units"]["argmax_in_candidates"]["p_value"] for p in per],
        },
        "per_seed": per,
        "commands": commands,
    }
    for block in (out["enrichment"], out["enrichment_hotspot_per_layer"]):
        for e in block.values():  # Fisher's method over the seeds' independent permutation p-values
            e["p_combined"] = float(stats.combine_pvalues(e["p_value"], method="fisher").pvalue)
    e = out["enrichment"][hot]
    out["verdict"] = (
        "enriched (odds ratio > 1, p < 0.05 in every seed)"
        if min(e["odds_ratio"]["values"]) > 1 and max(e["p_value"]) < 0.05
        else "not enriched in every seed"
    )
    _plots(workdir, per, names, seeds)
    jsonio.write(os.path.join(workdir, "results.json"), out)
    with open(os.path.join(workdir, "report.md"), "w") as f:
        f.write(_markdown(out, cfg, names))
    return out


def _plots(workdir, per, names, seeds):
    trunk = names[:-1]
    # UnitMem distributions per layer, seeds pooled.
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
    data = [
        np.concatenate([np.load(os.path.join(workdir, f"seed_{s}.npz"))[f"unitmem_{n}"] for s in seeds]) for n in trunk
    ]
    ax[0].boxplot(data, tick_labels=trunk, showfliers=False)
    ax[0].set(title="UnitMem per unit (3 seeds pooled)", ylabel="UnitMem", xlabel="layer")
    x = np.arange(len(names))
    for group, color in (("candidates", "C3"), ("shared", "C0")):
        lm = np.array([p["layermem"][group]["layer_mem"] for p in per])
        ax[1].errorbar(
            x,
            lm.mean(0),
            yerr=lm.std(0, ddof=1),
            marker="o",
            color=color,
            capsize=3,
            label=f"LayerMem on {'S_C (candidates)' if group == 'candidates' else 'S_S (control)'}",
        )
    dl = np.array([p["layermem"]["candidates"]["delta"] for p in per])
    ax[1].bar(x, dl.mean(0), alpha=0.3, color="C3", label="Delta-LayerMem (S_C)")
    ax[1].axhline(0, color="k", lw=0.5)
    ax[1].set_xticks(x, names)
    ax[1].set(title="LayerMem (mean ± sd over seeds)", xlabel="layer")
    ax[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(workdir, "unitmem_layermem.png"), dpi=110)
    plt.close(fig)
    # Data map of seed 0 with the top units' argmax examples.
    z = np.load(os.path.join(workdir, f"seed_{seeds[0]}.npz"))
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
    rng = np.random.default_rng(0)
    jitter = rng.uniform(-0.01, 0.01, z["m_N"].shape)
    ax[0].scatter(z["d_N"], z["m_N"] + jitter, s=4, c=z["quadrant_N"], cmap="tab10", vmin=0, vmax=9, alpha=0.5)
    sel = z["selected_N"]
    ax[0].scatter(
        z["d_N"][sel],
        z["m_N"][sel] + jitter[sel],
        s=20,
        facecolors="none",
        edgecolors="k",
        label="argmax of a top-UnitMem unit",
    )
    ax[0].set(title=f"data map of f's training set (seed {seeds[0]})", xlabel="d (early SSL loss)", ylabel="m")
    ax[0].legend(fontsize=7)
    qs = scoring.QUADRANT_NAMES
    ors = np.array([[p["enrichment"][q]["odds_ratio"] for q in qs] for p in per])
    for i, p in enumerate(per):
        ax[1].scatter(np.arange(len(qs)) + 0.08 * (i - 1), ors[i], label=f"seed {p['seed']}")
    ax[1].axhline(1, color="k", lw=0.5)
    ax[1].set_yscale("log")
    ax[1].set_xticks(np.arange(len(qs)), qs, fontsize=7)
    ax[1].set(title="top units' argmax examples: odds ratio per quadrant", ylabel="odds ratio")
    ax[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(workdir, "enrichment.png"), dpi=110)
    plt.close(fig)


def _markdown(out, cfg: SSLConfig, names) -> str:
    trunk = names[:-1]
    hot = out["enrichment"]["Hotspot-Memorized"]
    lines = [
        "# UnitMem / LayerMem of a SimCLR encoder on digits, and the hotspot-enrichment test",
        "",
        "```",
        out["commands"] or "(command not recorded)",
        "```",
        "",
        f"Seeds {out['seeds']}; {out['train_seconds']:.0f} s to train all {2 * len(out['seeds'])} encoders (vmapped); "
        "numbers are mean ± sd over seeds.",
        "",
        "## Setup (scaled down from Wang et al., NeurIPS 2024)",
        "",
        f"* Data: scikit-learn digits (8x8), per seed a random split into S_S = {cfg.num_shared}, "
        f"S_C = {cfg.num_candidates}, S_I = {cfg.num_independent}, the rest held out for a linear probe.",
        f"* Encoder: MLP {cfg.depth} x {cfg.width} ReLU + a {cfg.proj_dim}-d projection head, SimCLR NT-Xent "
        f"(temperature {cfg.temperature}), Adam {cfg.lr}, batch {cfg.batch_size}, {cfg.epochs} epochs. Augmentations: "
        f"random shift <= {cfg.shift} px, brightness ±{cfg.brightness}, Gaussian noise sd {cfg.noise}. The paper uses "
        "ResNets / ViTs on CIFAR / ImageNet with crops and colour jitter.",
        "* f (candidate) trains on S_S + S_C, g (independent) on S_S + S_I.",
        f"* GenDataCarto: per-epoch NT-Xent of each of f's training examples under two fixed views (against all 2N "
        f"views), scored by gdc.scoring: d = mean over the first {cfg.early_epochs} epochs, m = forget share at eps = "
        f"the {cfg.eps_percentile:g}th percentile of final losses, quadrants at the {cfg.q_d:g}/{cfg.q_m:g}th "
        "percentiles.",
        f"* UnitMem over {cfg.unit_augs} augmentations, non-argmax examples pooled by the {cfg.rest} (the public "
        f"code's choice; the other pooling is in results.json). Enrichment: the argmax examples of the top "
        f"{cfg.top_units:.0%} units by UnitMem (all trunk layers, dead units excluded), odds ratio against each "
        f"quadrant, one-sided permutation p-value ({cfg.permutations} shuffles of the quadrant labels).",
        f"* LayerMem on S_C with {cfg.layer_augs} augmentations, range-normalised as in the public code; the same "
        "score "
        f"on {cfg.num_candidates} S_S examples (both encoders trained on them) is the null control.",
        "",
        "## Results",
        "",
        f"Linear-probe accuracy of f's last trunk layer on held-out digits: {_ms(out['probe_accuracy']['values'])}.",
        "",
        "| layer | UnitMem (mean over units) | LayerMem S_C | Delta-LayerMem S_C | LayerMem S_S (control) | "
        "raw d_g - d_f: S_C | S_S | S_C - S_S |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n in names:
        um = _ms(out["unitmem_mean"][n]["values"]) if n in trunk else "-"
        raw_c, raw_s = out["layermem_raw_candidates"][n]["values"], out["layermem_raw_shared"][n]["values"]
        cells = [
            um,
            _ms(out["layermem_candidates"][n]["values"]),
            _ms(out["delta_layermem_candidates"][n]["values"]),
            _ms(out["layermem_shared_control"][n]["values"]),
            _ms(raw_c),
            _ms(raw_s),
            _ms(np.subtract(raw_c, raw_s)),
        ]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Enrichment of the top units' argmax examples per quadrant (odds ratio mean ± sd; p-values and observed / "
        "expected overlap per seed):",
        "",
        "| quadrant | odds ratio | p (per seed) | p combined (Fisher) | overlap (per seed) | expected |",
        "|---|---|---|---|---|---|",
    ]
    for q, e in out["enrichment"].items():
        lines.append(
            f"| {q} | {_ms(e['odds_ratio']['values'])} | {', '.join(f'{p:.4f}' for p in e['p_value'])} | "
            f"{e['p_combined']:.4f} | "
            f"{', '.join(str(o) for o in e['overlap'])} | {', '.join(f'{o:.1f}' for o in e['expected_overlap'])} |"
        )
    lines += ["", "All units of one layer, argmax examples vs the hotspot quadrant:", ""]
    lines += ["| layer | odds ratio | p (per seed) | p combined (Fisher) |", "|---|---|---|---|"]
    for n, e in out["enrichment_hotspot_per_layer"].items():
        p_seeds = ", ".join(f"{p:.4f}" for p in e["p_value"])
        lines.append(f"| {n} | {_ms(e['odds_ratio']['values'])} | {p_seeds} | {e['p_combined']:.4f} |")
    a = out["argmax_in_candidates"]
    lines += [
        "",
        f"Top units' argmax examples in S_C rather than S_S (f trained on both): odds ratio "
        f"{_ms(a['odds_ratio']['values'])}, p = {', '.join(f'{p:.4f}' for p in a['p_value'])}.",
        "",
        f"**Hotspot verdict:** {out['verdict']}. Hotspot odds ratio {_ms(hot['odds_ratio']['values'])}, "
        f"Fisher-combined p = {hot['p_combined']:.4f}.",
        "",
        "Paper (qualitative): memorization grows with depth though not monotonically, highly memorizing units are "
        "spread over the whole encoder, atypical points cause more memorization. No numbers of theirs are comparable "
        "at this scale.",
        "",
        "Plots: `unitmem_layermem.png` (UnitMem per layer; LayerMem, control and Delta-LayerMem), `enrichment.png` "
        "(data map with the argmax examples; odds ratio per quadrant and seed).",
        "",
    ]
    return "\n".join(lines)
