"""The score benchmark's stages: per seed and setting, a tracked run, every score (timed) and the ground truth.

  * ``train``: for each seed in ``scores.seeds`` and setting in ``scores.settings`` writes ``seed_S/<setting>/``:
    ``run/`` (the engine's tracked run, ``gdc.train.loop.train``, scored by ``gdc.scoring.score_run``),
    ``result.npz`` (every score ``score_<name>_N``, the truths ``cm_loss_N`` / ``cm_span_N`` with their standard
    errors, ``positive_N``) and ``result.json`` (seconds per score, the run's training seconds, the ensemble's
    seconds, the truths' split-half curves, what each score was computed from). A seed whose ``result.json``
    exists is skipped.
  * ``intervene`` (``gdc.studies.scores.interventions``): per seed and setting, prune / down-weight the top
    ``scores.prune_fraction`` by the best score, m, d and random, retrain each arm and evaluate it beside the run.
  * ``report`` (``gdc.studies.scores.report``): the leaderboard, pooled over seeds.

Scores, each oriented higher = flagged as memorized (``SCORES`` documents each): cartography's m (the study's
ranking key ``m_rank_N``: never-learned last) at ``eps_percentile``, m averaged over an eps sweep, upward variation,
difficulty d, final loss and its negation; EL2N at ``early_epoch`` and at the final params, GraNd at the final
params, AUM (classifier; from per-epoch logits taken by the run's ``epoch_metrics`` hook), the loss-trace features,
and a random score. Span m / span d join when the run's scores hold ``span_m_N`` / ``span_d_N``.

Ground truth: ``gdc.studies.scores.truth``.
"""

import dataclasses
import functools
import glob
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from gdc import jsonio, models, scoring, sharding
from gdc.data import sources
from gdc.influence import counterfactual
from gdc.scoring import alternatives
from gdc.studies.scores import truth as truth_lib
from gdc.studies.scores import variants
from gdc.studies.scores.config import ScoresConfig
from gdc.train import config as config_lib
from gdc.train import loop

# name -> what it is and its orientation (higher = flagged as memorized).
SCORES = {
    "m": "forget events / transitions at eps (percentile of final losses); never-learned ranked last",
    "m_sweep": "m averaged over the eps sweep (quantiles 5%..95% of final losses)",
    "upward_variation": "sum of the loss increases along the trace (eps-free)",
    "d": "difficulty: mean loss over the early epochs",
    "final_loss": "the last epoch's loss (high = not fitted)",
    "low_final_loss": "minus the last epoch's loss (low = fitted; the loss-based memorization score)",
    "el2n_early": "EL2N at the params after scores.early_epoch epochs",
    "el2n_final": "EL2N at the final params",
    "grand": "GraNd: loss-gradient norm at the final params",
    "aum": "minus AUM (mean assigned-class margin over epochs; low AUM = flagged)",
    "trace_area": "time-averaged loss (area under the trace)",
    "trace_drop": "largest drop between consecutive epochs (0 if none)",
    "trace_drop_epoch": "epoch of that drop (late = learned late; never dropped: E)",
    "trace_final_minus_min": "last loss minus the lowest",
    "trace_variance": "variance of the loss trace",
    "span_m": "m of the secret digits (the span tracker's losses), the max over a copy's spans; canary copies only",
    "span_d": "d of the secret digits (the span tracker's losses), the max over a copy's spans; canary copies only",
    "m_passK": "m from K fixed-parameter scoring passes per epoch (scores.scoring_passes; a second run)",
    "d_passK": "d from K fixed-parameter scoring passes per epoch",
    "m_pass1": "m from the scoring pass at each epoch's end alone (the passes run's last pass of each epoch)",
    "d_pass1": "d from the scoring pass at each epoch's end alone",
    "span_m_passK": "span m of the secret digits from the K scoring passes; canary copies only",
    "span_d_passK": "span d of the secret digits from the K scoring passes; canary copies only",
    "topk_span_m": "m of the top_k_drop tokens (no canary marks), the max over a sequence's tokens",
    "topk_span_d": "d of the top_k_drop tokens from their first tracked epoch, the max over a sequence's tokens",
    "topk_span_d_mean": "d of the top_k_drop tokens, the mean over a sequence's tokens",
    "self_influence": "TracIn self-influence: sum over checkpoints of lr x ||grad L_i||^2 (no Hessian)",
    "self_influence_gn": "MLP: g_i^T (G + damping I)^-1 g_i at the final params, G the exact Gauss-Newton matrix",
    "random": "control: uniform random",
}
CHUNK = 128  # examples per forward call of the hook and the final-params scores


def log(msg: str) -> None:
    print(f"[scores] {msg}", flush=True)


def run_config(cfg: ScoresConfig, setting: str, seed: int) -> config_lib.RunConfig:
    """The engine's RunConfig of the tracked run of ``setting`` at ``seed`` (the ensemble reuses data, model, train)."""
    common = {
        "checkpoint": {"every_steps": 0, "max_to_keep": 1},
        "log": {"every_steps": 1000, "progress": False, "tensorboard": False},
    }
    if setting == "lm":
        return config_lib.from_mapping(
            {
                "seed": seed,
                "data": dict(
                    source="pydoc_canaries",
                    seq_len=cfg.lm_seq_len,
                    heldout_fraction=0.1,
                    max_examples=cfg.lm_examples,
                    num_canaries=cfg.lm_canaries,
                    canary_repeats=cfg.lm_repeats,
                    secret_digits=6,
                    num_control_canaries=0,
                    canary_placement="row_start",
                    split_seed=seed,
                ),
                "model": dict(name=cfg.lm_model, width=cfg.lm_width, depth=cfg.lm_depth, num_heads=cfg.lm_heads),
                "train": dict(
                    batch_size=cfg.lm_batch_size,
                    num_epochs=cfg.lm_epochs,
                    optimizer="adam",
                    learning_rate=cfg.lm_learning_rate,
                    schedule="wsd",
                    warmup_steps=20,
                    decay_fraction=0.25,
                    grad_clip=1.0,
                ),
                "tracker": dict(
                    criterion="loss",
                    eps_low=1.0,
                    eps_high=1.2,
                    early_epochs=cfg.early_epoch,
                    spans="canary_secrets" if cfg.spans else "none",
                ),
                **common,
            }
        )
    return config_lib.from_mapping(
        {
            "seed": seed,
            "data": dict(
                source="synthetic",
                num_examples=cfg.mlp_examples,
                num_features=cfg.mlp_features,
                num_classes=cfg.mlp_classes,
                heldout_fraction=0.2,
                label_noise=cfg.mlp_label_noise,
                split_seed=seed,
            ),
            "model": dict(name="mlp", width=cfg.mlp_width, depth=cfg.mlp_depth),
            "train": dict(
                batch_size=cfg.mlp_batch_size,
                num_epochs=cfg.mlp_epochs,
                optimizer="adam",
                learning_rate=cfg.mlp_learning_rate,
            ),
            "tracker": dict(criterion="loss", eps_low=0.5, eps_high=0.5, early_epochs=cfg.early_epoch),
            **common,
        }
    )


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _logits(params, batch, *, graphdef):
    return models.forward(graphdef, params, batch).astype(jnp.float32)


def logits(graphdef, params, data: dict[str, np.ndarray]) -> np.ndarray:
    """Every example's logits at ``params`` (``[N, K]`` or ``[N, L, V]``), ``CHUNK`` examples per call."""
    n = next(iter(data.values())).shape[0]
    out = []
    for start in range(0, n, CHUNK):
        rows = {k: v[start : start + CHUNK] for k, v in data.items()}
        pad = CHUNK - next(iter(rows.values())).shape[0]  # one compiled shape
        rows = {k: np.concatenate([v, np.zeros((pad, *v.shape[1:]), v.dtype)]) for k, v in rows.items()}
        out.append(np.asarray(_logits(params, rows, graphdef=graphdef))[: CHUNK - pad])
    return np.concatenate(out)


def el2n_of(z: np.ndarray, data: dict[str, np.ndarray]) -> np.ndarray:
    if "y" in data:
        return alternatives.el2n(z, data["y"])
    return alternatives.el2n(z, data["tokens"][:, 1:], data["token_mask"])


class EpochHook:
    """``loop.train``'s ``epoch_metrics``: after each epoch keeps what the per-epoch scores need, and times itself.

    Classifier: the logits of every training example (AUM). Both: EL2N at the params after ``early_epoch`` epochs.
    Saved under ``out_dir/epochs/`` so that a resumed run keeps the epochs it already passed.
    """

    def __init__(self, out_dir: str, run_dir: str, early_epoch: int, tracin_epochs: tuple[int, ...] = ()):
        self.dir, self.run_dir, self.early = os.path.join(out_dir, "epochs"), run_dir, early_epoch
        self.tracin_epochs, self.tracin_method = set(tracin_epochs), ""
        self.seconds = {"aum": 0.0, "el2n_early": 0.0, "self_influence": 0.0}
        os.makedirs(self.dir, exist_ok=True)

    def __call__(self, graphdef, params, dataset, mesh) -> dict[str, float]:
        del mesh
        epoch = len(glob.glob(os.path.join(self.run_dir, "trackers", "epoch_*.npz"))) - 1  # written just before
        data = truth_lib.inputs(dataset)
        if dataset.kind == "classification":
            start = time.perf_counter()
            z = logits(graphdef, params, data)
            np.save(os.path.join(self.dir, f"logits_{epoch:04d}.npy"), z)
            self.seconds["aum"] += time.perf_counter() - start
            if epoch + 1 == self.early:
                start = time.perf_counter()
                np.save(os.path.join(self.dir, "el2n_early_N.npy"), el2n_of(z, data))
                self.seconds["el2n_early"] += time.perf_counter() - start
        elif epoch + 1 == self.early:
            start = time.perf_counter()
            np.save(os.path.join(self.dir, "el2n_early_N.npy"), el2n_of(logits(graphdef, params, data), data))
            self.seconds["el2n_early"] += time.perf_counter() - start
        if epoch in self.tracin_epochs:
            start = time.perf_counter()
            sq_N, self.tracin_method = variants.grad_sq_norms(graphdef, params, data)
            np.save(os.path.join(self.dir, f"gradsq_{epoch:04d}.npy"), sq_N)
            self.seconds["self_influence"] += time.perf_counter() - start
        return {}


def sweep_values(loss_ExN: np.ndarray, count: int) -> np.ndarray:
    final = loss_ExN[-1][np.isfinite(loss_ExN[-1])]
    return np.quantile(final, np.linspace(0.05, 0.95, count))


def cartography_scores(cfg: ScoresConfig, run_dir: str, seed: int) -> tuple[dict[str, np.ndarray], dict, np.ndarray]:
    """(scores, their seconds, loss_ExN): score_run at the study's eps plus the eps sweep."""
    start = time.perf_counter()
    arrays, summary = scoring.score_run(run_dir, eps=cfg.eps_percentile, kind="percentile", seed=seed)
    loss_ExN, _ = scoring.load_loss_matrix(run_dir, "auto")
    score_seconds = time.perf_counter() - start
    start = time.perf_counter()
    sweep = scoring.eps_sweep(loss_ExN, sweep_values(np.asarray(loss_ExN), cfg.sweep), "absolute")
    sweep_seconds = time.perf_counter() - start
    out = {
        "m": arrays["m_rank_N"],
        "m_sweep": np.nan_to_num(sweep["m_SxN"]).mean(axis=0),
        "upward_variation": arrays["uv_N"],
        "d": arrays["d_N"],
        "final_loss": arrays["final_loss_N"],
        "low_final_loss": -arrays["final_loss_N"],
    }
    for name in ("span_m", "span_d"):
        if f"{name}_N" in arrays:
            out[name] = arrays[f"{name}_N"]
    seconds = {name: score_seconds for name in out}
    seconds["m_sweep"] = score_seconds + sweep_seconds
    return out, seconds, np.asarray(loss_ExN, np.float64)


def trace_scores(loss_ExN: np.ndarray) -> tuple[dict[str, np.ndarray], float]:
    start = time.perf_counter()
    f = alternatives.trace_features(loss_ExN)
    out = {
        "trace_area": f["area"],
        "trace_drop": np.nan_to_num(f["drop"], nan=0.0),
        "trace_drop_epoch": np.nan_to_num(f["drop_epoch"], nan=float(loss_ExN.shape[0])),
        "trace_final_minus_min": f["final_minus_min"],
        "trace_variance": f["variance"],
    }
    return out, time.perf_counter() - start


def run_setting(cfg: ScoresConfig, setting: str, seed: int, out_dir: str) -> dict:
    """One seed of one setting: tracked run, every score, ground truth; writes result.npz and result.json."""
    json_path = os.path.join(out_dir, "result.json")
    if os.path.exists(json_path):
        return jsonio.read(json_path)
    os.makedirs(out_dir, exist_ok=True)
    rc = run_config(cfg, setting, seed)
    run_dir = os.path.join(out_dir, "run")
    tracin = variants.tracin_epochs(cfg, rc.train.num_epochs)
    hook = EpochHook(out_dir, run_dir, cfg.early_epoch, tuple(tracin))
    mesh = sharding.make_mesh(jax.devices()[:1])
    start = time.perf_counter()
    result = loop.train(rc, run_dir, mesh=mesh, epoch_metrics=hook)
    jax.block_until_ready(result.state.params)
    train_seconds = time.perf_counter() - start - sum(hook.seconds.values())
    log(f"seed {seed} {setting}: tracked run in {train_seconds:.0f} s (+{sum(hook.seconds.values()):.1f} s hook)")
    dataset = sources.build_dataset(rc.data)
    data = truth_lib.inputs(dataset)
    graphdef, _ = loop.build_model(rc, dataset)
    params = result.state.params
    n = dataset.num_train
    sources_of = {}

    scores, seconds, loss_ExN = cartography_scores(cfg, run_dir, seed)
    trace, trace_seconds = trace_scores(loss_ExN)
    scores.update(trace)
    seconds.update({name: trace_seconds for name in trace})

    early_path = os.path.join(out_dir, "epochs", "el2n_early_N.npy")
    if os.path.exists(early_path):
        scores["el2n_early"] = np.load(early_path)
        seconds["el2n_early"] = hook.seconds["el2n_early"]
        sources_of["el2n_early"] = f"params after epoch {cfg.early_epoch} (the run's epoch hook)"
    start = time.perf_counter()
    z_final = logits(graphdef, params, data)
    scores["el2n_final"] = el2n_of(z_final, data)
    seconds["el2n_final"] = time.perf_counter() - start
    sources_of["el2n_final"] = "final params"

    if setting == "mlp" or cfg.grand_lm:
        start = time.perf_counter()
        try:
            scores["grand"] = alternatives.grand(graphdef, params, data, method="ghost")
            sources_of["grand"] = "final params, ghost norms"
        except Exception as e:  # noqa: BLE001 - a model the ghost tap does not cover: exact vmap(grad) instead
            log(f"GraNd ghost norms failed ({type(e).__name__}); using vmap(grad)")
            scores["grand"] = alternatives.grand(graphdef, params, data, method="grads")
            sources_of["grand"] = "final params, vmap(grad)"
        seconds["grand"] = time.perf_counter() - start
    else:
        sources_of["grand"] = "skipped (scores.grand_lm=False)"

    if setting == "mlp":
        files = sorted(glob.glob(os.path.join(out_dir, "epochs", "logits_*.npy")))
        start = time.perf_counter()
        if len(files) == rc.train.num_epochs:
            scores["aum"] = -alternatives.aum(np.stack([np.load(f) for f in files]), data["y"])
            seconds["aum"] = hook.seconds["aum"] + time.perf_counter() - start
            sources_of["aum"] = f"logits after each of the {len(files)} epochs (the run's epoch hook)"
        else:  # a run resumed across the hook's epochs: only the final params are at hand
            scores["final_margin"] = -alternatives.aum(z_final[None], data["y"])
            seconds["final_margin"] = seconds["el2n_final"] + time.perf_counter() - start
            sources_of["final_margin"] = f"final params only ({len(files)} of {rc.train.num_epochs} epochs' logits)"

    if tracin and all(os.path.exists(os.path.join(out_dir, "epochs", f"gradsq_{e:04d}.npy")) for e in tracin):
        start = time.perf_counter()
        scores["self_influence"], sources_of["self_influence"] = variants.self_influence(rc, run_dir, out_dir, tracin)
        seconds["self_influence"] = hook.seconds["self_influence"] + time.perf_counter() - start
        sources_of["self_influence"] += f" ({hook.tracin_method or 'norms saved by an earlier invocation'})"
    if setting == "mlp" and cfg.gn_damping > 0:
        variants.add_gn_self_influence(graphdef, params, data, cfg.gn_damping, (scores, seconds, sources_of))
    extra_runs = variants.extra_runs(cfg, rc, setting, seed, out_dir, train_seconds, (scores, seconds, sources_of))

    scores["random"] = np.random.default_rng([seed, 23]).random(n)
    seconds["random"] = 0.0

    truth = truth_lib.ground_truth(cfg, rc, dataset, seed)
    log(
        f"seed {seed} {setting}: {cfg.models} counterfactual models in {truth['seconds']['train']:.0f} s "
        f"(+{truth['seconds']['performance']:.0f} s scoring)"
    )
    positive_N = dataset.train["is_canary"] if setting == "lm" else dataset.train["is_noisy"]
    extra = {}
    if setting == "lm":
        span_NxL = counterfactual.canary_span_mask(dataset.meta["canaries"], n, rc.data.seq_len)
        one = jax.tree.map(lambda a: a[None], params)
        perf = counterfactual.performance(graphdef, one, data, span_mask_NxL=span_NxL)
        acc_N = perf["span_acc_KxN"][0]
        extra["tracked_span_acc"] = float(np.nanmean(acc_N))
        extra["tracked_span_exact"] = float(np.nanmean(acc_N[span_NxL.any(1)] == 1.0))
    arrays = {f"score_{name}_N": np.asarray(v, np.float64) for name, v in scores.items()}
    arrays.update({k: v for k, v in truth.items() if k.endswith("_N")})
    arrays["positive_N"] = np.asarray(positive_N, bool)
    arrays["in_KxN"] = truth["in_KxN"]
    np.savez(os.path.join(out_dir, "result.npz"), **arrays)
    info = {
        "seed": seed,
        "setting": setting,
        "num_train": n,
        "positives": int(np.sum(positive_N)),
        "train_seconds": train_seconds,
        "hook_seconds": hook.seconds,
        "extra_runs": extra_runs,
        "score_seconds": seconds,
        "score_sources": sources_of,
        "ensemble_seconds": truth["seconds"],
        "models": cfg.models,
        "stability": {k[len("stability_") :]: v for k, v in truth.items() if k.startswith("stability_")},
        "final_loss_in_out": truth["final_loss_in_out"],
        **({"span_acc_in_out": truth["span_acc"]} if "span_acc" in truth else {}),
        **extra,
        "run_config": dataclasses.asdict(rc),
    }
    jsonio.write(json_path, info, indent=2)
    return info


def load_setting(out_dir: str) -> tuple[dict, dict[str, np.ndarray]]:
    with np.load(os.path.join(out_dir, "result.npz")) as z:
        arrays = {k: z[k] for k in z.files}
    return jsonio.read(os.path.join(out_dir, "result.json")), arrays


def setting_dir(workdir: str, seed: int, setting: str) -> str:
    return os.path.join(workdir, f"seed_{seed}", setting)


def run_study(cfg: ScoresConfig, workdir: str, mode: str = "all", command: str = "") -> dict:
    os.makedirs(workdir, exist_ok=True)
    if command and mode != "report":
        with open(os.path.join(workdir, "commands.txt"), "a") as f:
            f.write(command + "\n")
    if mode in ("all", "train"):
        for seed in cfg.seeds:
            for setting in cfg.settings:
                run_setting(cfg, setting, seed, setting_dir(workdir, seed, setting))
    if mode in ("all", "intervene"):
        from gdc.studies.scores import interventions

        interventions.run(cfg, workdir)
    if mode in ("all", "report"):
        from gdc.studies.scores import report

        return report.write(cfg, workdir, command)
    return {}
