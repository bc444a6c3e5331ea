"""Claim 1 (paper.md §5.2, §11 item 7): the memorization score m lower-bounds influence, ``m_i <= C |I_i|``.

On L2-regularised logistic and softmax regression (float64), with and without label noise:
  * m_i comes from the engine's tracker during an SGD probe run (scoring pass after every epoch, single threshold
    ``theory.eps``); the eps sweep re-runs the same state machine offline on the recorded losses (``gdc.scoring``),
    and the tracker's own counts are checked against it.
  * Ground truth is at the exact optimum theta_hat (scipy L-BFGS to ``theory.gtol``): exact self-influence
    ``g_i^T H^-1 g_i`` with the exact Hessian, and the exact leave-one-out change of example i's own loss
    (optax L-BFGS retrains, vmapped, warm-started).
  * Influence is checked against LOO first (Pearson and Spearman), so that the m-vs-influence numbers rest on a
    verified influence.
  * For every (eps kind, value, single vs hysteresis) setting: Spearman, the smallest C, and the fraction violating
    a fixed scale-free C (gdc.theory.stats); the same for the eps-free upward variation and for difficulty.
"""

import functools

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from gdc import influence, scoring  # noqa: E402
from gdc.theory import convex, stats  # noqa: E402
from gdc.theory.config import TheoryConfig  # noqa: E402

NUM_TEST_POINTS = 10  # single test points whose LOO loss change is compared with influence


def classes(model: str, cfg: TheoryConfig) -> int:
    return 2 if model == "logistic" else cfg.softmax_classes


def exact_influence(probe: dict, cfg: TheoryConfig, num_classes: int) -> dict:
    """Exact self-influence and LOO changes at the L-BFGS optimum.

    Returns:
      self_influence_N (``g_i^T H^-1 g_i``), loo_self_N (``loss_i(theta_-i) - loss_i(theta_hat)``), loo_test_N (mean
      test-loss change), pred_test_N (its influence prediction), loo_point_NxM and pred_point_NxM (single test
      points), loo_grad_norm_max, hessian_eig_min.
    """
    n = cfg.num_train
    batch, test_batch = probe["batch"], probe["test_batch"]
    theta_P = jnp.asarray(probe["theta_hat_P"])
    ex = _influence(num_classes, cfg.l2, theta_P, batch, test_batch)
    thetas_NxP, norms_N = influence.loo_retrain(
        convex.objective(num_classes, cfg.l2), theta_P, jnp.ones((n,)), jnp.arange(n), batch, tol=cfg.gtol * 1e-2
    )
    ex.update(_loo_effects(num_classes, theta_P, thetas_NxP, batch, test_batch))
    out = {k: np.asarray(v) for k, v in ex.items()}
    out["loo_grad_norm_max"] = float(norms_N.max())
    out["hessian_eig_min"] = float(out.pop("eig_P").min())
    return out


@functools.partial(jax.jit, static_argnums=(0, 1))
def _influence(num_classes: int, l2: float, theta_P: jax.Array, batch: dict, test_batch: dict) -> dict:
    n = batch["y"].shape[0]
    lf = convex.loss_fn(num_classes)
    obj = convex.objective(num_classes, l2)
    h_PxP = influence.exact_hessian(lambda t: obj(t, jnp.ones((n,), t.dtype), batch), theta_P)
    h_inv_PxP = jnp.linalg.inv(h_PxP)
    points = jax.tree.map(lambda a: a[:NUM_TEST_POINTS], test_batch)
    g_point_MxP = influence.per_example_grads(lf, theta_P, points)
    g_test_P = jax.grad(lambda t: lf(t, test_batch).mean())(theta_P)
    u_MxP = jnp.concatenate([g_point_MxP, g_test_P[None]]) @ h_inv_PxP
    pred_NxM = influence.grad_dots(lf, theta_P, batch, u_MxP) / n  # removing i moves theta by H^-1 g_i / n
    return {
        "self_influence_N": influence.self_influence(lf, theta_P, batch, lambda g: h_inv_PxP @ g),
        "pred_test_N": pred_NxM[:, -1],
        "pred_point_NxM": pred_NxM[:, :-1],
        "eig_P": jnp.linalg.eigvalsh(h_PxP),
    }


@functools.partial(jax.jit, static_argnums=(0,))
def _loo_effects(num_classes: int, theta_P, thetas_NxP, batch: dict, test_batch: dict) -> dict:
    n = batch["y"].shape[0]
    lf = convex.loss_fn(num_classes)
    points = jax.tree.map(lambda a: a[:NUM_TEST_POINTS], test_batch)
    loo_self_N = jax.vmap(lambda t, i: lf(t, batch)[i])(thetas_NxP, jnp.arange(n)) - lf(theta_P, batch)
    return {
        "loo_self_N": loo_self_N,
        "loo_point_NxM": jax.vmap(lambda t: lf(t, points))(thetas_NxP) - lf(theta_P, points)[None],
        "loo_test_N": jax.vmap(lambda t: lf(t, test_batch).mean())(thetas_NxP) - lf(theta_P, test_batch).mean(),
    }


def influence_vs_loo(ex: dict, n: int) -> dict:
    """Pearson and Spearman of influence predictions against exact LOO changes."""
    point_p = [stats.pearson(ex["pred_point_NxM"][:, m], ex["loo_point_NxM"][:, m]) for m in range(NUM_TEST_POINTS)]
    point_s = [stats.spearman(ex["pred_point_NxM"][:, m], ex["loo_point_NxM"][:, m])[0] for m in range(NUM_TEST_POINTS)]
    return {
        "self_pearson": stats.pearson(ex["self_influence_N"] / n, ex["loo_self_N"]),
        "self_spearman": stats.spearman(ex["self_influence_N"], ex["loo_self_N"])[0],
        "test_mean_pearson": stats.pearson(ex["pred_test_N"], ex["loo_test_N"]),
        "test_mean_spearman": stats.spearman(ex["pred_test_N"], ex["loo_test_N"])[0],
        "test_point_pearson_min": float(np.min(point_p)),
        "test_point_spearman_min": float(np.min(point_s)),
        "test_point_pearson_median": float(np.median(point_p)),
        "test_point_spearman_median": float(np.median(point_s)),
    }


def analyse(model: str, label_noise: float, cfg: TheoryConfig, seed: int) -> tuple[dict, dict]:
    """Every lower-bound statistic for one convex task; returns (JSON result, arrays for the plots)."""
    k = classes(model, cfg)
    probe = convex.probe(k, label_noise, cfg, seed)
    ex = exact_influence(probe, cfg, k)
    loss_ExN = probe["loss_ExN"]
    offline = scoring.forget_events(loss_ExN, cfg.eps, cfg.eps)
    influences = {"self_influence": ex["self_influence_N"], "loo": ex["loo_self_N"]}
    kw = {"bound_c": cfg.bound_c, "max_violation": cfg.max_violation}
    noisy_N = probe["train"]["is_noisy"] if label_noise > 0 else None
    rows = stats.sweep(
        loss_ExN,
        influences,
        stats.settings_for(cfg.eps_absolute, cfg.eps_percentile, cfg.hysteresis),
        flags_N=noisy_N,
        **kw,
    )
    uv_N, uv_norm_N = scoring.upward_variation(loss_ExN)
    d_N = scoring.difficulty(loss_ExN, 1)
    eps_free = {
        name: {k2: stats.bound_stats(s_N, v, **kw) for k2, v in influences.items()}
        for name, s_N in (("upward_variation", uv_N), ("upward_variation_norm", uv_norm_N), ("difficulty", d_N))
    }
    m_N = probe["m_N"]
    never_N = ~probe["tracker"]["learn_N"].astype(bool)
    top_infl = np.argsort(-ex["self_influence_N"])[: max(1, len(m_N) // 10)]
    result = {
        "model": model,
        "num_classes": k,
        "label_noise": label_noise,
        "num_train": cfg.num_train,
        "num_params": int(probe["theta_hat_P"].size),
        "checkpoints": int(loss_ExN.shape[0]),
        "fit_grad_norm": probe["fit"]["grad_norm"],
        "loo_grad_norm_max": ex["loo_grad_norm_max"],
        "hessian_eig_min": ex["hessian_eig_min"],
        "sgd_to_optimum": float(np.linalg.norm(probe["theta_sgd_P"] - probe["theta_hat_P"])),
        "optimum_norm": float(np.linalg.norm(probe["theta_hat_P"])),
        "influence_vs_loo": influence_vs_loo(ex, cfg.num_train),
        "tracker_eps": cfg.eps,
        "tracker_matches_offline": bool(np.array_equal(offline["forget_N"], probe["tracker"]["forget_N"])),
        "tracker": {name: stats.bound_stats(m_N, v, **kw) for name, v in influences.items()},
        "never_learned": int(never_N.sum()),
        "never_learned_self_influence_mean": float(ex["self_influence_N"][never_N].mean()) if never_N.any() else None,
        "self_influence_mean": float(ex["self_influence_N"].mean()),
        "top10pct_influence_with_m0": float((m_N[top_infl] == 0).mean()),
        "sweep": rows,
        "eps_free": eps_free,
        "verdict_self_influence": stats.sweep_verdict(rows, "self_influence"),
        "verdict_loo": stats.sweep_verdict(rows, "loo"),
    }
    arrays = {"m_N": m_N, "noisy_N": probe["train"]["is_noisy"], "uv_N": uv_N, **ex}
    return result, arrays


def run(cfg: TheoryConfig, seed: int, out_dir: str) -> dict:
    """Claim 1 on every convex model, noisy and clean; writes lower_bound.png and influence_vs_loo.png."""
    runs, arrays = {}, {}
    with jax.enable_x64(True):
        for model in cfg.models:
            for noise in sorted({cfg.label_noise, 0.0}, reverse=True):
                name = f"{model}_noise{noise:g}"
                runs[name], arrays[name] = analyse(model, noise, cfg, seed)
    verdict = stats.combine([r["verdict_self_influence"] for r in runs.values()])
    uv_holds = [r["eps_free"]["upward_variation"]["self_influence"]["holds"] for r in runs.values()]
    result = {
        "claim": "m lower-bounds influence (m_i <= C abs(I_i))",
        "verdict": verdict,
        "verdict_loo": stats.combine([r["verdict_loo"] for r in runs.values()]),
        "upward_variation_holds": uv_holds,
        "runs": runs,
        "figures": ["lower_bound.png", "influence_vs_loo.png"],
    }
    plot(runs, arrays, cfg, out_dir)
    return result


def plot(runs: dict, arrays: dict, cfg: TheoryConfig, out_dir: str) -> None:
    first = next(iter(runs))
    a, r = arrays[first], runs[first]
    fig, axes = plt.subplots(2, 2, figsize=(12, 9))
    ax = axes[0, 0]
    noisy = a["noisy_N"]
    ax.scatter(a["self_influence_N"][~noisy], a["m_N"][~noisy], s=8, label="clean label")
    ax.scatter(a["self_influence_N"][noisy], a["m_N"][noisy], s=14, c="red", label="flipped label")
    c_min = r["tracker"]["self_influence"]["c_min"]
    xs = np.linspace(0, a["self_influence_N"].max(), 50)
    ax.plot(xs, np.minimum(c_min * xs, a["m_N"].max() * 1.1), "k--", lw=1, label=f"m = C_min I (C_min={c_min:.3g})")
    ax.set(xlabel="exact self-influence g^T H^-1 g", ylabel=f"m (tracker, eps={cfg.eps})", title=f"{first}")
    ax.legend(fontsize=8)
    for ax, kind in ((axes[0, 1], "percentile"), (axes[1, 0], "absolute")):
        for i, (name, run) in enumerate(runs.items()):
            for h, style in ((1.0, "-"), (cfg.hysteresis, "--")):
                rows = [x for x in run["sweep"] if x["kind"] == kind and x["hysteresis"] == h]
                ax.plot(
                    [x["value"] for x in rows],
                    [x["self_influence"]["spearman"] for x in rows],
                    style,
                    marker="o",
                    color=f"C{i}",
                    label=f"{name}{'' if h == 1.0 else f' hyst x{h:g}'}",
                )
            uv = run["eps_free"]["upward_variation"]["self_influence"]["spearman"]
            ax.axhline(uv, color=f"C{i}", lw=0.8, ls=":")
        ax.axhline(0, color="k", lw=0.5)
        ax.set(xlabel=f"eps ({kind})", ylabel="Spearman(m, self-influence)", title=f"{kind} eps (dotted: upward var.)")
        if kind == "absolute":
            ax.set_xscale("log")
    axes[0, 1].legend(fontsize=7)
    ax = axes[1, 1]
    for i, run in enumerate(runs.values()):
        rows = [x for x in run["sweep"] if x["kind"] == "percentile" and x["hysteresis"] == 1.0]
        ax.plot([x["value"] for x in rows], [x["self_influence"]["violation"] for x in rows], marker="o", color=f"C{i}")
        ax.axhline(run["eps_free"]["upward_variation"]["self_influence"]["violation"], color=f"C{i}", ls=":", lw=0.8)
    ax.axhline(cfg.max_violation, color="k", ls="--", lw=0.8, label="max_violation")
    ax.set(
        xlabel="eps (percentile of final loss)",
        ylabel=f"fraction violating m/mean(m) <= {cfg.bound_c:g} |I|/mean|I|",
        title="violations (dotted: upward variation)",
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(f"{out_dir}/lower_bound.png", dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    n = r["num_train"]
    for ax, pred, actual, title in (
        (axes[0], a["self_influence_N"] / n, a["loo_self_N"], "own loss change when left out"),
        (axes[1], a["pred_test_N"], a["loo_test_N"], "mean test-loss change when left out"),
    ):
        ax.scatter(actual, pred, s=8)
        lim = [min(actual.min(), pred.min()), max(actual.max(), pred.max())]
        ax.plot(lim, lim, "k--", lw=0.8)
        ax.set(xlabel="exact LOO (L-BFGS retrain)", ylabel="influence prediction", title=f"{first}: {title}")
    iv = r["influence_vs_loo"]
    axes[0].text(0.05, 0.9, f"Pearson {iv['self_pearson']:.4f}", transform=axes[0].transAxes)
    axes[1].text(0.05, 0.9, f"Pearson {iv['test_mean_pearson']:.4f}", transform=axes[1].transAxes)
    fig.tight_layout()
    fig.savefig(f"{out_dir}/influence_vs_loo.png", dpi=110)
    plt.close(fig)
