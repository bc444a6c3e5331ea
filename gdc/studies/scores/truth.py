"""The score benchmark's ground truth: counterfactual memorization from K models on random halves.

The K models (``gdc.influence.counterfactual``) train on the tracked run's data, model and optimizer; each holds every
example independently with probability 1/2. Counterfactual memorization of the per-example loss (out minus in), and
for the LM of the token accuracy on each canary copy's secret digits (in minus out). With ``tie_copies`` a canary's
copies enter or leave a half together, so a copy's estimate is its canary's effect, not one copy's beside its
duplicates.
"""

import time

import jax
import numpy as np

from gdc.data import sources
from gdc.influence import counterfactual
from gdc.studies.scores.config import ScoresConfig
from gdc.train import config as config_lib


def inputs(dataset: sources.Dataset) -> dict[str, np.ndarray]:
    """The model inputs of the training split (the ensemble's data table)."""
    keys = ("tokens", "token_mask") if dataset.kind == "lm" else ("x", "y")
    return {k: dataset.train[k] for k in keys}


def tie_canary_copies(in_KxN: np.ndarray, canary_meta: dict) -> np.ndarray:
    """Every copy of a canary takes its first copy's membership, so a half holds all of a canary's copies or none."""
    in_KxN = in_KxN.copy()
    for canary in canary_meta["inserted"]:
        ids = np.asarray(canary["ids"])
        in_KxN[:, ids] = in_KxN[:, ids[:1]]
    return in_KxN


def ground_truth(cfg: ScoresConfig, rc: config_lib.RunConfig, dataset: sources.Dataset, seed: int) -> dict:
    """Counterfactual memorization from ``cfg.models`` networks on random halves, with its seconds and stability."""
    data = inputs(dataset)
    n, k = dataset.num_train, cfg.models
    in_KxN = counterfactual.subset_masks(seed, k, n)
    lm = dataset.kind == "lm"
    if lm and cfg.tie_copies:
        in_KxN = tie_canary_copies(in_KxN, dataset.meta["canaries"])
    shapes = dict(
        vocab_size=dataset.meta.get("vocab_size", 256),
        seq_len=rc.data.seq_len,
        num_features=dataset.meta.get("num_features", 0),
        num_classes=dataset.meta.get("num_classes", 0),
    )
    start = time.perf_counter()
    graphdef, params_K = counterfactual.init_ensemble(rc.model, [10_000 * (seed + 1) + i for i in range(k)], **shapes)
    ens = counterfactual.train_ensemble(graphdef, params_K, data, in_KxN, rc.train, seed=seed, vmap_size=cfg.vmap_size)
    jax.block_until_ready(ens.params)
    train_seconds = time.perf_counter() - start
    span_NxL = counterfactual.canary_span_mask(dataset.meta["canaries"], n, rc.data.seq_len) if lm else None
    start = time.perf_counter()
    perf = counterfactual.performance(graphdef, ens.params, data, span_mask_NxL=span_NxL)
    perf_seconds = time.perf_counter() - start
    out = {"in_KxN": in_KxN, "seconds": {"train": train_seconds, "performance": perf_seconds}}
    truths = {"loss": (perf["loss_KxN"], True)}
    if lm:
        truths["span"] = (perf["span_acc_KxN"], False)
    for name, (perf_KxN, lower) in truths.items():
        est = counterfactual.estimate(perf_KxN, in_KxN, lower_is_better=lower)
        out[f"cm_{name}_N"], out[f"cm_{name}_se_N"] = est.mem_N, est.se_N
        out[f"stability_{name}"] = counterfactual.split_half_stability(perf_KxN, in_KxN, seed, lower_is_better=lower)
    if lm:
        rows_N = span_NxL.any(axis=1)
        in_acc = np.where(in_KxN, perf["span_acc_KxN"], np.nan)[:, rows_N]
        out_acc = np.where(~in_KxN, perf["span_acc_KxN"], np.nan)[:, rows_N]
        out["span_acc"] = {"in": float(np.nanmean(in_acc)), "out": float(np.nanmean(out_acc))}
    out["final_loss_in_out"] = {
        "in": float(np.nanmean(np.where(in_KxN, perf["loss_KxN"], np.nan))),
        "out": float(np.nanmean(np.where(~in_KxN, perf["loss_KxN"], np.nan))),
    }
    return out
