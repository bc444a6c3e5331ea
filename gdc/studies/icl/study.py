"""The ICL-kinetics study: IWL / ICL accuracy through training, K* per context length N, the slope of log K* on log N.

Stages (each skipped when its output exists, so ``--mode=all`` resumes):
  * ``train``: per N, every (seed, K) network trains in one vmapped program; writes ``run_N<n>.npz`` with the
    per-checkpoint IWL / ICL accuracy, training loss and the tracked items' IWL losses, shaped [S, K, E, ...].
  * ``report``: K* per (N, seed), the slope fits, per-item forget events (gdc.scoring, eps = log 2, i.e. the item's
    sign is right), ``results.json``, ``report.md`` and PNGs.

K* is where the final ICL accuracy (mean of the last ``final_checkpoints``) crosses ``threshold`` and stays above
it for every larger K, interpolated linearly in log K between the two grid points around the crossing. It is
censored (NaN, flagged) when even the smallest K is above the threshold or no K reaches it.
"""

import dataclasses
import functools
import math
import os
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from gdc import scoring
from gdc.errors import StageInputError
from gdc.studies.icl import model as model_lib
from gdc.studies.icl.config import ICLConfig


def spec_of(cfg: ICLConfig, n: int) -> model_lib.RunSpec:
    names = {f.name for f in dataclasses.fields(model_lib.RunSpec)}
    values = {k: v for k, v in dataclasses.asdict(cfg).items() if k in names}
    return model_lib.RunSpec(n=n, k_max=max(cfg.k_values), **values)


def compiler_options(cfg) -> dict | None:
    """XLA options: with ``fast_compile`` the CPU backend skips its optimisation passes (smoke tests)."""
    return (
        {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True} if cfg.fast_compile else None
    )


def seeds_of(seed: int, cfg: ICLConfig) -> list[int]:
    return [seed + i for i in range(cfg.num_seeds)]


def train_stage(seed: int, cfg: ICLConfig, workdir: str) -> None:
    for n in cfg.contexts:
        path = os.path.join(workdir, f"run_N{n}.npz")
        if os.path.exists(path):
            continue
        spec = spec_of(cfg, n)
        gdef = model_lib.graphdef(spec)
        seeds, ks = seeds_of(seed, cfg), list(cfg.k_values)
        keys = jnp.stack([jax.random.fold_in(jax.random.key(s), k) for s in seeds for k in ks])
        k_arr = jnp.asarray([k for _ in seeds for k in ks], jnp.int32)
        start = time.time()
        fn = jax.jit(jax.vmap(functools.partial(model_lib.train, spec, gdef)), compiler_options=compiler_options(cfg))
        out = jax.device_get(fn(keys, k_arr))
        if not np.isfinite(out["train_loss_E"]).all():
            raise FloatingPointError(f"NaN/inf training loss at N={n}: lower icl.lr.")
        shaped = {name: v.reshape(len(seeds), len(ks), *v.shape[1:]) for name, v in out.items()}
        print(f"[icl] N={n}: {len(seeds) * len(ks)} networks in {time.time() - start:.0f} s", flush=True)
        np.savez(path, seeds=np.asarray(seeds), k_values=np.asarray(ks), seconds=time.time() - start, **shaped)


# ------------------------------------------------------------------------------------------------------------------
# Analysis (numpy).
# ------------------------------------------------------------------------------------------------------------------
def k_star(k_values, acc_S, threshold: float) -> tuple[float, str]:
    """(K*, status): the K where ``acc_S`` crosses ``threshold`` for good, log-linearly interpolated.

    status is "ok", "below_grid" (already >= threshold at the smallest K) or "above_grid" (the largest K is below
    it); K* is NaN unless "ok".
    """
    logk_S = np.log(np.asarray(k_values, np.float64))
    acc_S = np.asarray(acc_S, np.float64)
    above_S = acc_S >= threshold
    if not above_S[-1]:
        return math.nan, "above_grid"
    j = len(acc_S) - 1
    while j > 0 and above_S[j - 1]:
        j -= 1
    if j == 0:
        return math.nan, "below_grid"
    a0, a1 = acc_S[j - 1], acc_S[j]
    t = (threshold - a0) / (a1 - a0)
    return float(np.exp(logk_S[j - 1] + t * (logk_S[j] - logk_S[j - 1]))), "ok"


def fit_slope(n_S, kstar_S) -> dict:
    """Least-squares slope of log K* on log N over the finite points, with its 95% t interval."""
    n_S, kstar_S = np.asarray(n_S, np.float64), np.asarray(kstar_S, np.float64)
    ok_S = np.isfinite(kstar_S)
    x, y = np.log(n_S[ok_S]), np.log(kstar_S[ok_S])
    if np.unique(x).size < 2:
        return {"slope": math.nan, "ci95": [math.nan, math.nan], "points": int(ok_S.sum())}
    fit = stats.linregress(x, y)
    dof = x.size - 2
    half = stats.t.ppf(0.975, dof) * fit.stderr if dof > 0 else math.nan
    return {
        "slope": float(fit.slope),
        "intercept": float(fit.intercept),
        "stderr": float(fit.stderr) if dof > 0 else math.nan,
        "ci95": [float(fit.slope - half), float(fit.slope + half)],
        "r": float(fit.rvalue),
        "points": int(ok_S.sum()),
    }


def bootstrap_slope(contexts, kstar_SdxS, reps: int = 2000, seed: int = 0) -> list[float]:
    """95% percentile interval of the slope fitted to seed-mean log K*, resampling seeds per N with replacement."""
    rng = np.random.default_rng(seed)
    logk_SdxS = np.log(np.asarray(kstar_SdxS, np.float64))
    s, n = logk_SdxS.shape
    x = np.log(np.asarray(contexts, np.float64))
    slopes = []
    for _ in range(reps):
        with warnings.catch_warnings():  # a resample with only censored K* gives NaN for that N, then skipped
            warnings.simplefilter("ignore", RuntimeWarning)
            y = np.array([np.nanmean(logk_SdxS[rng.integers(0, s, s), j]) for j in range(n)])
        ok = np.isfinite(y)
        if ok.sum() >= 2:
            slopes.append(np.polyfit(x[ok], y[ok], 1)[0])
    if not slopes:
        return [math.nan, math.nan]
    return [float(np.percentile(slopes, 2.5)), float(np.percentile(slopes, 97.5))]


def item_forgetting(item_loss_ExM: np.ndarray) -> dict:
    """Per-item forget events of the IWL loss (eps = log 2: the item's sign is right) via gdc.scoring."""
    valid_M = ~np.all(np.isnan(item_loss_ExM), axis=0)
    loss = item_loss_ExM[:, valid_M]
    ev = scoring.forget_events(loss, np.log(2.0))
    mem = scoring.memorization(ev["forget_N"], ev["transitions"], ev["ever_learned_N"])
    return {
        "items": int(valid_M.sum()),
        "forget_mean": float(ev["forget_N"].mean()),
        "m_mean": float(mem["m_N"].mean()),
        "ever_learned": float(ev["ever_learned_N"].mean()),
        "learned_final": float(ev["learned_N"].mean()),
        "forgotten_once": float((ev["forget_N"] > 0).mean()),
    }


def analyze(seed: int, cfg: ICLConfig, workdir: str) -> dict:
    runs = {n: dict(np.load(os.path.join(workdir, f"run_N{n}.npz"))) for n in cfg.contexts}
    seeds, ks = seeds_of(seed, cfg), list(cfg.k_values)
    f = cfg.final_checkpoints
    per_n, kstar_SdxS = {}, np.full((len(seeds), len(cfg.contexts)), np.nan)
    for j, n in enumerate(cfg.contexts):
        r = runs[n]
        icl_SdxS = r["icl_E"][:, :, -f:].mean(-1)
        iwl_SdxS = r["iwl_E"][:, :, -f:].mean(-1)
        ks_rows = []
        for i in range(len(seeds)):
            value, status = k_star(ks, icl_SdxS[i], cfg.threshold)
            kstar_SdxS[i, j] = value
            ks_rows.append({"seed": seeds[i], "k_star": value, "status": status})
        mean_value, mean_status = k_star(ks, icl_SdxS.mean(0), cfg.threshold)
        # ICL onset: first checkpoint whose ICL accuracy reaches the threshold (-1: never).
        hit_SdxSxE = r["icl_E"] >= cfg.threshold
        onset_SdxS = np.where(hit_SdxSxE.any(-1), hit_SdxSxE.argmax(-1), -1)
        forget = [[item_forgetting(r["item_loss_ExT"][i, kk]) for kk in range(len(ks))] for i in range(len(seeds))]
        per_n[n] = {
            "icl_final": icl_SdxS.tolist(),
            "iwl_final": iwl_SdxS.tolist(),
            "k_star_per_seed": ks_rows,
            "k_star_of_mean_curve": {"k_star": mean_value, "status": mean_status},
            "icl_onset_checkpoint": onset_SdxS.tolist(),
            "forget": forget,
            "train_seconds": float(r["seconds"]),
        }
    pooled_n = [n for _ in seeds for n in cfg.contexts]
    fits = {
        "pooled": fit_slope(pooled_n, kstar_SdxS.reshape(-1)),
        "per_seed": [fit_slope(cfg.contexts, kstar_SdxS[i]) for i in range(len(seeds))],
        "mean_curve": fit_slope(cfg.contexts, [per_n[n]["k_star_of_mean_curve"]["k_star"] for n in cfg.contexts]),
        "bootstrap_ci95": bootstrap_slope(cfg.contexts, kstar_SdxS, seed=seed),
    }
    slopes = np.array([p["slope"] for p in fits["per_seed"]], np.float64)
    fits["per_seed_mean"] = float(np.nanmean(slopes)) if np.isfinite(slopes).any() else math.nan
    fits["per_seed_std"] = float(np.nanstd(slopes, ddof=1)) if np.isfinite(slopes).sum() > 1 else math.nan
    return {"seeds": seeds, "k_values": ks, "per_n": per_n, "k_star_SxN": kstar_SdxS.tolist(), "slope": fits}


def run_study(seed: int, cfg: ICLConfig, workdir: str, mode: str = "all", command: str = "") -> dict:
    os.makedirs(workdir, exist_ok=True)
    if command:
        with open(os.path.join(workdir, "commands.txt"), "a") as f:
            f.write(command + "\n")
    if mode in ("all", "train"):
        train_stage(seed, cfg, workdir)
    if mode in ("all", "report"):
        from gdc.studies.icl import report

        try:
            res = analyze(seed, cfg, workdir)
        except FileNotFoundError as e:
            raise StageInputError(f"{e.filename} is missing: run --mode=train (or all) first.") from e
        return report.write(res, cfg, workdir)
    return {}
