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

KINDS = ("ssl", "untrained", "supervised")
STATS = ("unitmem", "classmem")


def _ms(xs) -> str:
    xs = np.asarray(xs, np.float64)
    return f"{xs.mean():.3f} ± {xs.std(ddof=1) if xs.size > 1 else 0.0:.3f}"


def _summary(values) -> dict:
    xs = np.asarray(values, np.float64)
    return {"mean": float(xs.mean()), "std": float(xs.std(ddof=1)) if xs.size > 1 else 0.0, "values": xs.tolist()}


def _interval(values) -> dict:
    """Mean and 95% t-interval over seeds (each value a seed's mean over its encoders)."""
    xs = np.asarray(values, np.float64)
    half = stats.t.ppf(0.975, xs.size - 1) * xs.std(ddof=1) / np.sqrt(xs.size) if xs.size > 1 else float("nan")
    return {
        "mean": float(xs.mean()),
        "lo": float(xs.mean() - half),
        "hi": float(xs.mean() + half),
        "values": xs.tolist(),
    }


def _ci(e: dict) -> str:
    return f"{e['mean']:+.3f} [{e['lo']:+.3f}, {e['hi']:+.3f}]"


def _side(e: dict) -> str:
    if e["lo"] > 0:
        return "above 0"
    if e["hi"] < 0:
        return "below 0"
    return "includes 0"


def controls_summary(per: list[dict], trunk: list[str]) -> dict:
    """Per-layer UnitMem / ClassMem of the SSL encoders and their controls (seed value: mean over encoders), the SSL
    encoders' excess over the untrained ones, and the change of each from the first to the last trunk layer."""
    seed_mean = lambda kind, stat, li: [float(np.mean(p["encoders"][kind][stat][li])) for p in per]  # noqa: E731
    out = {
        kind: {stat: {n: _summary(seed_mean(kind, stat, li)) for li, n in enumerate(trunk)} for stat in STATS}
        for kind in KINDS
    }
    excess = {
        stat: [np.subtract(seed_mean("ssl", stat, li), seed_mean("untrained", stat, li)) for li in range(len(trunk))]
        for stat in STATS
    }
    out["ssl_minus_untrained"] = {
        stat: {n: _interval(excess[stat][li]) for li, n in enumerate(trunk)} for stat in STATS
    }
    out["depth_change"] = {
        "ssl": _interval(np.subtract(seed_mean("ssl", "unitmem", len(trunk) - 1), seed_mean("ssl", "unitmem", 0))),
        "untrained": _interval(
            np.subtract(seed_mean("untrained", "unitmem", len(trunk) - 1), seed_mean("untrained", "unitmem", 0))
        ),
        "excess": _interval(excess["unitmem"][-1] - excess["unitmem"][0]),
    }
    out["supervised_minus_ssl_classmem"] = {
        n: _interval(np.subtract(seed_mean("supervised", "classmem", li), seed_mean("ssl", "classmem", li)))
        for li, n in enumerate(trunk)
    }
    return out


def depth_reading(c: dict, trunk: list[str]) -> str:
    """The depth claim restated from the numbers: the SSL encoders' UnitMem in excess of the untrained floor."""
    first, last = trunk[0], trunk[-1]
    ex = c["ssl_minus_untrained"]["unitmem"]
    d = c["depth_change"]
    verdict = {
        "above 0": "grows with depth beyond the untrained level",
        "includes 0": "does not grow with depth beyond the untrained level by more than the seed spread",
        "below 0": "falls with depth relative to the untrained level",
    }[_side(d["excess"])]
    return (
        f"UnitMem's excess over the untrained encoder {verdict}: {_ci(ex[first])} in {first}, {_ci(ex[last])} in "
        f"{last}, change {_ci(d['excess'])} (95% t-intervals over seeds). Raw UnitMem changes {_ci(d['ssl'])} from "
        f"{first} to {last} in the trained encoders and {_ci(d['untrained'])} at initialisation."
    )


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
        "layermem_untrained_candidates": {
            n: _summary([p["layermem"]["untrained_candidates"]["layer_mem"][i] for p in per])
            for i, n in enumerate(names)
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
        "controls": controls_summary(per, trunk),
        "per_seed": per,
        "commands": commands,
    }
    out["depth_reading"] = depth_reading(out["controls"], trunk)
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
    # UnitMem and ClassMem per layer: the trained SSL encoders against their untrained and supervised controls.
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
    xt = np.arange(len(trunk))
    for kind, color in zip(KINDS, ("C3", "0.5", "C2"), strict=True):
        for stat, style in (("unitmem", "-"), ("classmem", "--")):
            v = np.array([[np.mean(p["encoders"][kind][stat][li]) for li in range(len(trunk))] for p in per])
            sd = v.std(0, ddof=1) if len(per) > 1 else 0 * v[0]
            ax[0].errorbar(xt, v.mean(0), yerr=sd, ls=style, marker="o", color=color, capsize=3, label=f"{stat} {kind}")
    ax[0].set_xticks(xt, trunk)
    ax[0].set_title("UnitMem (-) / ClassMem (--), mean ± sd over seeds", fontsize=9)
    ax[0].set(xlabel="layer", ylim=(0, 1))
    ax[0].legend(fontsize=6, ncol=2)
    x = np.arange(len(names))
    labels = {"candidates": "S_C (candidates)", "shared": "S_S (control)", "untrained_candidates": "S_C, untrained"}
    for group, color in (("candidates", "C3"), ("shared", "C0"), ("untrained_candidates", "0.5")):
        lm = np.array([p["layermem"][group]["layer_mem"] for p in per])
        ax[1].errorbar(
            x,
            lm.mean(0),
            yerr=lm.std(0, ddof=1),
            marker="o",
            color=color,
            capsize=3,
            label=f"LayerMem on {labels[group]}",
        )
    dl = np.array([p["layermem"]["candidates"]["delta"] for p in per])
    ax[1].bar(x, dl.mean(0), alpha=0.3, color="C3", label="Delta-LayerMem (S_C)")
    ax[1].axhline(0, color="k", lw=0.5)
    ax[1].set_xticks(x, names)
    ax[1].set_title("LayerMem (seed: mean over pairs), mean ± sd over seeds", fontsize=9)
    ax[1].set(xlabel="layer")
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
        f"Seeds {out['seeds']}; {out['train_seconds']:.0f} s to train the {2 * cfg.encoders * len(out['seeds'])} SSL "
        f"encoders (vmapped; the {cfg.encoders * len(out['seeds'])} supervised controls train in a second program); "
        f"a seed's value is the mean over its {cfg.encoders} independently initialised encoders (or pairs); numbers "
        "are mean ± sd over seeds, intervals 95% t-intervals over seeds.",
        "",
        "## Setup (scaled down from Wang et al., NeurIPS 2024)",
        "",
        f"* Data: scikit-learn digits (8x8), per seed a random split into S_S = {cfg.num_shared}, "
        f"S_C = {cfg.num_candidates}, S_I = {cfg.num_independent}, the rest held out for a linear probe.",
        f"* Encoder: MLP {cfg.depth} x {cfg.width} ReLU + a {cfg.proj_dim}-d projection head, SimCLR NT-Xent "
        f"(temperature {cfg.temperature}), Adam {cfg.lr}, batch {cfg.batch_size}, {cfg.epochs} epochs. Augmentations: "
        f"random shift <= {cfg.shift} px, brightness ±{cfg.brightness}, Gaussian noise sd {cfg.noise}. The paper uses "
        "ResNets / ViTs on CIFAR / ImageNet with crops and colour jitter.",
        f"* f_r (candidate) trains on S_S + S_C, g_r (independent) on S_S + S_I, r = 0..{cfg.encoders - 1} independent "
        "initialisations per seed. Controls with the same architecture, per r: an untrained encoder (its "
        "initialisation), and a supervised encoder (the trunk with a 10-way softmax head trained by cross-entropy on "
        "the labels of S_S + S_C, same augmentations, optimizer and epochs). GenDataCarto scores, the enrichment test "
        "and the linear probe use f_0.",
        f"* GenDataCarto: per-epoch NT-Xent of each of f's training examples under two fixed views (against all 2N "
        f"views), scored by gdc.scoring: d = mean over the first {cfg.early_epochs} epochs, m = forget share at eps = "
        f"the {cfg.eps_percentile:g}th percentile of final losses, quadrants at the {cfg.q_d:g}/{cfg.q_m:g}th "
        "percentiles.",
        "* ClassMem: UnitMem's formula on class means (a unit's mean activation over each digit class, the largest "
        f"against the {cfg.rest} of the other classes), over the same examples and views.",
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
        "### UnitMem and ClassMem against the controls",
        "",
        "Mean over the live units of each trunk layer (a seed: mean over its encoders); SSL - untrained with its 95% "
        "t-interval over seeds:",
        "",
        "| layer | UnitMem SSL | untrained | supervised | SSL - untrained | ClassMem SSL | untrained | supervised | "
        "supervised - SSL |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    c = out["controls"]
    for n in trunk:
        cells = [_ms(c[k]["unitmem"][n]["values"]) for k in KINDS]
        cells.append(_ci(c["ssl_minus_untrained"]["unitmem"][n]))
        cells += [_ms(c[k]["classmem"][n]["values"]) for k in KINDS]
        cells.append(_ci(c["supervised_minus_ssl_classmem"][n]))
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"**Depth:** {out['depth_reading']}",
        "",
        "### LayerMem",
        "",
        "| layer | LayerMem S_C | Delta-LayerMem S_C | LayerMem S_S (control) | LayerMem S_C, untrained pairs | "
        "raw d_g - d_f: S_C | S_S | S_C - S_S |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n in names:
        raw_c, raw_s = out["layermem_raw_candidates"][n]["values"], out["layermem_raw_shared"][n]["values"]
        cells = [
            _ms(out["layermem_candidates"][n]["values"]),
            _ms(out["delta_layermem_candidates"][n]["values"]),
            _ms(out["layermem_shared_control"][n]["values"]),
            _ms(out["layermem_untrained_candidates"][n]["values"]),
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
        "spread over the whole encoder, SSL units single out examples where supervised units single out classes, "
        "atypical points cause more memorization. The paper uses ResNets / ViTs on CIFAR / ImageNet; no numbers of "
        "theirs are comparable at this scale.",
        "",
        "Plots: `unitmem_layermem.png` (UnitMem / ClassMem per layer for SSL, untrained and supervised encoders; "
        "LayerMem, its controls and Delta-LayerMem), `enrichment.png` "
        "(data map with the argmax examples; odds ratio per quadrant and seed).",
        "",
    ]
    return "\n".join(lines)
