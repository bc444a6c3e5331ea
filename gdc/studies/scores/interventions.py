"""The score benchmark's interventions: prune / down-weight by the leaderboard's best score beside m, d and random.

Per seed and setting the best score is chosen out of sample, leave one seed out: the top of the leaderboard pooled
over the other seeds of ``scores.seeds`` (Spearman with counterfactual memorization of the loss, the random control
excluded), so the seed whose arms use it played no part in choosing it (with a single seed the choice is in-sample,
and says so). The in-sample choice (every seed pooled) is reported beside it. Per seed and setting, from the tracked
run's scores (``result.npz``), the arms:

  * ``prune_best``, ``prune_m``, ``prune_d``: remove the top ``scores.prune_fraction`` by that score
    (``gdc.interventions.prune_top``); ``prune_random``: a seeded random subset of the same size;
  * ``downweight_best``, ``downweight_random``: loss weight ``scores.alpha`` on the ``prune_best`` / ``prune_random``
    sets.

Each arm retrains with the engine (``loop.train``, the tracked run's RunConfig with ``train.keep_idx_path`` /
``train.weights_path``) into ``seed_S/<setting>/arms/<arm>/run``; the arms and the baseline (the tracked run) are
evaluated alike (``evaluate_params``) into ``arms/<arm>/eval.json``.
"""

import dataclasses
import os

import jax
import numpy as np
import scipy.stats
from sklearn import metrics

from gdc import evaluation, interventions, jsonio, sharding
from gdc.evaluation.common import per_example_stats
from gdc.influence import counterfactual
from gdc.scoring import leaderboard
from gdc.studies.scores import study
from gdc.studies.scores.config import ScoresConfig
from gdc.train import loop

ARMS = ("baseline", "prune_best", "prune_m", "prune_d", "prune_random", "downweight_best", "downweight_random")
# metric -> (what it measures, higher is more memorization / better utility)
METRICS = {
    "heldout_loss": "held-out mean loss (utility; lower is better)",
    "loss_gap": "held-out mean loss minus the mean training loss of the kept examples",
    "mia_auc": "loss-threshold MIA AUC (score -loss), kept training examples vs held-out",
    "digit_acc_kept": "teacher-forced secret-digit accuracy on the canary copies still trained on",
    "digit_acc_all": "teacher-forced secret-digit accuracy on every canary copy",
    "noisy_train_acc": "training accuracy on the flipped labels still in the data (memorized noise)",
}


def best_score(cfg: ScoresConfig, workdir: str, setting: str, exclude_seed: int | None = None) -> str:
    """The top of ``setting``'s leaderboard by Spearman with CM (random excluded), pooled over ``scores.seeds``
    without ``exclude_seed``."""
    from gdc.studies.scores import report

    tables = []
    for seed in cfg.seeds:
        if seed == exclude_seed:
            continue
        info, arrays = study.load_setting(study.setting_dir(workdir, seed, setting))
        tables.append(report.seed_tables(cfg, info, arrays)[setting])
    pooled = [r for r in leaderboard.pool(tables) if r["name"] != "random" and np.isfinite(r["spearman"])]
    return pooled[0]["name"]


def held_out_choices(cfg: ScoresConfig, workdir: str, setting: str) -> dict[int, str]:
    """Per seed, the best score chosen on the other seeds (leave one seed out; in-sample with a single seed)."""
    if len(cfg.seeds) == 1:
        return {cfg.seeds[0]: best_score(cfg, workdir, setting)}
    return {seed: best_score(cfg, workdir, setting, exclude_seed=seed) for seed in cfg.seeds}


def build_arms(cfg: ScoresConfig, arrays: dict[str, np.ndarray], best: str, seed: int) -> list:
    """The intervention artefacts of one seed (``prune_*``, ``downweight_*``) from its ``result.npz`` arrays."""
    n, p = len(arrays["positive_N"]), cfg.prune_fraction
    arms = {}
    for key, name in (("best", best), ("m", "m"), ("d", "d")):
        score_N = arrays[f"score_{name}_N"]
        arms[f"prune_{key}"] = interventions.prune_top(score_N, p, f"prune_{key}", seed=seed, score=name)
    arms["prune_random"] = interventions.prune_random(n, p, "prune_random", seed=seed)
    arms["prune_random"].info["score"] = "random"
    for key in ("best", "random"):
        ids = arms[f"prune_{key}"].affected_ids
        score = arms[f"prune_{key}"].info.get("score", "random")
        arms[f"downweight_{key}"] = interventions.downweight(ids, cfg.alpha, n, f"downweight_{key}", score=score)
    return list(arms.values())


def evaluate_params(graphdef, params, dataset, mesh, kept_N: np.ndarray) -> dict[str, float]:
    """Utility and memorization of one model; ``kept_N``: the training examples it trained on."""
    ctx = evaluation.EvalContext(graphdef=graphdef, params=params, mesh=mesh, dataset=dataset, batch_size=64)
    out = {k: float(v) for k, v in evaluation.evaluate(ctx, ["perplexity"]).items() if np.ndim(v) == 0}
    train = per_example_stats(ctx, dataset.train)
    held = per_example_stats(ctx, dataset.heldout)
    out["loss_gap"] = float(held["loss"].mean() - train["loss"][kept_N].mean())
    labels = np.r_[np.ones(kept_N.sum()), np.zeros(len(held["loss"]))]
    out["mia_auc"] = float(metrics.roc_auc_score(labels, -np.r_[train["loss"][kept_N], held["loss"]]))
    if dataset.kind == "lm":
        n, seq_len = dataset.num_train, dataset.train["token_mask"].shape[1]
        span_NxL = counterfactual.canary_span_mask(dataset.meta["canaries"], n, seq_len)
        data = {k: dataset.train[k] for k in ("tokens", "token_mask")}
        acc_N = counterfactual.performance(
            graphdef, jax.tree.map(lambda a: a[None], params), data, span_mask_NxL=span_NxL
        )
        acc_N = np.asarray(acc_N["span_acc_KxN"][0])
        copies_N = span_NxL.any(axis=1)
        out["digit_acc_all"] = float(np.nanmean(acc_N[copies_N]))
        out["digit_acc_kept"] = float(np.nanmean(acc_N[copies_N & kept_N])) if (copies_N & kept_N).any() else np.nan
    else:
        noisy_N = np.asarray(dataset.train["is_noisy"], bool) & kept_N
        out["noisy_train_acc"] = float(train["accuracy"][noisy_N].mean()) if noisy_N.any() else np.nan
    return out


def run_setting(cfg: ScoresConfig, setting: str, seed: int, out_dir: str, best: str) -> None:
    """Writes, retrains and evaluates every arm of one seed and setting (an arm with eval.json is skipped)."""
    _, arrays = study.load_setting(out_dir)
    rc = study.run_config(cfg, setting, seed)
    rc = dataclasses.replace(rc, tracker=dataclasses.replace(rc.tracker, spans="none"))
    mesh = sharding.make_mesh(jax.devices()[:1])
    positive_N = arrays["positive_N"]
    n = len(positive_N)
    runs = [("baseline", None, os.path.join(out_dir, "run"))]
    runs += [(a.name, a, os.path.join(out_dir, "arms", a.name, "run")) for a in build_arms(cfg, arrays, best, seed)]
    for name, art, run_dir in runs:
        folder = os.path.join(out_dir, "arms", name)
        if os.path.exists(os.path.join(folder, "eval.json")):
            continue
        arm_rc = rc
        if art is not None:
            paths = interventions.write(art, folder)
            arm_rc = dataclasses.replace(rc, train=dataclasses.replace(rc.train, **paths))
            study.log(f"seed {seed} {setting}: retraining {name}")
            loop.train(arm_rc, run_dir, mesh=mesh)
        graphdef, params, dataset, _ = loop.restore_params(arm_rc, run_dir, mesh)
        kept_N = np.ones(n, bool)
        if art is not None and art.keep_idx is not None:
            kept_N[art.affected_ids] = False
        removed = ~kept_N
        record = evaluate_params(graphdef, params, dataset, mesh, kept_N)
        affected = art.affected_ids if art is not None else np.zeros(0, np.int64)
        record.update(
            removed=int(removed.sum()),
            positives_removed=int(positive_N[removed].sum()),
            affected=int(len(affected)),
            positives_affected=int(positive_N[affected].sum()),
            score=(art.info.get("score") if art is not None else None),
        )
        os.makedirs(folder, exist_ok=True)
        jsonio.write(os.path.join(folder, "eval.json"), record, indent=2)


def run(cfg: ScoresConfig, workdir: str) -> None:
    for setting in cfg.settings:
        choices = held_out_choices(cfg, workdir, setting)
        study.log(f"{setting}: interventions by the best score of the other seeds {choices} beside m, d and random")
        for seed in cfg.seeds:
            run_setting(cfg, setting, seed, study.setting_dir(workdir, seed, setting), choices[seed])


def _interval(v: np.ndarray) -> tuple[float, float, float]:
    v = v[np.isfinite(v)]
    if not v.size:
        return np.nan, np.nan, np.nan
    mean = float(v.mean())
    half = scipy.stats.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size) if v.size >= 2 else np.nan
    return mean, mean - half, mean + half


def analyze(cfg: ScoresConfig, workdir: str) -> dict:
    """Per setting: the best score and every arm's metrics pooled over seeds (mean and 95% t-interval)."""
    out = {"prune_fraction": cfg.prune_fraction, "alpha": cfg.alpha, "settings": {}}
    for setting in cfg.settings:
        evals = {}
        for seed in cfg.seeds:
            for arm in ARMS:
                path = os.path.join(study.setting_dir(workdir, seed, setting), "arms", arm, "eval.json")
                if not os.path.exists(path):
                    return {}
                evals.setdefault(arm, []).append(jsonio.read(path))
        rows = []
        for arm, recs in evals.items():
            row = {"arm": arm, "score": recs[0]["score"]}
            for key in ("heldout_perplexity", "heldout_accuracy", *METRICS):
                if key in recs[0]:
                    row[key], row[f"{key}_lo"], row[f"{key}_hi"] = _interval(
                        np.array([r[key] for r in recs], np.float64)
                    )
            for key in ("removed", "positives_removed", "affected", "positives_affected"):
                row[key] = float(np.mean([r[key] for r in recs]))
            rows.append(row)
        per_seed = dict(zip(cfg.seeds, (r["score"] for r in evals["prune_best"]), strict=True))
        for row in rows:  # the best arms' score per seed: "name" when every seed chose the same
            if row["arm"].endswith("_best"):
                row["score"] = _choice_label(per_seed)
        out["settings"][setting] = {
            "best": _choice_label(per_seed),
            "best_per_seed": per_seed,
            "in_sample_best": best_score(cfg, workdir, setting),
            "choice": "leave one seed out" if len(cfg.seeds) > 1 else "in-sample (a single seed)",
            "rows": rows,
            "per_seed": evals,
        }
    return out


def _choice_label(per_seed: dict[int, str]) -> str:
    names = sorted(set(per_seed.values()))
    if len(names) == 1:
        return names[0]
    return " / ".join(f"{n} (seed {', '.join(str(s) for s, v in per_seed.items() if v == n)})" for n in names)


def _cell(row: dict, key: str) -> str:
    if key not in row or not np.isfinite(row[key]):
        return "n/a"
    lo, hi = row[f"{key}_lo"], row[f"{key}_hi"]
    return f"{row[key]:.3f} [{lo:.3f}, {hi:.3f}]" if np.isfinite(lo) else f"{row[key]:.3f}"


def _compare(a: dict, b: dict, key: str) -> str:
    """Whether ``a``'s interval of ``key`` lies below, above or overlaps ``b``'s."""
    if key not in a or not (np.isfinite(a[f"{key}_lo"]) and np.isfinite(b[f"{key}_lo"])):
        return "not resolved (no interval)"
    if a[f"{key}_hi"] < b[f"{key}_lo"]:
        return "lower (intervals disjoint)"
    if a[f"{key}_lo"] > b[f"{key}_hi"]:
        return "higher (intervals disjoint)"
    return "the intervals overlap"


def verdict(setting: str, entry: dict) -> str:
    rows = {r["arm"]: r for r in entry["rows"]}
    down, down_random = rows["downweight_best"], rows["downweight_random"]
    mem = "digit_acc_all" if setting == "lm" else "noisy_train_acc"
    best = rows["prune_best"]
    parts = []
    for other in ("prune_m", "prune_d", "prune_random"):
        o = rows[other]
        if other[len("prune_") :] == entry["best"]:
            parts.append(f"`{other}` is the same arm (every seed chose {entry['best']})")
            continue
        parts.append(
            f"against `{other}` (positives removed {o['positives_removed']:.1f}): {mem} "
            f"{_compare(best, o, mem)}, held-out loss {_compare(best, o, 'heldout_loss')}"
        )
    return (
        f"**Verdict (`{setting}`)**: pruning by the best score of the other seeds (`{entry['best']}`) removes "
        f"{best['positives_removed']:.1f} positives of {best['removed']:.0f} on average; its {mem} is "
        f"{_cell(best, mem)} and its held-out loss {_cell(best, 'heldout_loss')}; "
        + "; ".join(parts)
        + f". Down-weighting the best score's set by alpha: {mem} {_cell(down, mem)} against "
        f"{_cell(down_random, mem)} for the random set ({_compare(down, down_random, mem)})."
    )


def markdown(iv: dict) -> list[str]:
    """The interventions section of report.md (empty when the stage has not run)."""
    if not iv:
        return []
    lines = [
        "## Interventions by the best score",
        "",
        "Per seed and setting the best score is chosen out of sample: the top of the leaderboard pooled over the "
        "other seeds (Spearman with CM of the loss, random excluded; leave one seed out), so a seed's arms never "
        "use a choice its own numbers made. Each arm removes (`prune_*`) the top "
        f"{iv['prune_fraction']:.0%} of the training set by its score, or a seeded random subset of that size, or "
        f"weights the loss of the best score's / the random set by alpha = {iv['alpha']} (`downweight_*`), and "
        "retrains with the tracked run's data, model, optimizer and epochs. Every model (the tracked run is "
        "`baseline`) is evaluated alike: held-out loss (utility); the loss gap (held-out mean loss minus the mean "
        "training loss of the kept examples) and the loss-threshold MIA AUC (-loss, kept training examples vs "
        "held-out); LM: teacher-forced secret-digit accuracy of the canary copies still trained on and of every copy; "
        "MLP: training accuracy on the flipped labels still in the data. Means over seeds with 95% t-intervals; "
        "positives: canary copies (LM) / flipped labels (MLP).",
        "",
    ]
    for setting, entry in iv["settings"].items():
        keys = ["heldout_loss", "loss_gap", "mia_auc"]
        keys += ["digit_acc_kept", "digit_acc_all"] if setting == "lm" else ["noisy_train_acc"]
        chosen = ", ".join(f"seed {s}: `{n}`" for s, n in entry["best_per_seed"].items())
        lines += [
            f"### `{setting}` (best score: `{entry['best']}`)",
            "",
            f"Chosen {entry['choice']}: {chosen}; the in-sample choice (every seed pooled) would be "
            f"`{entry['in_sample_best']}`.",
            "",
            "| arm | score | removed / weighted | positives among them | " + " | ".join(keys) + " |",
            "|---|---|---|---|" + "---|" * len(keys),
        ]
        for r in entry["rows"]:
            cells = [_cell(r, k) for k in keys]
            lines.append(
                f"| `{r['arm']}` | {r['score'] or '-'} | {r['affected']:.1f} | {r['positives_affected']:.1f} | "
                + " | ".join(cells)
                + " |"
            )
        lines += ["", verdict(setting, entry), ""]
    return lines
