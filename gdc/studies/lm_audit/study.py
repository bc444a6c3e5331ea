"""The LM audit study, per seed: train (engine), score (GenDataCarto), evaluate (extraction, test, probes, ablation).

Per seed, in ``WORKDIR/seed_S/``:
* ``split.npz``: the candidate groups (``group_size`` train rows per duplication count, up-sampled through the
  engine's ``train.multiplicity_path``), the never-trained control rows (held-out split) and the arrays handed to
  the engine.
* ``target/``: the target model (``lm_audit.model`` at width x depth), trained on every train row with the groups
  duplicated; ``reference/``: the same model trained without any group row (``train.keep_idx_path``), for the
  counterfactual token labels; ``size_{width}x{depth}/``: the model-size sweep, trained like the target.
* ``eval.json``: every number of the seed. A stage whose output exists is not redone.

All models train through ``gdc.train.loop.train`` on one device; the hotspot quadrant comes from the target run's
own tracker artefacts (``gdc.scoring.score_run``, eps at a percentile of the final losses).
"""

import os

import jax
import numpy as np
from scipy import stats
from sklearn.metrics import roc_auc_score

from gdc import jsonio, scoring, sharding
from gdc.data import sources
from gdc.evaluation import extraction
from gdc.studies.lm_audit import memhunter, probes, teacher_forcing
from gdc.studies.lm_audit import metrics as M
from gdc.studies.lm_audit.config import AuditConfig
from gdc.train import config as config_lib
from gdc.train import loop

HOTSPOT = 2  # gdc.scoring quadrant code of Hotspot-Memorized (low d, high m)
GAP_METRICS = ("lcs_chars", "lcs_words", "rouge_p", "rouge_f", "rouge_p_chars", "exact", "exact8")
TEST_SCORE = "rouge_p_chars"  # the dataset-level test's per-sample score
DECODE_ROWS = 128  # rows per greedy-decoding call: one compilation per (model, prefix length) whatever the rows


def _mesh():
    return sharding.make_mesh(jax.devices()[:1])


def run_config(cfg: AuditConfig, seed: int, width: int, depth: int, *, keep: str = "", mult: str = ""):
    return config_lib.from_mapping(
        {
            "seed": seed,
            "data": dict(
                source="pydoc",
                seq_len=cfg.seq_len,
                heldout_fraction=cfg.heldout_fraction,
                split_seed=seed,
                max_examples=cfg.num_train,
            ),
            "model": dict(name=cfg.model, width=width, depth=depth, num_heads=cfg.num_heads),
            "train": dict(
                batch_size=cfg.batch_size,
                num_epochs=cfg.epochs,
                optimizer="adam",
                learning_rate=cfg.learning_rate,
                schedule="wsd",
                warmup_steps=cfg.warmup_steps,
                decay_fraction=0.25,
                grad_clip=1.0,
                keep_idx_path=keep,
                multiplicity_path=mult,
            ),
            "tracker": dict(criterion="loss", eps_low=1.0, eps_high=1.2, early_epochs=2),
            "checkpoint": dict(every_steps=0, max_to_keep=1),
            "log": dict(every_steps=100, progress=False, tensorboard=False),
        }
    )


def make_split(cfg: AuditConfig, seed: int, sdir: str) -> dict[str, np.ndarray]:
    """Candidate groups, control rows and the engine's multiplicity / keep arrays (written once to split.npz)."""
    path = os.path.join(sdir, "split.npz")
    if os.path.exists(path):
        return dict(np.load(path))
    ds = sources.build_dataset(run_config(cfg, seed, cfg.width, cfg.depth).data)
    n, n_held = ds.num_train, ds.num_heldout
    if cfg.num_control > n_held:
        raise ValueError(f"lm_audit.num_control={cfg.num_control} exceeds the {n_held} held-out rows.")
    rng = np.random.default_rng([seed, 7])
    groups_GdxM = rng.permutation(n)[: len(cfg.dup_counts) * cfg.group_size].reshape(len(cfg.dup_counts), -1)
    mult_N = np.ones(n, np.int64)
    for g, k in enumerate(cfg.dup_counts):
        mult_N[groups_GdxM[g]] = k
    in_group_N = np.zeros(n, bool)
    in_group_N[groups_GdxM.reshape(-1)] = True
    split = {
        "groups_GxS": groups_GdxM,
        "dup_counts_G": np.asarray(cfg.dup_counts),
        "multiplicity_N": mult_N,
        "reference_keep": np.flatnonzero(~in_group_N),
        "ordinary": np.flatnonzero(~in_group_N),
        "control": np.sort(rng.choice(n_held, cfg.num_control, replace=False)),
    }
    os.makedirs(sdir, exist_ok=True)
    np.save(os.path.join(sdir, "multiplicity.npy"), mult_N)
    np.save(os.path.join(sdir, "reference_keep.npy"), split["reference_keep"])
    np.savez(path, **split)
    return split


def models_of(cfg: AuditConfig, seed: int, sdir: str) -> dict[str, config_lib.RunConfig]:
    mult, keep = os.path.join(sdir, "multiplicity.npy"), os.path.join(sdir, "reference_keep.npy")
    runs = {
        "target": run_config(cfg, seed, cfg.width, cfg.depth, mult=mult),
        "reference": run_config(cfg, seed, cfg.width, cfg.depth, keep=keep),
    }
    for size in cfg.sizes:
        w, d = map(int, size.split("x"))
        runs[f"size_{size}"] = run_config(cfg, seed, w, d, mult=mult)
    return runs


def train_seed(cfg: AuditConfig, seed: int, sdir: str) -> None:
    make_split(cfg, seed, sdir)
    for name, rc in models_of(cfg, seed, sdir).items():
        wd = os.path.join(sdir, name)
        if os.path.exists(os.path.join(wd, "summary.json")):
            continue
        print(f"[lm_audit] seed {seed}: training {name}", flush=True)
        loop.train(rc, wd, mesh=_mesh())
    scores = os.path.join(sdir, "target", "scores", "scores.npz")
    if not os.path.exists(scores):
        scoring.score_run(os.path.join(sdir, "target"), eps=cfg.eps_percentile, kind="percentile")


def _gaps(train: dict, control: dict, rows: np.ndarray, cfg: AuditConfig, seed: int) -> dict:
    return {m: M.bootstrap_gap(train[m][rows], control[m], num_boot=cfg.num_boot, seed=seed) for m in GAP_METRICS}


def _extract(model, tokens_NxT: np.ndarray, p: int, c: int, mesh, ablate=None) -> dict[str, np.ndarray]:
    """Greedy continuation of ``c`` tokens after each row's first ``p``, scored against the row's own next ``c``."""
    gen = extraction.greedy_decode(*model, tokens_NxT[:, :p], c, mesh, ablate=ablate, batch_size=DECODE_ROWS)
    return M.score_pairs(gen, tokens_NxT[:, p : p + c])


def _mwu(a: np.ndarray, b: np.ndarray) -> float:
    return float(stats.mannwhitneyu(a, b, alternative="greater").pvalue) if len(a) and len(b) else float("nan")


def evaluate_seed(cfg: AuditConfig, seed: int, sdir: str) -> dict:
    """Every measurement of one seed (JSON-able); written to eval.json."""
    path = os.path.join(sdir, "eval.json")
    if os.path.exists(path):
        return jsonio.read(path)
    split = make_split(cfg, seed, sdir)
    runs = models_of(cfg, seed, sdir)
    mesh = _mesh()
    loaded = {}
    for name, rc in runs.items():
        graphdef, params, dataset, _ = loop.restore_params(rc, os.path.join(sdir, name), mesh)
        loaded[name] = (graphdef, params)
    train_NxT = dataset.train["tokens"]
    control_MxT = dataset.heldout["tokens"][split["control"]]
    groups_GdxM, ordinary = split["groups_GxS"], split["ordinary"]
    canary_rows = groups_GdxM.reshape(-1)
    out: dict = {"seed": seed, "dup_counts": [int(k) for k in cfg.dup_counts]}
    target = loaded["target"]
    c, tp = cfg.continuation, cfg.test_prefix

    # 1. Extraction protocol: prefix sweep on every train row and the control rows.
    per_prefix = {}
    for p in sorted(set(cfg.prefix_lengths) | {tp}):
        tr, co = _extract(target, train_NxT, p, c, mesh), _extract(target, control_MxT, p, c, mesh)
        per_prefix[p] = (tr, co)
        out.setdefault("prefix_sweep", {})[str(p)] = {
            "groups": [_gaps(tr, co, g, cfg, seed) for g in groups_GdxM],
            "ordinary": _gaps(tr, co, ordinary, cfg, seed),
            "control_mean": {m: float(co[m].mean()) for m in GAP_METRICS},
        }
    train_tp, control_tp = per_prefix[tp]
    out["size_sweep"] = {}
    for name in [f"size_{s}" for s in cfg.sizes] + ["target"]:
        if name == "target":
            tr, co = train_tp, control_tp
        else:
            tr = {k: np.zeros(len(train_NxT)) for k in M.METRICS}
            part = _extract(loaded[name], train_NxT[canary_rows], tp, c, mesh)
            for k in M.METRICS:
                tr[k][canary_rows] = part[k]
            co = _extract(loaded[name], control_MxT, tp, c, mesh)
        size = f"{cfg.width}x{cfg.depth}" if name == "target" else name[5:]
        out["size_sweep"][size] = [_gaps(tr, co, g, cfg, seed) for g in groups_GdxM]

    # 2. Dataset-level test on ROUGE-L precision (over the model's tokens, characters) at the test prefix.
    score_N, score_M = train_tp[TEST_SCORE], control_tp[TEST_SCORE]
    reps = dict(reps=cfg.power_reps, alpha=cfg.alpha, seed=seed)
    out["power"] = [memhunter.power_curve(score_N[g], score_M, cfg.power_sizes, **reps) for g in groups_GdxM]
    fpr = memhunter.rejection_rate(score_M, None, cfg.fpr_size, reps=cfg.fpr_reps, alpha=cfg.alpha, seed=seed)
    out["fpr"] = {
        "size": cfg.fpr_size,
        "reps": cfg.fpr_reps,
        **{t: fpr[t] for t in memhunter.TESTS},
        **{
            f"{t}_ks_p": float(stats.kstest(np.nan_to_num(fpr[f"{t}_p"], nan=1.0), "uniform").pvalue)
            for t in memhunter.TESTS
        },
    }

    # 3. GenDataCarto quadrants of the target run.
    sc = np.load(os.path.join(sdir, "target", "scores", "scores.npz"))
    quad_N = sc["quadrant_N"]
    out["quadrants"] = {
        "groups": [[int((quad_N[g] == q).sum()) for q in range(4)] for g in groups_GdxM],
        "ordinary": [int((quad_N[ordinary] == q).sum()) for q in range(4)],
    }

    # 4. Probes on the canaries (every group row): counterfactual labels against the reference model.
    tf_t = teacher_forcing.teacher_forced(*target, train_NxT[canary_rows])
    tf_r = teacher_forcing.teacher_forced(*loaded["reference"], train_NxT[canary_rows])
    labels_NxL = probes.token_labels(tf_t["correct_NxL"], tf_r["correct_NxL"])
    kw = dict(folds=cfg.probe_folds, c=cfg.probe_c, seed=seed)
    pr = probes.cross_canary_probes(tf_t["hidden_LyxNxLxD"], labels_NxL, **kw)
    # Control: the same labels probed in the reference model, which never saw the canaries. What it separates is
    # token identity / predictability structure, not memorization.
    pr_ref = probes.cross_canary_probes(tf_r["hidden_LyxNxLxD"], labels_NxL, **kw)
    s = cfg.group_size
    out["probe"] = {
        "auroc": pr["auroc_K"].tolist(),
        "auroc_vs_wrong": pr["auroc_wrong_K"].tolist(),
        "auroc_reference_model": pr_ref["auroc_K"].tolist(),
        "num_memorized": pr["num_pos"],
        "num_predictable": pr["num_neg"],
        "memorized_frac_by_group": [
            float((labels_NxL[g * s : (g + 1) * s] == 1).mean()) for g in range(len(groups_GdxM))
        ],
        "target_acc_by_group": [
            float(tf_t["correct_NxL"][g * s : (g + 1) * s].mean()) for g in range(len(groups_GdxM))
        ],
        "reference_acc_by_group": [
            float(tf_r["correct_NxL"][g * s : (g + 1) * s].mean()) for g in range(len(groups_GdxM))
        ],
    }
    auroc_Ly = pr["auroc_K"]  # all NaN only when no held-out fold had both classes (tiny smoke runs)
    best = int(np.nanargmax(auroc_Ly)) if np.isfinite(auroc_Ly).any() else len(auroc_Ly) - 1
    u_D, probe = probes.probe_direction(tf_t["hidden_LyxNxLxD"][best], labels_NxL, c=cfg.probe_c, seed=seed)
    out["probe"]["best_layer"] = best

    # 5. Ablation trade-off at the best layer: canaries of the most duplicated group vs validation perplexity.
    top = groups_GdxM[int(np.argmax(cfg.dup_counts))]
    rng = np.random.default_rng([seed, 11])
    dirs = {"probe": u_D, "meandiff": probes.mean_difference_direction(tf_t["hidden_LyxNxLxD"][best], labels_NxL)}
    for r in range(cfg.random_directions):
        v = rng.normal(size=u_D.shape).astype(np.float32)
        dirs[f"random{r}"] = v / np.linalg.norm(v)

    def measure(ablate):
        ex = _extract(target, train_NxT[top], tp, c, mesh, ablate)
        nll = teacher_forcing.teacher_forced(*target, control_MxT, ablate=ablate, with_hidden=False)["nll_NxL"]
        return {
            "exact": float(ex["exact"].mean()),
            "exact8": float(ex["exact8"].mean()),
            "rouge_p": float(ex[TEST_SCORE].mean()),
            "val_ppl": float(np.exp(nll.mean())),
        }

    out["ablation"] = {"layer": best, "none": measure(None)}
    for name, u in dirs.items():
        out["ablation"][name] = {str(a): measure((best, u, a)) for a in cfg.ablation_alphas}

    # 6. Hotspot comparison among ordinary (non-duplicated) rows: extraction gap, earlier significance, probe score.
    # "hotspot" is the Hotspot-Memorized quadrant; "high_m" adds Noisy-Outlier (every row above the m threshold).
    hid = teacher_forcing.teacher_forced(*target, train_NxT[ordinary])["hidden_LyxNxLxD"][best]
    pscore = np.zeros(len(train_NxT))
    pscore[ordinary] = probes.sequence_scores(probe, hid)
    out["hotspot"] = {}
    for name, codes in (("hotspot", (HOTSPOT,)), ("high_m", (HOTSPOT, HOTSPOT + 1))):
        is_hot = np.isin(quad_N[ordinary], codes)
        hot, rest = ordinary[is_hot], ordinary[~is_hot]
        hs = {"num_hotspot": int(len(hot)), "num_other": int(len(rest))}
        if len(hot) >= 2:
            hs["gap_hot"] = _gaps(train_tp, control_tp, hot, cfg, seed)
            hs["gap_other"] = _gaps(train_tp, control_tp, rest, cfg, seed)
            hs["hot_minus_other"] = {
                m: M.bootstrap_gap(train_tp[m][hot], train_tp[m][rest], num_boot=cfg.num_boot, seed=seed)
                for m in ("lcs_chars", TEST_SCORE)
            }
            hs["power_hot"] = memhunter.power_curve(score_N[hot], score_M, cfg.power_sizes, **reps)
            hs["power_random"] = memhunter.power_curve(score_N[ordinary], score_M, cfg.power_sizes, **reps)
            hs["min_size_hot"] = memhunter.min_significant_size(hs["power_hot"])
            hs["min_size_random"] = memhunter.min_significant_size(hs["power_random"])
            hs["probe_hot_mean"] = float(pscore[hot].mean())
            hs["probe_other_mean"] = float(pscore[rest].mean())
            hs["probe_auroc_hot"] = float(roc_auc_score(is_hot, pscore[ordinary])) if len(rest) else float("nan")
            hs["probe_mwu_p"] = _mwu(pscore[hot], pscore[rest])
        out["hotspot"][name] = hs
    out["m_rouge_spearman"] = float(stats.spearmanr(sc["m_N"][ordinary], score_N[ordinary]).statistic)
    out["m_probe_spearman"] = float(stats.spearmanr(sc["m_N"][ordinary], pscore[ordinary]).statistic)
    jsonio.write(path, out)
    return out
