"""The SSL localization study: UnitMem / LayerMem of SimCLR encoders on digits, and the hotspot-enrichment test.

Stages (each skipped when its output exists, so ``--mode=all`` resumes):
  * ``train``: per seed, a random split of digits into S_S, S_C, S_I (and the rest held out); the candidate encoder f
    trains on S_S + S_C, the independent encoder g on S_S + S_I. All 2 x num_seeds encoders run in one vmapped
    program. Writes ``train.npz`` (parameters, splits, f's per-epoch score-pass loss matrix).
  * ``analyze``: per seed, GenDataCarto scores of f's training examples from its loss matrix (gdc.scoring: d = early
    loss, m = forget share at eps = a percentile of final losses, quadrants); UnitMem of every trunk unit of f; the
    enrichment of the top units' argmax examples in each quadrant; LayerMem / Delta-LayerMem per layer on S_C, with
    the same score on S_S (trained on by both encoders) as the null control; a linear-probe accuracy. Writes
    ``seed_<s>.json`` and ``seed_<s>.npz``.
  * ``report``: ``results.json``, ``report.md`` and PNGs across seeds.
"""

import dataclasses
import functools
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from gdc import jsonio, scoring
from gdc.errors import StageInputError
from gdc.studies.ssl import controls, metrics
from gdc.studies.ssl import model as model_lib
from gdc.studies.ssl.config import DIGITS, SSLConfig

LAYER_NAMES = lambda depth: [f"h{i + 1}" for i in range(depth)] + ["z"]  # noqa: E731
HOTSPOT = scoring.QUADRANT_NAMES.index("Hotspot-Memorized")


def spec_of(cfg: SSLConfig) -> model_lib.EncoderSpec:
    names = {f.name for f in dataclasses.fields(model_lib.EncoderSpec)}
    return model_lib.EncoderSpec(**{k: v for k, v in dataclasses.asdict(cfg).items() if k in names})


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits as sk_load

    d = sk_load()
    return (d.data / 16.0).astype(np.float32), d.target.astype(np.int32)


def splits(cfg: SSLConfig, seed: int) -> dict[str, np.ndarray]:
    perm = np.random.default_rng([seed, 8]).permutation(DIGITS)
    a, b, c = cfg.num_shared, cfg.num_shared + cfg.num_candidates, cfg.num_shared + 2 * cfg.num_candidates
    return {"shared": perm[:a], "candidates": perm[a:b], "independent": perm[b:c], "heldout": perm[c:]}


def compiler_options(cfg: SSLConfig) -> dict | None:
    """XLA options: with ``fast_compile`` the CPU backend skips its optimisation passes (smoke tests)."""
    return (
        {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True} if cfg.fast_compile else None
    )


def seeds_of(seed: int, cfg: SSLConfig) -> list[int]:
    return [seed + i for i in range(cfg.num_seeds)]


# ------------------------------------------------------------------------------------------------------------------
# Train.
# ------------------------------------------------------------------------------------------------------------------
def train_stage(seed: int, cfg: SSLConfig, workdir: str) -> None:
    x_NxD, y_N = load_digits()
    spec = spec_of(cfg)
    controls.train_supervised_stage(
        cfg, spec, seeds_of(seed, cfg), lambda s: splits(cfg, s), x_NxD, y_N, workdir, compiler_options(cfg)
    )
    path = os.path.join(workdir, "train.npz")
    if os.path.exists(path):
        return
    gdef = model_lib.graphdef(spec)
    ids, keys = [], []
    for s in seeds_of(seed, cfg):
        sp = splits(cfg, s)
        for r in range(cfg.encoders):  # encoder e = 2 (j R + r) + {0: f_r, 1: g_r}
            ids += [np.concatenate([sp["shared"], sp["candidates"]]), np.concatenate([sp["shared"], sp["independent"]])]
            keys += list(controls.ssl_keys(s, r))
    start = time.time()
    fn = jax.jit(
        jax.vmap(functools.partial(model_lib.train, spec, gdef, jnp.asarray(x_NxD))),
        compiler_options=compiler_options(cfg),
    )
    params, score_ExM, train_E = jax.device_get(fn(jnp.stack(keys), jnp.asarray(np.stack(ids))))
    if not np.isfinite(score_ExM).all() or not np.isfinite(train_E).all():
        raise FloatingPointError("NaN/inf in the SSL losses: lower ssl.lr or raise ssl.temperature.")
    leaves = jax.tree.leaves(params)
    print(f"[ssl] trained {len(ids)} encoders in {time.time() - start:.0f} s", flush=True)
    np.savez(
        path,
        ids=np.stack(ids),
        score_loss=score_ExM,
        train_loss=train_E,
        seconds=time.time() - start,
        **{f"param_{i}": leaf for i, leaf in enumerate(leaves)},
    )


# ------------------------------------------------------------------------------------------------------------------
# Analyze.
# ------------------------------------------------------------------------------------------------------------------
def carto(cfg: SSLConfig, loss_ExN: np.ndarray) -> dict:
    """GenDataCarto d, m and quadrants of one encoder's training examples from its score-pass loss matrix."""
    d_N = scoring.difficulty(loss_ExN, cfg.early_epochs)
    eps = scoring.resolve_eps(loss_ExN, "percentile", cfg.eps_percentile)
    ev = scoring.forget_events(loss_ExN, eps)
    mem = scoring.memorization(ev["forget_N"], ev["transitions"], ev["ever_learned_N"])
    quad_N, info = scoring.quadrants(d_N, mem["m_N"], cfg.q_d, cfg.q_m, state_N=mem["state_N"])
    return {"d_N": d_N, "m_N": mem["m_N"], "quadrant_N": quad_N, "eps": float(eps), "info": info}


def _views(spec, key, idx_N, x_NxD, count):
    return [model_lib.augment_batch(spec, jax.random.fold_in(key, a), idx_N, x_NxD) for a in range(count)]


def analyze_seed(seed: int, j: int, cfg: SSLConfig, workdir: str, data, sup) -> dict:
    path = os.path.join(workdir, f"seed_{seed}.json")
    if os.path.exists(path):
        return jsonio.read(path)
    spec = spec_of(cfg)
    gdef = model_lib.graphdef(spec)
    names = LAYER_NAMES(cfg.depth)
    x_all, y_all = load_digits()
    first = 2 * j * cfg.encoders  # f_0 of this seed
    f_params = controls.unpack(spec, data, first)
    fwd = jax.jit(functools.partial(model_lib.layers, gdef), compiler_options=compiler_options(cfg))
    ids_f = data["ids"][first]
    sp = splits(cfg, seed)
    n_sh = cfg.num_shared

    # GenDataCarto on f's training examples (S_S then S_C, the order of ids_f).
    c = carto(cfg, data["score_loss"][first])
    hot_N = c["quadrant_N"] == HOTSPOT

    # UnitMem of f's trunk units on its training examples, augmentations drawn from a fixed analysis key.
    key = jax.random.key(10_000 + seed)
    x_f = jnp.asarray(x_all[ids_f])
    views = _views(spec, key, jnp.asarray(ids_f), x_f, cfg.unit_augs)
    acts = controls.activations(fwd, f_params, views)  # [A][L] of [N, U]
    unit = {}
    for li, name in enumerate(names[:-1]):
        mu_NxU = metrics.unit_mu(np.stack([a[li] for a in acts]))
        score_U, argmax_U = metrics.unit_mem(mu_NxU, cfg.rest)
        other_U, _ = metrics.unit_mem(mu_NxU, "mean" if cfg.rest == "median" else "median")
        alive_U = mu_NxU.max(axis=0) > 0
        unit[name] = {"score_U": score_U, "argmax_U": argmax_U, "other_U": other_U, "alive_U": alive_U}
    score_all = np.concatenate([unit[n]["score_U"] for n in names[:-1]])
    argmax_all = np.concatenate([unit[n]["argmax_U"] for n in names[:-1]])
    alive_all = np.concatenate([unit[n]["alive_U"] for n in names[:-1]])
    k = max(1, int(round(cfg.top_units * alive_all.sum())))
    top = np.argsort(-np.where(alive_all, score_all, -np.inf), kind="stable")[:k]
    selected_N = np.zeros(ids_f.shape[0], bool)
    selected_N[argmax_all[top]] = True
    enrich = {}
    for q, qname in enumerate(scoring.QUADRANT_NAMES):
        enrich[qname] = metrics.enrichment(selected_N, c["quadrant_N"] == q, cfg.permutations, seed=seed)
    per_layer = {}
    for name in names[:-1]:
        sel_N = np.zeros(ids_f.shape[0], bool)
        sel_N[unit[name]["argmax_U"][unit[name]["alive_U"]]] = True
        per_layer[name] = metrics.enrichment(sel_N, hot_N, cfg.permutations, seed=seed)
    cand_sel = metrics.enrichment(selected_N, np.arange(ids_f.shape[0]) >= n_sh, cfg.permutations, seed=seed)

    # LayerMem on the candidates for each pair (f_r, g_r), and the same score on shared examples (both encoders
    # trained on them: null); the untrained pairs give LayerMem's floor on the candidates.
    layer, aug = {}, {}
    groups = {"candidates": sp["candidates"], "shared": sp["shared"][: cfg.num_candidates]}
    for group, gids in groups.items():
        xg = jnp.asarray(x_all[gids])
        aug[group] = _views(spec, jax.random.fold_in(key, 1), jnp.asarray(gids), xg, cfg.layer_augs)
    pairs = {
        "candidates": (True, "candidates"),
        "shared": (True, "shared"),
        "untrained_candidates": (False, "candidates"),
    }
    for name, (trained, group) in pairs.items():
        per_r = []
        for r in range(cfg.encoders):
            if trained:
                p_f = controls.unpack(spec, data, first + 2 * r)
                p_g = controls.unpack(spec, data, first + 2 * r + 1)
            else:
                k_f, k_g = controls.untrained_keys(seed, r)
                p_f, p_g = model_lib.init(spec, k_f), model_lib.init(spec, k_g)
            gids = groups[group]
            per_r.append(controls.layer_mem_pair(fwd, p_f, p_g, jnp.asarray(x_all[gids]), aug[group], len(names)))
        lm_RxL = np.array([[res["layer_mem"] for res in rr] for rr in per_r])
        layer[name] = {
            "layer_mem": lm_RxL.mean(axis=0).tolist(),
            "per_encoder": lm_RxL.tolist(),
            "raw_mean": np.mean([[res["raw_mean"] for res in rr] for rr in per_r], axis=0).tolist(),
            "delta": np.mean([metrics.delta_layer_mem(lm) for lm in lm_RxL], axis=0).tolist(),
            "frac_positive": np.mean([[float((res["raw_N"] > 0).mean()) for res in rr] for rr in per_r], 0).tolist(),
        }

    # UnitMem and ClassMem of every trained SSL encoder f_r, its untrained control and its supervised control.
    labels_f = y_all[ids_f]
    sspec = controls.supervised_spec(spec)
    fwd_sup = jax.jit(functools.partial(model_lib.layers, model_lib.graphdef(sspec)))
    encs = {"ssl": [], "untrained": [], "supervised": []}
    for r in range(cfg.encoders):
        trunk = len(names) - 1
        acts_ssl = acts if r == 0 else controls.activations(fwd, controls.unpack(spec, data, first + 2 * r), views)
        acts_un = controls.activations(fwd, model_lib.init(spec, controls.untrained_keys(seed, r)[0]), views)
        acts_sup = controls.activations(fwd_sup, controls.unpack(sspec, sup, j * cfg.encoders + r), views)
        for kind, a in (("ssl", acts_ssl), ("untrained", acts_un), ("supervised", acts_sup)):
            encs[kind].append(controls.unit_stats(a, labels_f, trunk, cfg.rest))
    encoders = {
        kind: {stat: np.array([e[stat] for e in rows]).T.tolist() for stat in ("unitmem", "classmem")}
        for kind, rows in encs.items()
    }  # [layer][encoder]

    # Linear probe on f's last trunk layer: the encoder learned something.
    from sklearn.linear_model import LogisticRegression

    h_tr = jax.device_get(fwd(f_params, x_f))[-2]
    h_te = jax.device_get(fwd(f_params, jnp.asarray(x_all[sp["heldout"]])))[-2]
    probe = LogisticRegression(max_iter=2000).fit(h_tr, y_all[ids_f])
    probe_acc = float(probe.score(h_te, y_all[sp["heldout"]]))

    res = {
        "seed": seed,
        "probe_accuracy": probe_acc,
        "final_train_loss_f": float(data["train_loss"][2 * j][-1]),
        "carto": {"eps": c["eps"], "info": jsonio.roundtrip(c["info"])},
        "unitmem": {
            n: {
                "mean": float(unit[n]["score_U"][unit[n]["alive_U"]].mean()),
                "median": float(np.median(unit[n]["score_U"][unit[n]["alive_U"]])),
                "mean_other_rest": float(unit[n]["other_U"][unit[n]["alive_U"]].mean()),
                "alive": int(unit[n]["alive_U"].sum()),
                "units": int(unit[n]["alive_U"].size),
                "distinct_argmax": int(np.unique(unit[n]["argmax_U"][unit[n]["alive_U"]]).size),
            }
            for n in names[:-1]
        },
        "top_units": {
            "k": k,
            "distinct_argmax": int(selected_N.sum()),
            "per_layer": {n: int(sum(names[:-1][i // cfg.width] == n for i in top)) for n in names[:-1]},
            "argmax_in_candidates": cand_sel,
        },
        "enrichment": enrich,
        "enrichment_per_layer": per_layer,
        "layermem": layer,
        "encoders": encoders,
        "layers": names,
    }
    np.savez(
        os.path.join(workdir, f"seed_{seed}.npz"),
        d_N=c["d_N"],
        m_N=c["m_N"],
        quadrant_N=c["quadrant_N"],
        selected_N=selected_N,
        **{f"unitmem_{n}": unit[n]["score_U"] for n in names[:-1]},
    )
    jsonio.write(path, res)
    return res


def run_study(seed: int, cfg: SSLConfig, workdir: str, mode: str = "all", command: str = "") -> dict:
    os.makedirs(workdir, exist_ok=True)
    if command:
        with open(os.path.join(workdir, "commands.txt"), "a") as f:
            f.write(command + "\n")
    start = time.time()
    if mode in ("all", "train"):
        train_stage(seed, cfg, workdir)
    results = {}
    if mode in ("all", "analyze"):
        data = dict(np.load(os.path.join(workdir, "train.npz")))
        sup = dict(np.load(os.path.join(workdir, "controls.npz")))
        for j, s in enumerate(seeds_of(seed, cfg)):
            results[s] = analyze_seed(s, j, cfg, workdir, data, sup)
            print(f"[ssl] seed {s} analysed", flush=True)
    if mode in ("all", "report"):
        from gdc.studies.ssl import report

        try:
            return report.write(seed, cfg, workdir, seconds=time.time() - start)
        except FileNotFoundError as e:
            raise StageInputError(f"{e.filename} is missing: run --mode=analyze (or all) first.") from e
    return results
