"""The LM audit study, per seed: train (engine), score (GenDataCarto), evaluate (extraction, test, probes, ablation).

Per seed, in ``WORKDIR/seed_S/``:
* ``split.npz``: of the first ``num_rows`` train-split rows, the ``num_train`` the target trains on (a seeded
  random subset, ``train.keep_idx_path``) and ``num_control`` never-trained rows of the same range (the control:
  same topics as the training rows); the candidate groups (``group_size`` trained rows per duplication count,
  up-sampled through ``train.multiplicity_path``); the rest of the trained rows are "ordinary".
* ``target/``: the target model (``lm_audit.model`` at width x depth); ``reference/``: the same model trained
  without any group row, for the counterfactual token labels; ``size_{width}x{depth}/``: the model-size sweep,
  trained like the target.
* ``eval.json``: every number of the seed. A stage whose output exists is not redone.

All models train through ``gdc.train.loop.train`` on one device; the hotspot quadrant comes from the target run's
own per-epoch losses on its trained rows (``gdc.scoring.compute_scores``, eps at a percentile of final losses).
"""

import os

import jax
import numpy as np
from scipy import stats
from sklearn.metrics import roc_auc_score

from gdc import jsonio, scoring, sharding
from gdc.data import sources
from gdc.studies.lm_audit import ablation, freeman, hunt, memhunter, probes, teacher_forcing
from gdc.studies.lm_audit import metrics as M
from gdc.studies.lm_audit.config import AuditConfig
from gdc.train import config as config_lib
from gdc.train import loop

HOTSPOT = 2  # gdc.scoring quadrant code of Hotspot-Memorized (low d, high m)
GAP_METRICS = (
    "lcs_chars",
    "lcs_row",
    "lcs_corpus",
    "lcs_words",
    "rouge_p",
    "rouge_f",
    "rouge_p_chars",
    "exact",
    "exact8",
)
TEST_SCORE = "rouge_p_chars"  # the dataset-level test's per-sample score


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
                max_examples=cfg.num_rows,
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
    """Trained, control and group rows and the engine's keep / multiplicity arrays (written once to split.npz)."""
    path = os.path.join(sdir, "split.npz")
    if os.path.exists(path):
        return dict(np.load(path))
    ds = sources.build_dataset(run_config(cfg, seed, cfg.width, cfg.depth).data)
    n = ds.num_train
    if cfg.num_rows > n:
        raise ValueError(f"lm_audit.num_rows={cfg.num_rows} exceeds the {n} train-split rows of the corpus.")
    rng = np.random.default_rng([seed, 7])
    perm = rng.permutation(n)
    kept = np.sort(perm[: cfg.num_train])
    control = np.sort(perm[cfg.num_train : cfg.num_train + cfg.num_control])
    groups_GxS = rng.permutation(kept)[: len(cfg.dup_counts) * cfg.group_size].reshape(len(cfg.dup_counts), -1)
    mult_N = np.ones(n, np.int64)
    for g, k in enumerate(cfg.dup_counts):
        mult_N[groups_GxS[g]] = k
    ordinary = np.setdiff1d(kept, groups_GxS.reshape(-1))
    split = {
        "groups_GxS": groups_GxS,
        "dup_counts_G": np.asarray(cfg.dup_counts),
        "multiplicity_N": mult_N,
        "kept": kept,
        "ordinary": ordinary,
        "control": control,
    }
    os.makedirs(sdir, exist_ok=True)
    np.save(os.path.join(sdir, "multiplicity.npy"), mult_N)
    np.save(os.path.join(sdir, "target_keep.npy"), kept)
    np.save(os.path.join(sdir, "reference_keep.npy"), ordinary)
    np.savez(path, **split)
    return split


def models_of(cfg: AuditConfig, seed: int, sdir: str) -> dict[str, config_lib.RunConfig]:
    mult, keep = os.path.join(sdir, "multiplicity.npy"), os.path.join(sdir, "target_keep.npy")
    runs = {
        "target": run_config(cfg, seed, cfg.width, cfg.depth, keep=keep, mult=mult),
        "reference": run_config(cfg, seed, cfg.width, cfg.depth, keep=os.path.join(sdir, "reference_keep.npy")),
    }
    for size in cfg.sizes:
        w, d = map(int, size.split("x"))
        runs[f"size_{size}"] = run_config(cfg, seed, w, d, keep=keep, mult=mult)
    return runs


def train_seed(cfg: AuditConfig, seed: int, sdir: str) -> None:
    make_split(cfg, seed, sdir)
    for name, rc in models_of(cfg, seed, sdir).items():
        wd = os.path.join(sdir, name)
        if os.path.exists(os.path.join(wd, "summary.json")):
            continue
        print(f"[lm_audit] seed {seed}: training {name}", flush=True)
        loop.train(rc, wd, mesh=_mesh())


def _gaps(train: dict, control: dict, rows: np.ndarray, cfg: AuditConfig, seed: int) -> dict:
    return {m: M.bootstrap_gap(train[m][rows], control[m], num_boot=cfg.num_boot, seed=seed) for m in GAP_METRICS}


def _mwu(a: np.ndarray, b: np.ndarray) -> float:
    return float(stats.mannwhitneyu(a, b, alternative="greater").pvalue) if len(a) and len(b) else float("nan")


def _test_block(pools: list[np.ndarray], control_M: np.ndarray, cfg: AuditConfig, seed: int) -> dict:
    """Power of the dataset-level test for S drawn from each pool vs |S|, and its false-positive rate at each |S|
    with S and the control both drawn (disjointly) from the never-trained control scores."""
    reps = dict(reps=cfg.power_reps, alpha=cfg.alpha, seed=seed)
    power = [memhunter.power_curve(pool, control_M, cfg.power_sizes, **reps) for pool in pools]
    fpr = memhunter.power_curve(control_M, None, cfg.power_sizes, **reps)
    return {"power": power, "fpr": fpr}


def _quadrants(cfg: AuditConfig, sdir: str, kept: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(quadrant_N, m_N) of the target run over its trained rows (-1 / NaN elsewhere)."""
    loss_ExN, meta = scoring.load_loss_matrix(os.path.join(sdir, "target"), "epoch")
    arrays, _ = scoring.compute_scores(np.asarray(loss_ExN)[:, kept], meta, eps=cfg.eps_percentile, kind="percentile")
    quad_N, m_N = np.full(n, -1), np.full(n, np.nan)
    quad_N[kept], m_N[kept] = arrays["quadrant_N"], arrays["m_N"]
    return quad_N, m_N


def evaluate_seed(cfg: AuditConfig, seed: int, sdir: str) -> dict:
    """Every measurement of one seed (JSON-able); written to eval.json."""
    path = os.path.join(sdir, "eval.json")
    if os.path.exists(path):
        return jsonio.read(path)
    split = make_split(cfg, seed, sdir)
    mesh = _mesh()
    loaded = {}
    for name, rc in models_of(cfg, seed, sdir).items():
        graphdef, params, dataset, _ = loop.restore_params(rc, os.path.join(sdir, name), mesh)
        loaded[name] = (graphdef, params)
    rows_NxT = dataset.train["tokens"]
    public_NxT = dataset.heldout["tokens"]
    groups_GxS, ordinary, control, kept = split["groups_GxS"], split["ordinary"], split["control"], split["kept"]
    control_MxT = rows_NxT[control]
    canary_rows = groups_GxS.reshape(-1)
    corpus = M.join_rows(rows_NxT[kept])
    out: dict = {"seed": seed, "dup_counts": [int(k) for k in cfg.dup_counts]}
    target = loaded["target"]
    c, tp = cfg.continuation, cfg.test_prefix
    print(f"[lm_audit] seed {seed}: extraction protocol", flush=True)

    # 1. Extraction protocol: prefix sweep on every row (trained and control), scored aligned and on the whole source.
    def sweep(model, rows, prompts, start):
        return freeman.continue_and_score(model, rows, prompts, start, c, mesh, corpus)

    per_prefix = {}
    for p in sorted(set(cfg.prefix_lengths) | {tp}):
        res = sweep(target, rows_NxT, rows_NxT[:, :p], p)
        tr, co = res, {m: v[control] for m, v in res.items()}
        per_prefix[p] = (tr, co)
        out.setdefault("prefix_sweep", {})[str(p)] = {
            "groups": [_gaps(tr, co, g, cfg, seed) for g in groups_GxS],
            "ordinary": _gaps(tr, co, ordinary, cfg, seed),
            "control_mean": {m: float(co[m].mean()) for m in GAP_METRICS},
        }
    # Prompt templates (freeman.TEMPLATES) on the groups, the ordinary rows and the control.
    rng = np.random.default_rng([seed, 17])
    k = cfg.template_context
    starts = rng.integers(0, public_NxT.shape[1] - k + 1, len(rows_NxT))
    context_NxK = public_NxT[rng.integers(0, len(public_NxT), len(rows_NxT))[:, None], starts[:, None] + np.arange(k)]
    framing_K = public_NxT[int(rng.integers(len(public_NxT))), :k]
    templates = freeman.template_prompts(
        rows_NxT, context_NxK, framing_K, cue=cfg.template_cue, max_prefix=cfg.max_allowed_prefix
    )
    out["templates"] = {"framing": M.to_text(framing_K)}
    for name, (prompts, start) in templates.items():
        tr = sweep(target, rows_NxT, prompts, start)
        co = {m: v[control] for m, v in tr.items()}
        out["templates"][name] = {
            "prompt_len": int(prompts.shape[1]),
            "groups": [_gaps(tr, co, g, cfg, seed) for g in groups_GxS],
            "ordinary": _gaps(tr, co, ordinary, cfg, seed),
            "control_mean": {m: float(co[m].mean()) for m in GAP_METRICS},
        }
    train_tp, control_tp = per_prefix[tp]
    out["size_sweep"] = {}
    for name in [f"size_{s}" for s in cfg.sizes] + ["target"]:
        if name == "target":
            tr, co = train_tp, control_tp
        else:
            rows = np.concatenate([canary_rows, control])
            part = sweep(loaded[name], rows_NxT[rows], rows_NxT[rows, :tp], tp)
            tr = {m: np.zeros(len(rows_NxT)) for m in part}
            for m in part:
                tr[m][canary_rows] = part[m][: len(canary_rows)]
            co = {m: v[len(canary_rows) :] for m, v in part.items()}
        size = f"{cfg.width}x{cfg.depth}" if name == "target" else name[5:]
        out["size_sweep"][size] = [_gaps(tr, co, g, cfg, seed) for g in groups_GxS]

    # 2. Dataset-level test without the inducer: character ROUGE-L precision of the true-prefix continuation.
    score_N, score_M = train_tp[TEST_SCORE], control_tp[TEST_SCORE]
    out["test_prefix"] = _test_block([score_N[g] for g in groups_GxS], score_M, cfg, seed)

    # 3. MemHunter's inducer (rewarded on the ordinary rows) and its never-fine-tuned control.
    named = {f"dup{k}": rows_NxT[g] for k, g in zip(cfg.dup_counts, groups_GxS, strict=True)}
    named.update(ordinary=rows_NxT[ordinary], control=control_MxT)
    hunted = hunt.run(
        cfg, target, public_NxT=public_NxT, known_NxT=rows_NxT[ordinary], rows=named, mesh=mesh, seed=seed
    )
    out["inducer"] = hunted
    for arm in hunt.ARMS:
        sc = hunted[arm]["row_score"]
        pools = [np.asarray(sc[f"dup{k}"]) for k in cfg.dup_counts]
        out[f"test_inducer_{arm}"] = _test_block(pools, np.asarray(sc["control"]), cfg, seed)

    # 4. GenDataCarto quadrants of the target run.
    quad_N, m_N = _quadrants(cfg, sdir, kept, len(rows_NxT))
    out["quadrants"] = {
        "groups": [[int((quad_N[g] == q).sum()) for q in range(4)] for g in groups_GxS],
        "ordinary": [int((quad_N[ordinary] == q).sum()) for q in range(4)],
    }

    # 5. Probes on the canaries (every group row): counterfactual labels against the reference model.
    print(f"[lm_audit] seed {seed}: probes and ablation", flush=True)
    tf_t = teacher_forcing.teacher_forced(*target, rows_NxT[canary_rows])
    tf_r = teacher_forcing.teacher_forced(*loaded["reference"], rows_NxT[canary_rows])
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
            float((labels_NxL[g * s : (g + 1) * s] == 1).mean()) for g in range(len(groups_GxS))
        ],
        "target_acc_by_group": [float(tf_t["correct_NxL"][g * s : (g + 1) * s].mean()) for g in range(len(groups_GxS))],
        "reference_acc_by_group": [
            float(tf_r["correct_NxL"][g * s : (g + 1) * s].mean()) for g in range(len(groups_GxS))
        ],
    }

    # 6. Ablation: directions fitted on half the canaries, extraction measured on the held-out dup-max canaries.
    fit = ablation.split_canaries(len(groups_GxS), s, cfg.probe_fit_fraction, seed)
    top = int(np.argmax(cfg.dup_counts))
    held_top = canary_rows[top * s : (top + 1) * s][~fit[top * s : (top + 1) * s]]
    out["ablation"], probe, best = ablation.run(
        cfg,
        target,
        hidden_fit_LyxNxLxD=tf_t["hidden_LyxNxLxD"][:, fit],
        labels_fit_NxL=labels_NxL[fit],
        test_NxT=rows_NxT[held_top],
        control_MxT=control_MxT,
        mesh=mesh,
        seed=seed,
    )
    out["probe"]["best_layer"] = best

    # 7. Hotspot comparison among ordinary (non-duplicated) rows: extraction gap, earlier significance, probe score.
    # "hotspot" is the Hotspot-Memorized quadrant; "high_m" adds Noisy-Outlier (every row above the m threshold).
    hid = teacher_forcing.teacher_forced(*target, rows_NxT[ordinary])["hidden_LyxNxLxD"][best]
    pscore = np.zeros(len(rows_NxT))
    pscore[ordinary] = probes.sequence_scores(probe, hid)
    reps = dict(reps=cfg.power_reps, alpha=cfg.alpha, seed=seed)
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
    out["m_rouge_spearman"] = float(stats.spearmanr(m_N[ordinary], score_N[ordinary]).statistic)
    out["m_probe_spearman"] = float(stats.spearmanr(m_N[ordinary], pscore[ordinary]).statistic)
    jsonio.write(path, out)
    return out
