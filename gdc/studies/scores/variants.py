"""The score benchmark's variant runs and the self-influence score, beside the tracked run's scores.

* ``passes``: the tracked run again with ``tracker.scoring_passes`` = K (``scores.scoring_passes``): the same
  parameters (the passes change nothing the optimizer sees), and K fixed-parameter passes per epoch over every
  example. m and d are scored from the pass losses of every pass (``m_passK``, ``d_passK``) and of the pass at each
  epoch's end alone (``m_pass1``, ``d_pass1``); on the LM the span tracker reads the passes too (``span_m_passK``,
  ``span_d_passK``). Cost: the passes' wall time (``TrainResult.pass_seconds``, scaled by the share of passes a
  variant uses) plus the scoring.
* ``topk``: the LM run again with ``tracker.spans='top_k_drop'`` (``scores.top_k`` tokens per sequence, chosen from
  the drop between epoch 0 and epoch ``scores.top_k_warmup``; no canary marks needed): ``topk_span_m``,
  ``topk_span_d`` (the max over a sequence's tokens) and ``topk_span_d_mean``. Cost: the extra wall time of this
  run over the tracked run (floored at 0) plus the scoring.
* ``self_influence`` (``tracin``): TracIn's self-influence summed over checkpoints, sum_c lr_c ||grad L_i(theta_c)||^2
  at ``scores.tracin_checkpoints`` epoch ends spread evenly over training (the last included), lr_c the schedule's
  learning rate there; gradients by ghost norms (vmap(grad) where the ghost tap does not cover a model). Not the
  exact influence g^T H^-1 g: no Hessian is formed. Cost: the gradient passes' wall time.
"""

import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

from gdc import influence, jsonio, models, scoring, sharding
from gdc.scoring import alternatives
from gdc.scoring import workdir as scoring_workdir
from gdc.studies.scores.config import ScoresConfig
from gdc.train import config as config_lib
from gdc.train import loop
from gdc.train import state as state_lib


def with_tracker(rc: config_lib.RunConfig, **tracker) -> config_lib.RunConfig:
    """``rc`` with tracker fields changed, validated as a fresh config."""
    d = json.loads(json.dumps(rc.to_dict()))
    d["tracker"].update(tracker)
    return config_lib.from_mapping(d)


def _train(rc: config_lib.RunConfig, run_dir: str) -> tuple[loop.TrainResult, float]:
    start = time.perf_counter()
    result = loop.train(rc, run_dir, mesh=sharding.make_mesh(jax.devices()[:1]))
    jax.block_until_ready(result.state.params)
    return result, time.perf_counter() - start


def pass_variant(loss_PxN: np.ndarray, meta: dict, k: int) -> tuple[np.ndarray, dict] | None:
    """The rows of ``k`` passes per epoch out of the run's (None if its positions do not include them), with meta's
    early checkpoints recounted."""
    positions, epochs = np.asarray(meta["positions"]), np.asarray(meta["epochs"])
    spe = int(positions.max())
    want = {max(1, round((i + 1) * spe / k)) for i in range(k)}
    rows = np.isin(positions, sorted(want))
    if rows.sum() != k * len(set(epochs.tolist())):
        return None
    early = int(np.sum(epochs[rows] < int(meta.get("early_epochs") or 1)))
    return np.asarray(loss_PxN)[rows], {**meta, "early_checkpoints": early, "checkpoints": int(rows.sum())}


def pass_scores(cfg: ScoresConfig, rc, seed: int, out_dir: str, train_seconds: float):
    """(scores, seconds, sources, info) of the ``passes`` run (trained in ``out_dir/run_passes``)."""
    k = cfg.scoring_passes
    result, _ = _train(with_tracker(rc, scoring_passes=k), os.path.join(out_dir, "run_passes"))
    run_dir = os.path.join(out_dir, "run_passes")
    kw = dict(eps=cfg.eps_percentile, kind="percentile", seed=seed)
    start = time.perf_counter()
    arrays, _ = scoring.score_run(run_dir, **kw)
    seconds_all = time.perf_counter() - start
    scores = {f"m_pass{k}": arrays["m_rank_N"], f"d_pass{k}": arrays["d_N"]}
    seconds = {name: result.pass_seconds + seconds_all for name in scores}
    for name in ("span_m", "span_d"):
        if f"{name}_N" in arrays:
            scores[f"{name}_pass{k}"] = arrays[f"{name}_N"]
            seconds[f"{name}_pass{k}"] = result.pass_seconds + seconds_all
    sources = {name: f"{k} fixed-parameter scoring passes per epoch" for name in scores}
    if k > 1:
        start = time.perf_counter()
        loss_PxN, meta = scoring_workdir.load_loss_matrix(run_dir, "passes")
        sub = pass_variant(loss_PxN, meta, 1)
        if sub is not None:
            got, _ = scoring_workdir.compute_scores(*sub, None, **kw)
            spent = result.pass_seconds / k + time.perf_counter() - start
            scores.update(m_pass1=got["m_rank_N"], d_pass1=got["d_N"])
            seconds.update(m_pass1=spent, d_pass1=spent)
            sources.update({n: "the scoring pass at each epoch's end" for n in ("m_pass1", "d_pass1")})
    info = {"pass_seconds": result.pass_seconds, "passes": k}
    return scores, seconds, sources, info


def topk_scores(cfg: ScoresConfig, rc, seed: int, out_dir: str, train_seconds: float):
    """(scores, seconds, sources, info) of the ``topk`` run (``out_dir/run_topk``)."""
    topk_rc = with_tracker(rc, spans="top_k_drop", span_k=cfg.top_k, span_warmup=cfg.top_k_warmup)
    run_dir = os.path.join(out_dir, "run_topk")
    _, run_seconds = _train(topk_rc, run_dir)
    start = time.perf_counter()
    arrays, summary = scoring.score_run(run_dir, eps=cfg.eps_percentile, kind="percentile", seed=seed)
    spent = max(run_seconds - train_seconds, 0.0) + time.perf_counter() - start
    scores = {
        "topk_span_m": arrays["span_m_N"],
        "topk_span_d": arrays["span_d_N"],
        "topk_span_d_mean": arrays["span_d_mean_N"],
    }
    what = f"top_k_drop spans: {cfg.top_k} tokens per sequence chosen after epoch {cfg.top_k_warmup}"
    info = {"run_seconds": run_seconds, "spans": summary.get("spans")}
    return scores, {name: spent for name in scores}, {name: what for name in scores}, info


def tracin_epochs(cfg: ScoresConfig, num_epochs: int) -> list[int]:
    """The epoch indices whose end parameters enter the self-influence sum (evenly spread, first and last included)."""
    c = min(cfg.tracin_checkpoints, num_epochs)
    return sorted(set(np.round(np.linspace(0, num_epochs - 1, c)).astype(int).tolist())) if c else []


def grad_sq_norms(graphdef, params, data: dict[str, np.ndarray]) -> tuple[np.ndarray, str]:
    """Every example's squared loss-gradient norm at ``params``, and how it was computed."""
    try:
        return alternatives.grand(graphdef, params, data, method="ghost") ** 2, "ghost norms"
    except Exception:  # noqa: BLE001 - a model the ghost tap does not cover: exact vmap(grad) instead
        return alternatives.grand(graphdef, params, data, method="grads") ** 2, "vmap(grad)"


def self_influence(rc, run_dir: str, out_dir: str, epochs: list[int]) -> tuple[np.ndarray, str]:
    """sum_c lr_c ||g_i(theta_c)||^2 from the squared norms the epoch hook saved (``epochs/gradsq_XXXX.npy``)."""
    spe = int(jsonio.read(os.path.join(run_dir, "dataset.json"))["steps_per_epoch"])
    _, schedule = state_lib.make_optimizer(rc.train, spe * rc.train.num_epochs)
    total = 0.0
    for e in epochs:
        lr = float(schedule((e + 1) * spe - 1))  # the rate of the epoch's last step
        total = total + lr * np.load(os.path.join(out_dir, "epochs", f"gradsq_{e:04d}.npy"))
    return np.asarray(total, np.float64), f"sum over the params after epochs {[e + 1 for e in epochs]} of lr x ||g||^2"


def extra_runs(cfg: ScoresConfig, rc, setting: str, seed: int, out_dir: str, train_seconds: float, into) -> dict:
    """Trains and scores the ``passes`` and (LM) ``topk`` runs that ``cfg`` turns on, adding their scores, seconds
    and sources to the three dicts of ``into``; returns each run's info."""
    scores, seconds, sources = into
    info = {}
    for name, fn, on in (
        ("passes", pass_scores, cfg.scoring_passes > 0),
        ("topk", topk_scores, setting == "lm" and cfg.top_k > 0),
    ):
        if on:
            got, got_seconds, got_sources, info[name] = fn(cfg, rc, seed, out_dir, train_seconds)
            scores.update(got)
            seconds.update(got_seconds)
            sources.update(got_sources)
            print(f"[scores] seed {seed} {setting}: {name} run scored ({', '.join(got)})", flush=True)
    return info


def gauss_newton(graphdef, params, data: dict[str, np.ndarray]) -> np.ndarray:
    """``[P, P]`` float64: ``(1/N) sum_i J_i^T (diag(p_i) - p_i p_i^T) J_i``, J_i the Jacobian of example i's logits
    in the flat parameters, p_i its softmax: the Gauss-Newton matrix of the mean cross-entropy."""
    theta_P, unravel = influence.flatten(params)
    n = data["y"].shape[0]
    logits_fn = lambda t: models.forward(graphdef, unravel(t), data).astype(jnp.float32)  # noqa: E731
    jac_NxCxP = np.asarray(jax.jit(jax.jacrev(logits_fn))(theta_P), np.float64)
    z = np.asarray(logits_fn(theta_P), np.float64)
    p_NxC = np.exp(z - z.max(1, keepdims=True))
    p_NxC /= p_NxC.sum(1, keepdims=True)
    h_NxCxC = np.einsum("nc,cd->ncd", p_NxC, np.eye(p_NxC.shape[1])) - p_NxC[:, :, None] * p_NxC[:, None, :]
    hj_NxCxP = np.einsum("ncd,ndp->ncp", h_NxCxC, jac_NxCxP)
    p = jac_NxCxP.shape[2]
    return jac_NxCxP.reshape(-1, p).T @ hj_NxCxP.reshape(-1, p) / n  # BLAS: (N C) x P by (N C) x P


def gn_self_influence(graphdef, params, data: dict[str, np.ndarray], damping: float) -> np.ndarray:
    """``g_i^T (G + damping I)^-1 g_i`` per example (``gauss_newton``'s G, per-example loss gradients g_i)."""
    theta_P, unravel = influence.flatten(params)

    def loss_fn(t, batch):
        return models.per_example_loss(graphdef, unravel(t), batch)[0]

    g_NxP = np.asarray(influence.per_example_grads(loss_fn, theta_P, data), np.float64)
    g_PxP = gauss_newton(graphdef, params, data)
    factor = scipy.linalg.cho_factor(g_PxP + damping * np.eye(len(g_PxP)))
    return np.sum(g_NxP * scipy.linalg.cho_solve(factor, g_NxP.T).T, axis=1)


def add_gn_self_influence(graphdef, params, data: dict[str, np.ndarray], damping: float, into) -> None:
    """``gn_self_influence`` timed, added to the (scores, seconds, sources) dicts of ``into``."""
    start = time.perf_counter()
    into[0]["self_influence_gn"] = gn_self_influence(graphdef, params, data, damping)
    into[1]["self_influence_gn"] = time.perf_counter() - start
    into[2]["self_influence_gn"] = f"final params, exact Gauss-Newton matrix, damping {damping}"
