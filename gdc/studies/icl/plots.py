"""PNGs of the ICL-kinetics study: accuracy through training, K* against N with the fitted and 1/nu lines, t_IWL
against K, the transience curves, and per-item forget events."""

import math
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402

from gdc.studies.icl.analysis import PAPER_NU, steps_of  # noqa: E402
from gdc.studies.icl.config import ICLConfig  # noqa: E402


def write_all(res: dict, cfg: ICLConfig, workdir: str) -> None:
    _accuracy(res, cfg, workdir)
    _kstar(res, cfg, workdir)
    _iwl_time(res, cfg, workdir)
    _transience(cfg, workdir)
    _final_and_forgetting(res, cfg, workdir)


def _save(fig, workdir, name):
    fig.tight_layout()
    fig.savefig(os.path.join(workdir, name), dpi=100)
    plt.close(fig)


def _accuracy(res, cfg, workdir):
    ks, steps = np.asarray(res["k_values"]), steps_of(cfg.checkpoints, cfg.steps_per_checkpoint)
    fig, axes = plt.subplots(2, len(cfg.contexts), figsize=(3.6 * len(cfg.contexts), 6.5), squeeze=False)
    cmap = plt.get_cmap("viridis")
    for j, n in enumerate(cfg.contexts):
        r = np.load(os.path.join(workdir, f"run_N{n}.npz"))
        for kk, k in enumerate(ks):
            c = cmap(kk / max(len(ks) - 1, 1))
            axes[0, j].plot(steps, r["icl_E"][:, kk].mean(0), color=c, label=f"K={k}")
            axes[1, j].plot(steps, r["iwl_E"][:, kk].mean(0), color=c)
        axes[0, j].set(title=f"N = {n}: ICL accuracy (novel items)", ylim=(0.4, 1.02))
        axes[1, j].set(title=f"N = {n}: IWL accuracy (no copy)", xlabel="step", ylim=(0.4, 1.02))
    axes[0, 0].legend(fontsize=6, ncol=2)
    _save(fig, workdir, "accuracy_through_training.png")


def _power_line(ax, x, y_SxX, slope, color, label, ls="-"):
    """A line of the given slope through the geometric mean of the finite points."""
    y = np.asarray(y_SxX, np.float64)
    ok = np.isfinite(y) & (y > 0)
    if not ok.any() or not math.isfinite(slope):
        return
    x_all = np.broadcast_to(np.asarray(x, np.float64), y.shape)
    lx, ly = np.mean(np.log(x_all[ok])), np.mean(np.log(y[ok]))
    xx = np.geomspace(np.min(x), np.max(x), 20)
    ax.plot(xx, np.exp(ly + slope * (np.log(xx) - lx)), color=color, ls=ls, label=label)


def _kstar(res, cfg, workdir):
    ns = np.asarray(cfg.contexts, np.float64)
    kstar = np.asarray(res["k_star_SxN"], np.float64)
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    for i in range(kstar.shape[0]):
        jitter = ns * np.exp(0.03 * (i - kstar.shape[0] / 2))
        ax.scatter(jitter, kstar[i], color="C0", alpha=0.6, s=14, label="K* per seed" if i == 0 else None)
    sl, nu = res["slope"], res["nu"]
    _power_line(
        ax,
        ns,
        kstar,
        sl["exponent"],
        "C0",
        f"fit: slope {sl['exponent']:.2f} [{sl['ci95'][0]:.2f}, {sl['ci95'][1]:.2f}]",
    )
    inv = nu["inverse_nu_ci95"]
    _power_line(
        ax,
        ns,
        kstar,
        nu["inverse_nu"],
        "C2",
        f"1/nu measured = {nu['inverse_nu']:.2f} [{inv[0]:.2f}, {inv[1]:.2f}]",
        ls="--",
    )
    _power_line(ax, ns, kstar, 1.0, "0.5", "slope 1", ls=":")
    _power_line(ax, ns, kstar, 1 / PAPER_NU, "C3", f"paper's 1/nu = {1 / PAPER_NU:.2f}", ls="-.")
    if np.isfinite(kstar).any():
        ax.set(xscale="log", yscale="log")
        ax.set_xticks(ns, [f"{n:g}" for n in ns], minor=False)
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set(xlabel="N (context length)", ylabel="K*", title="task-diversity threshold K* against N")
    ax.legend(fontsize=7)
    _save(fig, workdir, "kstar_vs_n.png")


def _iwl_time(res, cfg, workdir):
    ks = np.asarray(cfg.iwl_k_values, np.float64)
    t = np.asarray(res["nu"]["t_iwl_SxK"], np.float64)
    fig, ax = plt.subplots(1, 2, figsize=(11, 4.2))
    for i in range(t.shape[0]):
        ax[0].scatter(
            ks * np.exp(0.03 * (i - t.shape[0] / 2)),
            t[i],
            color="C0",
            s=14,
            alpha=0.6,
            label="t_IWL per seed" if i == 0 else None,
        )
    fit = res["nu"]["nu"]
    _power_line(
        ax[0],
        ks,
        t,
        fit["exponent"],
        "C0",
        f"fit: nu = {fit['exponent']:.2f} [{fit['ci95'][0]:.2f}, {fit['ci95'][1]:.2f}]",
    )
    _power_line(ax[0], ks, t, PAPER_NU, "C3", f"paper's nu = {PAPER_NU}", ls="-.")
    if np.isfinite(t).any():
        ax[0].set(xscale="log", yscale="log")
    ax[0].set(
        xlabel="K",
        ylabel=f"steps to IWL accuracy {cfg.iwl_threshold}",
        title=f"IWL-only runs (N = {cfg.iwl_context}, no copy in context)",
    )
    ax[0].legend(fontsize=7)
    r = np.load(os.path.join(workdir, "run_iwl.npz"))
    steps = steps_of(cfg.iwl_checkpoints, cfg.iwl_steps_per_checkpoint)
    cmap = plt.get_cmap("viridis")
    for kk, k in enumerate(ks):
        ax[1].plot(steps, r["iwl_E"][:, kk].mean(0), color=cmap(kk / max(len(ks) - 1, 1)), label=f"K={int(k)}")
    ax[1].axhline(cfg.iwl_threshold, color="k", lw=0.5)
    ax[1].set(xscale="log", xlabel="step", ylabel="IWL accuracy (seed mean)", title="IWL accuracy through training")
    ax[1].legend(fontsize=6)
    _save(fig, workdir, "iwl_time_vs_k.png")


def _transience(cfg, workdir):
    r = np.load(os.path.join(workdir, "run_wd.npz"))
    steps = steps_of(cfg.wd_checkpoints, cfg.wd_steps_per_checkpoint)
    fig, axes = plt.subplots(1, len(cfg.wd_k_values), figsize=(4.2 * len(cfg.wd_k_values), 4), squeeze=False)
    for kk, k in enumerate(cfg.wd_k_values):
        ax = axes[0, kk]
        for w, (wd, c) in enumerate(zip((0.0, cfg.wd), ("C0", "C3"), strict=True)):
            icl_SxE, iwl_SxE = r["icl_E"][:, kk, w], r["iwl_E"][:, kk, w]
            ax.plot(steps, icl_SxE.mean(0), color=c, label=f"ICL, wd={wd}")
            ax.fill_between(steps, icl_SxE.min(0), icl_SxE.max(0), color=c, alpha=0.15)
            ax.plot(steps, iwl_SxE.mean(0), color=c, ls="--", label=f"IWL, wd={wd}")
        ax.axhline(cfg.threshold, color="k", lw=0.5)
        ax.set(title=f"K = {k}, N = {cfg.wd_context}", xlabel="step", ylim=(0.4, 1.02))
    axes[0, 0].set(ylabel="accuracy (seed mean; band: seed range)")
    axes[0, 0].legend(fontsize=7)
    _save(fig, workdir, "transience.png")


def _final_and_forgetting(res, cfg, workdir):
    ks = np.asarray(res["k_values"])
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    for j, n in enumerate(cfg.contexts):
        p = res["per_n"][n]
        icl, iwl = np.asarray(p["icl_final"]), np.asarray(p["iwl_final"])
        ax[0].plot(ks, icl.mean(0), marker="o", color=f"C{j}", label=f"ICL, N={n}")
        ax[0].plot(ks, iwl.mean(0), ls="--", color=f"C{j}", label=f"IWL, N={n}")
        fm = np.array([[c["forget_mean"] for c in row] for row in p["forget"]])
        ax[1].plot(ks, fm.mean(0), marker="o", color=f"C{j}", label=f"N={n}")
    ax[0].axhline(cfg.threshold, color="k", lw=0.5)
    ax[0].set(xscale="log", xlabel="K", ylabel="final accuracy (seed mean)", title="final ICL / IWL accuracy")
    ax[0].legend(fontsize=6, ncol=2)
    ax[1].set(xscale="log", xlabel="K", ylabel="forget events per tracked item", title="per-item IWL forget events")
    ax[1].legend(fontsize=7)
    _save(fig, workdir, "final_accuracy_and_forgetting.png")
