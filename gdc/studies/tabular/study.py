"""The tabular diffusion study (``--mode=all``): memorization of a DDPM on a small table, scored and intervened on.

Per table and seed, under ``workdir/<table>/seed_S/``:
  * ``table.npz``: the encoded train/held-out table the engine reads (``data.source='tabular'``).
  * The held-out floor: real held-out rows never trained on, tested against the training rows like generated rows;
    every Mem. Ratio is also reported as its excess over this floor, at the published per-query scaling and at the
    fixed scaling (``metrics``), with the numeric distance from flagged rows to their nearest training row.
  * ``probe/``: the baseline model trained by the engine with one fixed-draw scoring pass per epoch (the tracker's
    d_i and m_i), stopped at ``stops`` evenly spaced epochs; at each stop rows are generated and the distance-ratio
    test run (``probe_stops.npz``): Mem. Ratio vs epochs and per-row replica events per stop (the last stop is the
    ground truth; the earlier ones are DynamicCut's epoch-wise counts).
  * ``size_N/``: runs on the first N training rows (Mem. Ratio vs N).
  * ``arms/<arm>/``: retrains at the same epochs: TabCutMix / TabCutMixPlus (+30 % rows), DynamicCut, GenDataCarto
    pruning by m_i (ties: lower d_i first) and by d_i (the hardest, outlier-like rows; ties: higher m_i), random
    pruning (all pruning arms remove the same number of rows), down-weighting (loss weight alpha) of the rows
    gdc_prune_d would remove, and ``other_model``: the unchanged table under the other ``tabular.model`` kind.
  * ``result.json``: everything this seed reports. A finished stage (its output file exists) is never redone, and
    engine runs resume from their checkpoints.
Seeds change the model's initialisation, data order, noise draws and augmentation; the table and split are fixed.
"""

import dataclasses
import os
import time

import jax
import numpy as np
from flax import nnx
from scipy import stats
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import roc_auc_score

from gdc import interventions as iv
from gdc import jsonio
from gdc.data import sources
from gdc.models import ddpm, tabddpm
from gdc.scoring import cartography as carto
from gdc.scoring import workdir as score_workdir
from gdc.scoring.sweep import detector_auroc
from gdc.studies.tabular import data, metrics, sharp_sweep, sharpness, tcm
from gdc.studies.tabular.config import TabularConfig
from gdc.train import config as config_lib
from gdc.train import loop


def _log(msg: str) -> None:
    print(f"[tabular] {msg}", flush=True)


def engine_config(
    cfg: TabularConfig, seed: int, table_path: str, *, scoring: bool, keep_idx_path: str = "", weights_path: str = ""
):
    """The engine's RunConfig for one DDPM run on the encoded table at ``table_path``."""
    return config_lib.from_mapping(
        {
            "seed": seed,
            "data": {"source": "tabular", "path": table_path},
            "model": {
                "name": {"gaussian": "ddpm", "multinomial": "tabddpm"}[cfg.model],
                "width": cfg.width,
                "depth": cfg.depth,
                "diffusion_steps": cfg.diffusion_steps,
                "score_draws": cfg.score_draws,
            },
            "train": {
                "batch_size": cfg.batch_size,
                "num_epochs": cfg.epochs,
                "optimizer": "adam",
                "learning_rate": cfg.learning_rate,
                "schedule": cfg.schedule,
                "keep_idx_path": keep_idx_path,
                "weights_path": weights_path,
            },
            # Thresholds of the in-run state machine only; m_i is recomputed offline at a loss percentile.
            "tracker": {"criterion": "loss", "eps_low": 0.5, "eps_high": 0.5, "scoring_passes": int(scoring)},
            "checkpoint": {"every_epochs": cfg.epochs, "max_to_keep": 1},
            "log": {"every_steps": 1000, "progress": False, "tensorboard": False},
        }
    )


_SAMPLERS: dict = {}


def generate(graphdef, params, num_rows: int, key: jax.Array) -> np.ndarray:
    """``num_rows`` encoded rows by ancestral sampling (one jitted sampler per graph and row count)."""
    if (graphdef, num_rows) not in _SAMPLERS:
        sampler = tabddpm.sample if isinstance(nnx.merge(graphdef, params), tabddpm.TabDDPM) else ddpm.sample
        _SAMPLERS[(graphdef, num_rows)] = jax.jit(lambda p, k: sampler(nnx.merge(graphdef, p), k, num_rows))
    return np.asarray(_SAMPLERS[(graphdef, num_rows)](params, key))


def utility(generated: data.Table, heldout: data.Table, enc: data.Encoder, seed: int) -> dict:
    """A random forest trained on (generated) rows, tested on real held-out rows: accuracy and ROC AUC."""
    features = lambda t: enc.encode(t)[:, : enc.width - enc.num_classes]  # noqa: E731
    if len(np.unique(generated.y_N)) < 2:
        return {"accuracy": float("nan"), "auc": float("nan")}
    clf = RandomForestClassifier(n_estimators=100, random_state=seed, n_jobs=1).fit(features(generated), generated.y_N)
    proba = clf.predict_proba(features(heldout))
    acc = float((clf.classes_[proba.argmax(1)] == heldout.y_N).mean())
    if enc.num_classes == 2 and set(clf.classes_) == {0, 1}:
        auc = float(roc_auc_score(heldout.y_N, proba[:, 1]))
    else:
        auc = float("nan")
    return {"accuracy": acc, "auc": auc}


def _train(cfg, seed: int, table_path: str, run_dir: str, *, scoring=False, keep="", weights="", max_steps=None):
    rc = engine_config(cfg, seed, table_path, scoring=scoring, keep_idx_path=keep, weights_path=weights)
    result = loop.train(rc, run_dir, max_steps=max_steps)
    graphdef, _ = loop.build_model(rc, sources.build_dataset(rc.data))
    return graphdef, result.state.params


def _write_table(path: str, enc: data.Encoder, train: data.Table, heldout: data.Table) -> str:
    if not os.path.exists(path):
        data.save(path, enc.encode(train), train.y_N, enc.encode(heldout), heldout.y_N, layout=enc.layout)
    return path


def _mem(generated: data.Table, train: data.Table, dedupe: bool, floor: dict) -> dict:
    """Mem. Ratio and Mem-AUC at both scales, and the excess over the held-out floor (generated - fresh real)."""
    out = {}
    for scale, suffix in (("per_query", ""), ("fixed", "_fixed")):
        m = metrics.measure(generated, train, dedupe, scale)
        out[f"mem_ratio{suffix}"] = m["mem_ratio"]
        out[f"mem_auc{suffix}"] = m["mem_auc"]
        out[f"excess{suffix}"] = m["mem_ratio"] - floor[scale]
    return out


def _groups_intact(new: data.Table, table: data.Table, a_M: np.ndarray, b_M: np.ndarray, groups) -> float | None:
    """Share of mixed rows (parents differ) whose every planted group comes whole from one parent."""
    if not groups or not np.any(a_M != b_M):
        return None
    vals = lambda t, rows: np.concatenate([t.num_NxF[rows], t.cat_NxFc[rows].astype(np.float64)], axis=1)  # noqa: E731
    differ = a_M != b_M
    got = vals(new, np.flatnonzero(differ))
    from_a, from_b = got == vals(table, a_M[differ]), got == vals(table, b_M[differ])
    ok = np.ones(int(differ.sum()), bool)
    for g in groups:
        g = list(g)
        ok &= from_a[:, g].all(axis=1) | from_b[:, g].all(axis=1)
    return float(ok.mean())


def run_seed(cfg: TabularConfig, seed: int, workdir: str, dataset: str | None = None) -> dict:
    """Runs (or resumes) one seed on one table; returns and writes ``<dataset>/seed_S/result.json``."""
    dataset = dataset or cfg.datasets[0]
    out_dir = os.path.join(workdir, dataset, f"seed_{seed}")
    result_path = os.path.join(out_dir, "result.json")
    if os.path.exists(result_path):
        return jsonio.read(result_path)
    os.makedirs(out_dir, exist_ok=True)
    start = time.time()
    table = data.load(dataset, num_rows=cfg.num_rows, seed=0, csv_path=cfg.csv_path)
    train, heldout = data.split(table, cfg.num_train, cfg.num_heldout, seed=0)
    enc = data.Encoder.fit(train)
    n = len(train)
    g = max(2, int(round(cfg.generated_factor * n)))
    table_path = _write_table(os.path.join(out_dir, "table.npz"), enc, train, heldout)
    res: dict = {
        "dataset": dataset,
        "seed": seed,
        "table_rows": len(table),
        "num_train": n,
        "num_heldout": len(heldout),
        "encoded_width": enc.width,
    }
    # ---- The held-out floor: fresh real rows never trained on, tested against the training rows. ----
    held = {scale: metrics.measure(heldout, train, cfg.dedupe, scale) for scale in metrics.SCALES}
    floor = {scale: held[scale]["mem_ratio"] for scale in metrics.SCALES}
    res["heldout_mem_ratio"], res["heldout_mem_ratio_fixed"] = floor["per_query"], floor["fixed"]
    res["heldout_mem_ratio_no_dedupe"] = metrics.memorization(heldout, train)["mem_ratio"]
    typical = float(np.quantile(held["per_query"]["gap_nearest_Q"], 0.95))
    res["heldout_gap_nearest"] = {"q50": float(np.median(held["per_query"]["gap_nearest_Q"])), "q95": typical}

    # ---- Probe: baseline run with scoring passes, stopped at evenly spaced epochs; generate at each stop. ----
    probe_dir = os.path.join(out_dir, "probe")
    spe = -(-n // cfg.batch_size)
    stop_epochs = sorted({max(1, round(cfg.epochs * (k + 1) / cfg.stops)) for k in range(cfg.stops)})
    stops_path = os.path.join(out_dir, "probe_stops.npz")
    stops = dict(np.load(stops_path)) if os.path.exists(stops_path) else {}
    for e in stop_epochs:
        if f"counts_{e}" in stops:
            continue
        _log(f"{dataset} seed {seed}: probe to epoch {e}")
        graphdef, params = _train(cfg, seed, table_path, probe_dir, scoring=True, max_steps=e * spe)
        x_gen = generate(graphdef, params, g, jax.random.fold_in(jax.random.PRNGKey(seed), e))
        gen = enc.decode(x_gen)
        m = metrics.measure(gen, train, cfg.dedupe)
        mf = metrics.measure(gen, train, cfg.dedupe, "fixed")
        stops.update(
            {
                f"counts_{e}": m["counts_N"],
                f"mem_{e}": np.array([m["mem_ratio"], m["mem_auc"], mf["mem_ratio"], mf["mem_auc"]]),
                f"mem_raw_{e}": np.array([metrics.memorization(gen, train)["mem_ratio"]]),
                f"x_gen_{e}": x_gen,
                f"replica_{e}": m["replica_Q"],
                f"replica_fixed_{e}": mf["replica_Q"],
                f"gap_nn1_{e}": m["gap_nn1_Q"],
            }
        )
        np.savez(stops_path, **stops)
    last = stop_epochs[-1]
    mem_at = lambda e, i: float(stops[f"mem_{e}"][i])  # noqa: E731
    res["mem_vs_epochs"] = {
        "epochs": stop_epochs,
        "mem_ratio": [mem_at(e, 0) for e in stop_epochs],
        "mem_auc": [mem_at(e, 1) for e in stop_epochs],
        "mem_ratio_fixed": [mem_at(e, 2) for e in stop_epochs],
        "excess": [mem_at(e, 0) - floor["per_query"] for e in stop_epochs],
        "excess_fixed": [mem_at(e, 2) - floor["fixed"] for e in stop_epochs],
        "mem_ratio_no_dedupe": [float(stops[f"mem_raw_{e}"][0]) for e in stop_epochs],
    }
    counts_N = stops[f"counts_{last}"]
    graphdef, params = _train(cfg, seed, table_path, probe_dir, scoring=True)  # restores the finished run
    gen_base = enc.decode(stops[f"x_gen_{last}"])
    res["arms"] = {
        "baseline": {
            "mem_ratio": mem_at(last, 0),
            "mem_auc": mem_at(last, 1),
            "excess": mem_at(last, 0) - floor["per_query"],
            "mem_ratio_fixed": mem_at(last, 2),
            "mem_auc_fixed": mem_at(last, 3),
            "excess_fixed": mem_at(last, 2) - floor["fixed"],
            **utility(gen_base, heldout, enc, seed),
        }
    }
    res["real_utility"] = utility(train, heldout, enc, seed)
    # What the per-query scaling flags: numeric distance (training sds) from each flagged row to its nearest row.
    flag_pq, flag_fx = stops[f"replica_{last}"].astype(bool), stops[f"replica_fixed_{last}"].astype(bool)
    gap = stops[f"gap_nn1_{last}"]
    res["flag_gaps"] = {
        "per_query": metrics.gap_summary(gap, flag_pq, typical),
        "fixed": metrics.gap_summary(gap, flag_fx, typical),
        "per_query_only": metrics.gap_summary(gap, flag_pq & ~flag_fx, typical),
        "share_per_query_flags_not_fixed": float((flag_pq & ~flag_fx).sum() / max(flag_pq.sum(), 1)),
    }
    np.savez(os.path.join(out_dir, "gaps.npz"), flagged=gap[flag_pq], heldout=held["per_query"]["gap_nearest_Q"])

    # ---- Scores: d_i, m_i from the tracker's scoring passes; sharpness at training and generated rows. ----
    res.update(scores_stage(cfg, seed, out_dir, table_path, graphdef, params, enc, train, counts_N, stops, last))
    d_N, m_N = np.load(os.path.join(out_dir, "scores.npz"))["d"], np.load(os.path.join(out_dir, "scores.npz"))["m"]

    # ---- Mem. Ratio against N. ----
    res["mem_vs_size"] = {}
    for size in sorted({min(s, n) for s in cfg.sizes}):  # a real table may hold fewer rows than num_train
        if size == n:
            res["mem_vs_size"][str(size)] = res["arms"]["baseline"]["mem_ratio"]
            continue
        sub = train.take(np.arange(size))
        path = _write_table(os.path.join(out_dir, f"table_{size}.npz"), enc, sub, heldout)
        _log(f"{dataset} seed {seed}: size {size}")
        gd, p = _train(cfg, seed, path, os.path.join(out_dir, f"size_{size}"))
        gs = max(2, int(round(cfg.generated_factor * size)))
        x = generate(gd, p, gs, jax.random.fold_in(jax.random.PRNGKey(seed), 10_000 + size))
        res["mem_vs_size"][str(size)] = metrics.measure(enc.decode(x), sub, cfg.dedupe)["mem_ratio"]

    # ---- Interventions at matched budget: +30 % rows (TCM, TCMP) or -10 % rows (pruning). ----
    clusters = tcm.feature_clusters(train)
    res["clusters"] = [c.tolist() for c in clusters]
    res["planted_groups"] = [list(gr) for gr in table.groups]
    if table.groups:
        res["clusters_recover_groups"] = float(sorted(map(tuple, res["clusters"])) == sorted(table.groups))
    # DynamicCut: per-row replica events at every probe stop before the last (the last is the ground truth).
    dc_epochs = stop_epochs[:-1] or stop_epochs
    dc_counts = np.stack([stops[f"counts_{e}"] for e in dc_epochs])
    dc_keep, dc_info = tcm.dynamic_cut(dc_counts, cfg.prune_fraction, seed)
    res["dynamic_cut"] = {
        "checkpoints": dc_epochs,
        "replica_events_per_stop": dc_counts.sum(axis=1).tolist(),
        **dc_info,
    }
    pruned = {
        "dynamic_cut": dc_keep,
        "gdc_prune_m": iv.prune_top(m_N, cfg.prune_fraction, "m", tie_break_N=-d_N, seed=seed).keep_idx,
        "gdc_prune_d": iv.prune_top(d_N, cfg.prune_fraction, "d", tie_break_N=m_N, seed=seed).keep_idx,
        "random_prune": iv.prune_random(n, cfg.prune_fraction, "random", seed=seed).keep_idx,
    }
    for arm in cfg.arms:
        if arm == "baseline":
            continue
        arm_dir = os.path.join(out_dir, "arms", arm)
        os.makedirs(arm_dir, exist_ok=True)
        keep, weights, path, arm_cfg = "", "", table_path, cfg
        if arm == "other_model":  # the unchanged table under the other model kind (Gaussian <-> TabDDPM hybrid)
            arm_cfg = dataclasses.replace(cfg, model={"gaussian": "multinomial", "multinomial": "gaussian"}[cfg.model])
        elif arm == "gdc_downweight_d":
            weights = os.path.join(arm_dir, "weights_N.npy")
            hot = np.setdiff1d(np.arange(n), pruned["gdc_prune_d"])
            np.save(weights, iv.downweight(hot, cfg.downweight_alpha, n, arm).weights_N)
        elif arm in ("tcm", "tcmp"):
            num_new = int(round(cfg.augment_fraction * n))
            fn = tcm.tabcutmix if arm == "tcm" else tcm.tabcutmix_plus
            kw = {} if arm == "tcm" else {"clusters": clusters}
            new, a_M, b_M = fn(train, num_new, seed, **kw)
            res[f"{arm}_groups_intact"] = _groups_intact(new, train, a_M, b_M, table.groups)
            path = _write_table(os.path.join(arm_dir, "table.npz"), enc, train.append(new), heldout)
        else:
            keep = os.path.join(arm_dir, "keep_idx.npy")
            np.save(keep, pruned[arm])
        _log(f"{dataset} seed {seed}: arm {arm}")
        gd, p = _train(arm_cfg, seed, path, os.path.join(arm_dir, "run"), keep=keep, weights=weights)
        x = generate(gd, p, g, jax.random.fold_in(jax.random.PRNGKey(seed), 20_000 + len(res["arms"])))
        gen = enc.decode(x)
        res["arms"][arm] = {**_mem(gen, train, cfg.dedupe, floor), **utility(gen, heldout, enc, seed)}
        if keep:
            removed = np.setdiff1d(np.arange(n), pruned[arm])
            res["arms"][arm]["removed_rows"] = int(len(removed))
            res["arms"][arm]["removed_baseline_counts"] = int(counts_N[removed].sum())
    res["seconds"] = time.time() - start
    jsonio.write(result_path, res)
    return jsonio.roundtrip(res)


def scores_stage(cfg, seed, out_dir, table_path, graphdef, params, enc, train, counts_N, stops, last) -> dict:
    """d_i, m_i and the other scores against the final per-row replica counts; sharpness at generated rows."""
    res: dict = {}
    n = len(train)
    loss_ExN, _ = score_workdir.load_loss_matrix(os.path.join(out_dir, "probe"), "passes")
    e_count = loss_ExN.shape[0]
    d_N = carto.difficulty(loss_ExN, max(1, round(cfg.early_fraction * e_count)))
    eps = carto.resolve_eps(loss_ExN, "percentile", cfg.eps_percentile)
    m_N = carto.forget_events(loss_ExN, eps)["forget_N"] / max(e_count - 1, 1)
    uv_N, _ = carto.upward_variation(loss_ExN)
    final_N = carto.final_loss(loss_ExN).astype(np.float64)
    eig_train = sharpness.eigenvalues(graphdef, params, enc.encode(train), cfg.sharp_t)
    sh_train = sharpness.summary(eig_train, cfg.kappa)
    scores = {
        "m": m_N,
        "upward_variation": uv_N,
        "d": d_N,
        "neg_d": -d_N,
        "neg_final_loss": -final_N,
        "sharp_neg_sum": -sh_train["neg_sum"],
        "sharp_count": sh_train["count_below"].astype(np.float64),
        "neg_trace": -sh_train["trace"],
    }
    positive_N = counts_N > 0
    k10 = max(1, int(round(0.1 * n)))
    res["scores_vs_counts"] = {"base_rate": float(positive_N.mean()), "rows_with_counts": int(positive_N.sum())}
    for name, s in scores.items():
        ids, _ = carto.top_fraction(s, 0.1, seed=seed)
        rho = stats.spearmanr(s, counts_N).statistic if np.std(s) > 0 and np.std(counts_N) > 0 else float("nan")
        res["scores_vs_counts"][name] = {
            "spearman": float(rho),
            "precision_at_10": float(positive_N[ids[:k10]].mean()),
            "mass_at_10": float(counts_N[ids[:k10]].sum() / max(counts_N.sum(), 1)),
            "auroc": detector_auroc(s, positive_N),
        }
    res["planted"] = {
        k: {
            "rows": int(v.sum()),
            "mean_count": float(counts_N[v].mean()) if v.any() else None,
            "mean_count_other": float(counts_N[~v].mean()),
            "replica_share": float(counts_N[v].sum() / max(counts_N.sum(), 1)),
            "m_auroc": detector_auroc(m_N, v),
            "neg_d_auroc": detector_auroc(-d_N, v),
            "sharp_auroc": detector_auroc(-sh_train["neg_sum"], v),
        }
        for k, v in train.flags.items()
    }
    x_gen = stops[f"x_gen_{last}"]
    replica_Q = stops[f"replica_{last}"].astype(bool)
    sh_gen = sharpness.summary(sharpness.eigenvalues(graphdef, params, x_gen, cfg.sharp_t), cfg.kappa)
    res["sharpness_generated"] = {
        "replicas": int(replica_Q.sum()),
        "auroc_neg_sum": detector_auroc(-sh_gen["neg_sum"], replica_Q),
        "auroc_count_below": detector_auroc(sh_gen["count_below"], replica_Q),
        "auroc_neg_trace": detector_auroc(-sh_gen["trace"], replica_Q),
        "mean_neg_sum_replica": float(sh_gen["neg_sum"][replica_Q].mean()) if replica_Q.any() else None,
        "mean_neg_sum_other": float(sh_gen["neg_sum"][~replica_Q].mean()) if (~replica_Q).any() else None,
    }
    rc0 = engine_config(cfg, seed, table_path, scoring=True)  # the untrained model: the sweep's control
    params0 = loop.build_model(rc0, sources.build_dataset(rc0.data))[1]
    sweep_args = (x_gen, replica_Q, cfg.sharp_steps, cfg.sharp_quantiles)
    res["sharpness_sweep"] = sharp_sweep.sweep(graphdef, params, params0, *sweep_args)
    res["sharpness_location"] = sharp_sweep.location_control(x_gen, replica_Q)
    np.savez(os.path.join(out_dir, "scores.npz"), counts_N=counts_N, **scores)
    return res
