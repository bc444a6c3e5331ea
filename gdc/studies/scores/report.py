"""The score benchmark's report: per setting, the leaderboard of every score against counterfactual memorization.

Tables (``gdc.scoring.leaderboard``), one per seed, then pooled over seeds (mean and t-interval): ``lm`` and ``mlp``
rank every example against counterfactual memorization of its loss (AUROC and positives-precision for canary copies
/ flipped labels); ``lm_span`` ranks the canary copies alone against counterfactual memorization of the secret
digits' token accuracy. The best score of a table is its first row (pooled Spearman, descending); the report says
which other scores' means its interval includes, and where m and the random control stand.
"""

import dataclasses
import math
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import scipy.stats  # noqa: E402

from gdc import jsonio  # noqa: E402
from gdc.scoring import leaderboard  # noqa: E402
from gdc.studies.scores import interventions, study  # noqa: E402
from gdc.studies.scores.config import ScoresConfig  # noqa: E402

TABLES = {
    "lm": "canary character LM: every sequence vs counterfactual memorization of its loss; positives = canary copies",
    "lm_span": "canary character LM, canary copies only: vs counterfactual memorization of the secret digits' token "
    "accuracy",
    "mlp": "MLP on blobs: every example vs counterfactual memorization of its loss; positives = flipped labels",
}
FRACTIONS = leaderboard.FRACTIONS


def _scores(arrays: dict[str, np.ndarray], rows_N: np.ndarray | None = None) -> dict[str, np.ndarray]:
    out = {k[len("score_") : -len("_N")]: v for k, v in arrays.items() if k.startswith("score_")}
    return out if rows_N is None else {k: v[rows_N] for k, v in out.items()}


def seed_tables(cfg: ScoresConfig, info: dict, arrays: dict[str, np.ndarray]) -> dict[str, list[dict]]:
    """The per-seed leaderboards of one setting (``lm`` and ``lm_span``, or ``mlp``)."""
    kw = dict(cost=info["score_seconds"], train_cost=info["train_seconds"], n_boot=cfg.n_boot, seed=info["seed"])
    setting = info["setting"]
    # Span scores exist on canary copies only (NaN elsewhere): they enter the canary-only table, not the full one.
    full = {k: v for k, v in _scores(arrays).items() if not k.startswith("span_")}
    out = {setting: leaderboard.table(full, arrays["cm_loss_N"], arrays["positive_N"], **kw)}
    if setting == "lm":
        rows_N = arrays["positive_N"] & np.isfinite(arrays["cm_span_N"])
        out["lm_span"] = leaderboard.table(_scores(arrays, rows_N), arrays["cm_span_N"][rows_N], None, **kw)
    return out


def truth_summary(info: dict, arrays: dict[str, np.ndarray]) -> dict:
    """Counterfactual memorization's spread and noise: median standard error against the spread of the estimates."""
    out = {}
    for name in ("loss", "span"):
        if f"cm_{name}_N" not in arrays:
            continue
        mem_N, se_N = arrays[f"cm_{name}_N"], arrays[f"cm_{name}_se_N"]
        ok = np.isfinite(mem_N)
        out[name] = {
            "examples": int(ok.sum()),
            "mean": float(np.nanmean(mem_N)),
            "sd": float(np.nanstd(mem_N)),
            "median_se": float(np.nanmedian(se_N)),
            "share_above_2se": float(np.mean(mem_N[ok] > 2 * se_N[ok])),
            "stability": info["stability"][name],
        }
        if name == "loss":
            pos = arrays["positive_N"] & ok
            out[name]["mean_positives"] = float(mem_N[pos].mean()) if pos.any() else math.nan
            out[name]["mean_others"] = float(mem_N[~arrays["positive_N"] & ok].mean())
    return out


def standing(pooled: list[dict], key: str = "spearman") -> dict:
    """The best row, the scores whose pooled mean its interval includes, and where m and random stand."""
    ranked = [r for r in pooled if np.isfinite(r.get(key, math.nan))]
    if not ranked:
        return {}
    ranked = sorted(ranked, key=lambda r: -r[key])
    best = ranked[0]
    lo, hi = best[f"{key}_lo"], best[f"{key}_hi"]
    inside = [r["name"] for r in ranked[1:] if np.isfinite(lo) and lo <= r[key] <= hi]
    overlap = [r["name"] for r in ranked[1:] if np.isfinite(lo) and r[f"{key}_hi"] >= lo]
    out = {
        "metric": key,
        "best": best["name"],
        "value": best[key],
        "lo": lo,
        "hi": hi,
        "includes": inside,
        "overlapping": overlap,
        "order": [r["name"] for r in ranked],
    }
    for name in ("m", "random"):
        row = next((r for r in ranked if r["name"] == name), None)
        if row is not None:
            out[name] = {
                "rank": ranked.index(row) + 1,
                "of": len(ranked),
                "value": row[key],
                "lo": row[f"{key}_lo"],
                "hi": row[f"{key}_hi"],
            }
    return out


def analyze(cfg: ScoresConfig, workdir: str) -> dict:
    res = {"config": dataclasses.asdict(cfg), "scores": study.SCORES, "settings": {}}
    for setting in cfg.settings:
        per_seed, tables, truths = [], {}, []
        for seed in cfg.seeds:
            info, arrays = study.load_setting(study.setting_dir(workdir, seed, setting))
            for name, rows in seed_tables(cfg, info, arrays).items():
                tables.setdefault(name, []).append(rows)
            truths.append(truth_summary(info, arrays))
            per_seed.append({k: v for k, v in info.items() if k != "run_config"})
        for name, seed_rows in tables.items():
            pooled = leaderboard.pool(seed_rows)
            res["settings"][name] = {
                "what": TABLES[name],
                "pooled": pooled,
                "per_seed": seed_rows,
                "best": standing(pooled, "spearman"),
                "best_auroc": standing(pooled, "auroc") if name != "lm_span" else {},
            }
        res["settings"][setting].update(runs=per_seed, truth=truths)
        res["settings"][setting]["run_config"] = info["run_config"]
    return res


def _fmt(row: dict, key: str, digits: int = 3) -> str:
    v = row.get(key, math.nan)
    if not np.isfinite(v):
        return "-"
    lo, hi = row.get(f"{key}_lo", math.nan), row.get(f"{key}_hi", math.nan)
    if not np.isfinite(lo):
        return f"{v:.{digits}f}"
    return f"{v:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def _cost(v: float) -> str:
    return "-" if not np.isfinite(v) else f"{v:.3g}"


def _leaderboard_md(name: str, entry: dict) -> list[str]:
    pooled = entry["pooled"]
    has_pos = "auroc" in pooled[0]
    lines = [f"### `{name}`: {entry['what']}", ""]
    head = "| rank | score | Spearman with CM | " + ("AUROC (positives) | " if has_pos else "") + "cost (runs) |"
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    for i, r in enumerate(pooled, 1):
        auroc = f"{_fmt(r, 'auroc')} | " if has_pos else ""
        lines.append(f"| {i} | `{r['name']}` | {_fmt(r, 'spearman')} | {auroc}{_cost(r['cost'])} |")
    lines += [
        "",
        "Precision at the top k (share of the score's top k in CM's top k"
        + ("; positives: share that are positives" if has_pos else "")
        + "):",
        "",
    ]
    cols = [f"precision@{f:g}" for f in FRACTIONS] + ([f"precision_pos@{f:g}" for f in FRACTIONS] if has_pos else [])
    head = "| score | " + " | ".join(
        c.replace("precision_pos", "positives").replace("precision", "CM top") for c in cols
    )
    lines += [head + " |", "|" + "---|" * (len(cols) + 1)]
    for r in pooled:
        lines.append(f"| `{r['name']}` | " + " | ".join(_fmt(r, c, 2) for c in cols) + " |")
    return lines + [""]


def _verdict_md(name: str, entry: dict) -> list[str]:
    b = entry["best"]
    if not b:
        return [f"`{name}`: no score has a finite Spearman.", ""]
    also = "the means of " + ", ".join(f"`{n}`" for n in b["includes"]) if b["includes"] else "no other score's mean"
    lines = [
        f"**Best by Spearman with counterfactual memorization (`{name}`): `{b['best']}`**, {b['value']:.3f} "
        f"[{b['lo']:.3f}, {b['hi']:.3f}] (mean over seeds, 95% t-interval); that interval also includes {also}"
        + (
            ": the random control among them, so no score is told apart from chance here."
            if "random" in b["includes"]
            else "."
        )
    ]
    for key in ("m", "random"):
        if key in b:
            s = b[key]
            lines.append(
                f"`{key}` ranks {s['rank']} of {s['of']}: {s['value']:.3f} [{s['lo']:.3f}, {s['hi']:.3f}]"
                + (
                    "; its interval lies below the best's."
                    if key == "m" and np.isfinite(s["hi"]) and s["hi"] < b["lo"]
                    else ("." if key == "random" else "; its interval overlaps the best's.")
                )
            )
    a = entry.get("best_auroc") or {}
    if a:
        also = "the means of " + ", ".join(f"`{n}`" for n in a["includes"]) if a["includes"] else "no other mean"
        m = a.get("m")
        lines.append(
            f"Best AUROC for the positives: `{a['best']}`, {a['value']:.3f} [{a['lo']:.3f}, {a['hi']:.3f}] (its "
            f"interval includes {also})"
            + (f"; `m` {m['value']:.3f} [{m['lo']:.3f}, {m['hi']:.3f}], rank {m['rank']} of {m['of']}." if m else ".")
        )
    return [" ".join(lines), ""]


def _truth_md(setting: str, entry: dict, cfg: ScoresConfig) -> list[str]:
    lines = []
    for name in ("loss", "span"):
        rows = [t[name] for t in entry["truth"] if name in t]
        if not rows:
            continue
        se = [r["median_se"] for r in rows]
        sd = [r["sd"] for r in rows]
        full = [r["stability"]["spearman"] for r in rows]
        sb = [r["stability"]["spearman_brown"][-1] for r in rows]
        models = rows[0]["stability"]["models"]
        curve = np.mean([r["stability"]["curve"] for r in rows], axis=0)
        lines.append(
            f"* `{setting}` CM of the {name}: median standard error {np.mean(se):.4f} (per seed "
            f"{', '.join(f'{v:.4f}' for v in se)}) against an across-example sd of {np.mean(sd):.4f}; "
            f"{np.mean([r['share_above_2se'] for r in rows]):.0%} of examples above 2 se. Split-half Spearman "
            f"(two disjoint halves of the {cfg.models} models, mean over seeds) at "
            + ", ".join(f"{m} models: {c:.2f}" for m, c in zip(models, curve, strict=True))
            + f"; Spearman-Brown reliability of all {cfg.models}: {np.mean(sb):.2f} (per seed "
            + ", ".join(f"{v:.2f}" for v in sb)
            + f"; split-half {', '.join(f'{v:.2f}' for v in full)})."
        )
        if name == "loss" and "mean_positives" in rows[0]:
            lines[-1] += (
                f" Mean CM of the positives {np.mean([r['mean_positives'] for r in rows]):.3f}, of the others "
                f"{np.mean([r['mean_others'] for r in rows]):.3f}."
            )
    return lines


def _runs_md(setting: str, entry: dict) -> list[str]:
    runs = entry["runs"]
    tr = [r["train_seconds"] for r in runs]
    ens = [r["ensemble_seconds"]["train"] + r["ensemble_seconds"]["performance"] for r in runs]
    line = (
        f"* `{setting}`: N = {runs[0]['num_train']} training examples, {runs[0]['positives']} positives; tracked run "
        f"{np.mean(tr):.1f} s (per seed {', '.join(f'{v:.1f}' for v in tr)}); {runs[0]['models']} counterfactual "
        f"models {np.mean(ens):.0f} s ({np.mean(ens) / np.mean(tr):.1f} training runs). Mean loss of the CM models "
        f"on their members {np.mean([r['final_loss_in_out']['in'] for r in runs]):.3f}, on the others "
        f"{np.mean([r['final_loss_in_out']['out'] for r in runs]):.3f}."
    )
    if "tracked_span_acc" in runs[0]:
        line += (
            f" Secret-digit token accuracy (teacher-forced) of the tracked run on its canary copies "
            f"{np.mean([r['tracked_span_acc'] for r in runs]):.2f}, copies with all digits right "
            f"{np.mean([r['tracked_span_exact'] for r in runs]):.0%}; CM models on copies they trained on "
            f"{np.mean([r['span_acc_in_out']['in'] for r in runs]):.2f}, on copies they did not "
            f"{np.mean([r['span_acc_in_out']['out'] for r in runs]):.2f}."
        )
    extra = [r.get("extra_runs", {}) for r in runs]
    if extra[0].get("passes"):
        ps = [e["passes"]["pass_seconds"] for e in extra]
        line += (
            f" Scoring-pass run: {extra[0]['passes']['passes']} passes per epoch took {np.mean(ps):.1f} s in all "
            f"({np.mean(ps) / np.mean(tr):.2f} training runs)."
        )
    if extra[0].get("topk"):
        line += f" top_k_drop run {np.mean([e['topk']['run_seconds'] for e in extra]):.1f} s."
    srcs = runs[0]["score_sources"]
    line += " Computed from: " + "; ".join(f"`{k}`: {v}" for k, v in srcs.items()) + "."
    return [line]


def _markdown(res: dict, cfg: ScoresConfig, commands: str) -> str:
    s = res["settings"]
    lines = [
        "# Score benchmark: which per-example score finds what a model memorizes",
        "",
        "Ground truth: counterfactual memorization (CM; Feldman & Zhang 2020), from "
        f"{cfg.models} models per seed each trained on a random half of the training set with the tracked run's data, "
        "model and optimizer (`gdc.influence.counterfactual`): mean performance of the models that trained on an "
        "example minus that of the models that did not (loss: out minus in)."
        + (
            " A canary's copies enter or leave a half together (`tie_copies`), so a copy's CM is its canary's."
            if cfg.tie_copies
            else ""
        ),
        f"Seeds {list(cfg.seeds)}; every number is the mean over seeds with a 95% t-interval over seeds "
        "(`leaderboard.pool`). Cost: wall-clock seconds of the score's computation over the tracked run's training "
        "seconds (cartography's scores share one scoring pass, each charged its whole time; the scoring-pass scores "
        "are charged the passes' wall time, `m_pass1` / `d_pass1` their share of it; the `topk_span_*` scores the "
        "extra wall time of their run over the tracked run, floored at 0; `self_influence` its gradient passes).",
        "",
        "```",
        commands,
        "```",
        "",
        "## Verdicts",
        "",
    ]
    for name in s:
        lines += _verdict_md(name, s[name])
    lines += ["## Runs and ground truth", ""]
    for setting in cfg.settings:
        lines += _runs_md(setting, s[setting]) + _truth_md(setting, s[setting], cfg)
    lines += ["", "## Leaderboards (pooled over seeds)", ""]
    for name in s:
        lines += _leaderboard_md(name, s[name])
    lines += interventions.markdown(res.get("interventions", {}))
    lines += ["## Scores", ""] + [f"* `{k}`: {v}" for k, v in res["scores"].items()]
    lines += [
        "",
        "Figures: `scatter_<table>.png` (score rank against CM rank, first seed, the best four, m and "
        "random), `precision_<table>.png` (precision at k against k, first seed).",
        "",
    ]
    return "\n".join(lines)


def _panel_names(entry: dict) -> list[str]:
    order = [r["name"] for r in entry["pooled"] if np.isfinite(r["spearman"])]
    names = order[:4]
    return names + [n for n in ("m", "random") if n in order and n not in names]


def _plots(cfg: ScoresConfig, res: dict, workdir: str) -> None:
    seed = cfg.seeds[0]
    for name, entry in res["settings"].items():
        setting = "lm" if name.startswith("lm") else "mlp"
        _, arrays = study.load_setting(study.setting_dir(workdir, seed, setting))
        rows_N = arrays["positive_N"] & np.isfinite(arrays["cm_span_N"]) if name == "lm_span" else None
        scores = _scores(arrays, rows_N)
        truth_N = arrays["cm_span_N" if name == "lm_span" else "cm_loss_N"]
        truth_N = truth_N if rows_N is None else truth_N[rows_N]
        pos_N = arrays["positive_N"] if rows_N is None else None
        names = _panel_names(entry)
        if not names:  # no score has a finite Spearman (a tiny run): nothing to draw
            continue
        fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.2), squeeze=False)
        for ax, score in zip(axes[0], names, strict=True):
            ok = np.isfinite(truth_N) & ~np.isnan(scores[score])
            x = scipy.stats.rankdata(scores[score][ok]) / ok.sum()
            y = scipy.stats.rankdata(truth_N[ok]) / ok.sum()
            c = np.where(pos_N[ok], "tab:red", "tab:blue") if pos_N is not None else "tab:blue"
            ax.scatter(x, y, s=4, c=c, alpha=0.6)
            rho = next(r["spearman"] for r in entry["pooled"] if r["name"] == score)
            ax.set(title=f"{score} (pooled rho {rho:.2f})", xlabel="score rank", ylabel="CM rank")
        fig.suptitle(f"{name}, seed {seed}" + (" (red: positives)" if pos_N is not None else ""), fontsize=9)
        fig.tight_layout()
        fig.savefig(os.path.join(workdir, f"scatter_{name}.png"), dpi=90)
        plt.close(fig)
        panels = 2 if pos_N is not None else 1
        fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 3.8), squeeze=False)
        ok = np.isfinite(truth_N)
        for score in names:
            s = np.nan_to_num(scores[score][ok], nan=-np.inf)
            cur = leaderboard.precision_curve(s, truth_N=truth_N[ok], seed=seed)
            axes[0, 0].plot(cur["k_K"] / ok.sum(), cur["precision_K"], label=score, lw=1)
            if pos_N is not None:
                cur_p = leaderboard.precision_curve(s, positive_N=pos_N[ok], seed=seed)
                axes[0, 1].plot(cur_p["k_K"] / ok.sum(), cur_p["precision_K"], label=score, lw=1)
        axes[0, 0].plot(cur["k_K"] / ok.sum(), cur["random_K"], "k:", label="random (expected)")
        axes[0, 0].set(title=f"{name}: overlap with CM's top k", xlabel="k / N", ylabel="precision", xscale="log")
        if pos_N is not None:
            axes[0, 1].plot(cur_p["k_K"] / ok.sum(), cur_p["random_K"], "k:", label="random (expected)")
            axes[0, 1].set(title=f"{name}: positives in the top k", xlabel="k / N", xscale="log")
        axes[0, 0].legend(fontsize=6)
        fig.tight_layout()
        fig.savefig(os.path.join(workdir, f"precision_{name}.png"), dpi=90)
        plt.close(fig)


def write(cfg: ScoresConfig, workdir: str, command: str = "") -> dict:
    commands = ""
    if os.path.exists(os.path.join(workdir, "commands.txt")):
        with open(os.path.join(workdir, "commands.txt")) as f:
            commands = f.read().strip()
    commands = commands or command
    res = analyze(cfg, workdir)
    res["commands"] = commands
    res["interventions"] = interventions.analyze(cfg, workdir)
    _plots(cfg, res, workdir)
    jsonio.write(os.path.join(workdir, "results.json"), res)
    with open(os.path.join(workdir, "report.md"), "w") as f:
        f.write(_markdown(res, cfg, commands))
    return res
