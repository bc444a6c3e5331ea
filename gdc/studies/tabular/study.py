"""The tabular diffusion study (``--mode=all``): memorization of a DDPM on a small table, scored and intervened on.

Per seed, under ``workdir/seed_S/``:
  * ``table.npz``: the encoded train/held-out table the engine reads (``data.source='tabular'``).
  * ``probe/``: the baseline DDPM trained by the engine with one fixed-draw scoring pass per epoch (the tracker's
    d_i and m_i), stopped at ``stops`` evenly spaced epochs; at each stop rows are generated and the distance-ratio
    test run (``probe_stops.npz``): Mem. Ratio vs epochs, per-row replica counts (the last stop is the ground truth;
    the earlier ones are DynamicCut's epoch-wise memorization).
  * ``size_N/``: runs on the first N training rows (Mem. Ratio vs N).
  * ``arms/<arm>/``: retrains at the same epochs: TabCutMix / TabCutMixPlus (+30 % rows), DynamicCut, GenDataCarto
    pruning by m_i (ties: lower d_i first) and by d_i (the hardest, outlier-like rows; ties: higher m_i), random
    pruning (all pruning arms remove the same number of rows), and down-weighting (loss weight alpha) of the rows
    gdc_prune_d would remove.
  * ``result.json``: everything this seed reports. A finished stage (its output file exists) is never redone, and
    engine runs resume from their checkpoints.
Seeds change the model's initialisation, data order, noise draws and augmentation; the table is the same.
"""

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


def _dedupe(table: data.Table) -> tuple[data.Table, np.ndarray]:
    """(distinct rows, inverse): row i of ``table`` is row ``inverse[i]`` of the distinct table."""
    rows = np.concatenate([table.num_NxF, table.cat_with_label().astype(np.float64)], axis=1)
    _, first, inverse = np.unique(rows, axis=0, return_index=True, return_inverse=True)
    return table.take(first), inverse.reshape(-1)


def measure(generated: data.Table, train: data.Table, dedupe: bool) -> dict:
    """Distance-ratio memorization of ``generated`` against ``train``; counts are per training row (copies share)."""
    if not dedupe:
        return metrics.memorization(generated, train)
    distinct, inverse = _dedupe(train)
    out = metrics.memorization(generated, distinct)
    out["counts_N"] = out["counts_N"][inverse]
    return out


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


def run_seed(cfg: TabularConfig, seed: int, workdir: str) -> dict:
    """Runs (or resumes) one seed; returns and writes ``seed_S/result.json``."""
    out_dir = os.path.join(workdir, f"seed_{seed}")
    result_path = os.path.join(out_dir, "result.json")
    if os.path.exists(result_path):
        return jsonio.read(result_path)
    os.makedirs(out_dir, exist_ok=True)
    start = time.time()
    table = data.load(cfg.dataset, num_rows=cfg.num_rows, seed=0, csv_path=cfg.csv_path)
    train, heldout = data.split(table, cfg.num_train, cfg.num_heldout, seed=0)
    enc = data.Encoder.fit(train)
    n = len(train)
    g = max(2, int(round(cfg.generated_factor * n)))
    table_path = _write_table(os.path.join(out_dir, "table.npz"), enc, train, heldout)
    res: dict = {"seed": seed, "num_train": n, "num_heldout": len(heldout), "encoded_width": enc.width}
    res["heldout_mem_ratio"] = measure(heldout, train, cfg.dedupe)["mem_ratio"]  # real rows never trained on
    res["heldout_mem_ratio_no_dedupe"] = metrics.memorization(heldout, train)["mem_ratio"]

    # ---- Probe: baseline run with scoring passes, stopped at evenly spaced epochs; generate at each stop. ----
    probe_dir = os.path.join(out_dir, "probe")
    spe = -(-n // cfg.batch_size)
    stop_epochs = sorted({max(1, round(cfg.epochs * (k + 1) / cfg.stops)) for k in range(cfg.stops)})
    stops_path = os.path.join(out_dir, "probe_stops.npz")
    stops = dict(np.load(stops_path)) if os.path.exists(stops_path) else {}
    for e in stop_epochs:
        if f"counts_{e}" in stops:
            continue
        _log(f"seed {seed}: probe to epoch {e}")
        graphdef, params = _train(cfg, seed, table_path, probe_dir, scoring=True, max_steps=e * spe)
        x_gen = generate(graphdef, params, g, jax.random.fold_in(jax.random.PRNGKey(seed), e))
        m = measure(enc.decode(x_gen), train, cfg.dedupe)
        m_raw = metrics.memorization(enc.decode(x_gen), train)
        stops.update(
            {
                f"counts_{e}": m["counts_N"],
                f"mem_{e}": np.array([m["mem_ratio"], m["mem_auc"]]),
                f"mem_raw_{e}": np.array([m_raw["mem_ratio"]]),
                f"x_gen_{e}": x_gen,
                f"replica_{e}": m["replica_Q"],
            }
        )
        np.savez(stops_path, **stops)
    last = stop_epochs[-1]
    res["mem_vs_epochs"] = {
        "epochs": stop_epochs,
        "mem_ratio": [float(stops[f"mem_{e}"][0]) for e in stop_epochs],
        "mem_auc": [float(stops[f"mem_{e}"][1]) for e in stop_epochs],
        "mem_ratio_no_dedupe": [float(stops[f"mem_raw_{e}"][0]) for e in stop_epochs],
    }
    counts_N = stops[f"counts_{last}"]
    graphdef, params = _train(cfg, seed, table_path, probe_dir, scoring=True)  # restores the finished run
    gen_base = enc.decode(stops[f"x_gen_{last}"])
    res["arms"] = {
        "baseline": {
            "mem_ratio": float(stops[f"mem_{last}"][0]),
            "mem_auc": float(stops[f"mem_{last}"][1]),
            **utility(gen_base, heldout, enc, seed),
        }
    }
    res["real_utility"] = utility(train, heldout, enc, seed)

    # ---- Scores: d_i, m_i from the tracker's scoring passes; sharpness at training and generated rows. ----
    loss_ExN, _ = score_workdir.load_loss_matrix(probe_dir, "passes")
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
    flags = {k: v for k, v in train.flags.items()}
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
        for k, v in flags.items()
    }
    x_gen = stops[f"x_gen_{last}"]
    replica_Q = stops[f"replica_{last}"]
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

    # ---- Mem. Ratio against N. ----
    res["mem_vs_size"] = {}
    for size in sorted({min(s, n) for s in cfg.sizes}):  # a real table may hold fewer rows than num_train
        if size == n:
            res["mem_vs_size"][str(size)] = res["arms"]["baseline"]["mem_ratio"]
            continue
        sub = train.take(np.arange(size))
        path = _write_table(os.path.join(out_dir, f"table_{size}.npz"), enc, sub, heldout)
        _log(f"seed {seed}: size {size}")
        gd, p = _train(cfg, seed, path, os.path.join(out_dir, f"size_{size}"))
        gs = max(2, int(round(cfg.generated_factor * size)))
        x = generate(gd, p, gs, jax.random.fold_in(jax.random.PRNGKey(seed), 10_000 + size))
        res["mem_vs_size"][str(size)] = measure(enc.decode(x), sub, cfg.dedupe)["mem_ratio"]

    # ---- Interventions at matched budget: +30 % rows (TCM, TCMP) or -10 % rows (pruning). ----
    clusters = tcm.feature_clusters(train)
    res["clusters"] = [c.tolist() for c in clusters]
    dc_counts = np.stack([stops[f"counts_{e}"] for e in (stop_epochs[:-1] or stop_epochs)])
    pruned = {
        "dynamic_cut": tcm.dynamic_cut(dc_counts, cfg.prune_fraction, seed)[0],
        "gdc_prune_m": iv.prune_top(m_N, cfg.prune_fraction, "m", tie_break_N=-d_N, seed=seed).keep_idx,
        "gdc_prune_d": iv.prune_top(d_N, cfg.prune_fraction, "d", tie_break_N=m_N, seed=seed).keep_idx,
        "random_prune": iv.prune_random(n, cfg.prune_fraction, "random", seed=seed).keep_idx,
    }
    for arm in cfg.arms:
        if arm == "baseline":
            continue
        arm_dir = os.path.join(out_dir, "arms", arm)
        os.makedirs(arm_dir, exist_ok=True)
        keep, weights, path = "", "", table_path
        if arm == "gdc_downweight_d":
            weights = os.path.join(arm_dir, "weights_N.npy")
            hot = np.setdiff1d(np.arange(n), pruned["gdc_prune_d"])
            np.save(weights, iv.downweight(hot, cfg.downweight_alpha, n, arm).weights_N)
        elif arm in ("tcm", "tcmp"):
            num_new = int(round(cfg.augment_fraction * n))
            fn = tcm.tabcutmix if arm == "tcm" else tcm.tabcutmix_plus
            kw = {} if arm == "tcm" else {"clusters": clusters}
            new, _, _ = fn(train, num_new, seed, **kw)
            path = _write_table(os.path.join(arm_dir, "table.npz"), enc, train.append(new), heldout)
        else:
            keep = os.path.join(arm_dir, "keep_idx.npy")
            np.save(keep, pruned[arm])
        _log(f"seed {seed}: arm {arm}")
        gd, p = _train(cfg, seed, path, os.path.join(arm_dir, "run"), keep=keep, weights=weights)
        x = generate(gd, p, g, jax.random.fold_in(jax.random.PRNGKey(seed), 20_000 + len(res["arms"])))
        gen = enc.decode(x)
        mem = measure(gen, train, cfg.dedupe)  # always against the real training rows
        res["arms"][arm] = {
            "mem_ratio": mem["mem_ratio"],
            "mem_auc": mem["mem_auc"],
            **utility(gen, heldout, enc, seed),
        }
        if keep:
            removed = np.setdiff1d(np.arange(n), pruned[arm])
            res["arms"][arm]["removed_rows"] = int(len(removed))
            res["arms"][arm]["removed_baseline_counts"] = int(counts_N[removed].sum())
    res["seconds"] = time.time() - start
    jsonio.write(result_path, res)
    return jsonio.roundtrip(res)
