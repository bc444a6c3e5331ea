"""The ICL-kinetics study: K* per context length N, nu from IWL-only runs, transience under weight decay.

Stages (each skipped when its output exists, so ``--mode=all`` resumes):
  * ``train``: per N, every (seed, K) network trains in one vmapped program; writes ``run_N<n>.npz`` with the
    per-checkpoint IWL / ICL accuracy, training loss and the tracked items' IWL losses, shaped [S, K, E, ...].
  * ``nu``: IWL-only networks (training contexts never hold the query's pair) at context length ``iwl_context``
    for every (seed, K in ``iwl_k_values``); writes ``run_iwl.npz`` shaped [S, K, E, ...].
  * ``transience``: ``wd_num_seeds`` seeds x ``wd_k_values`` x AdamW weight decay (0, ``wd``), paired (the same
    items, initialisation and data order in both arms); writes ``run_wd.npz`` shaped [S, K, W, E, ...].
  * ``report``: K* per (N, seed), t_IWL per (K, seed), the fits and verdicts (``gdc.studies.icl.analysis``),
    ``results.json``, ``report.md`` and PNGs.

Every program is lowered on the main thread and compiled on a 2-thread pool ahead of its run, so one grid trains
while the next compiles (compile time is a large part of this study's wall time on CPU).
"""

import concurrent.futures
import dataclasses
import functools
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from gdc.errors import StageInputError
from gdc.studies.icl import model as model_lib
from gdc.studies.icl.config import ICLConfig

STAGES = ("train", "nu", "transience")


@dataclasses.dataclass(frozen=True)
class Grid:
    stage: str
    path: str
    spec: model_lib.RunSpec
    seeds: tuple[int, ...]
    k_values: tuple[int, ...]
    wds: tuple[float, ...]  # one entry: the output has no W axis


def spec_of(cfg: ICLConfig, n: int, **overrides) -> model_lib.RunSpec:
    names = {f.name for f in dataclasses.fields(model_lib.RunSpec)}
    values = {k: v for k, v in dataclasses.asdict(cfg).items() if k in names}
    values.update(n=n, k_max=max(cfg.k_values))
    values.update(overrides)
    return model_lib.RunSpec(**values)


def compiler_options(cfg) -> dict | None:
    """XLA options: with ``fast_compile`` the CPU backend skips its optimisation passes (smoke tests)."""
    return (
        {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True} if cfg.fast_compile else None
    )


def seeds_of(seed: int, cfg: ICLConfig) -> list[int]:
    return [seed + i for i in range(cfg.num_seeds)]


def grids(seed: int, cfg: ICLConfig, workdir: str) -> list[Grid]:
    seeds = tuple(seeds_of(seed, cfg))
    out = [
        Grid("train", os.path.join(workdir, f"run_N{n}.npz"), spec_of(cfg, n), seeds, cfg.k_values, (0.0,))
        for n in cfg.contexts
    ]
    iwl = spec_of(
        cfg,
        cfg.iwl_context,
        iwl_only=True,
        k_max=max(cfg.iwl_k_values),
        checkpoints=cfg.iwl_checkpoints,
        steps_per_checkpoint=cfg.iwl_steps_per_checkpoint,
    )
    out.append(Grid("nu", os.path.join(workdir, "run_iwl.npz"), iwl, seeds, cfg.iwl_k_values, (0.0,)))
    wd = spec_of(
        cfg,
        cfg.wd_context,
        p_bursty=cfg.wd_p_bursty,
        k_max=max(cfg.wd_k_values),
        checkpoints=cfg.wd_checkpoints,
        steps_per_checkpoint=cfg.wd_steps_per_checkpoint,
    )
    wd_seeds = tuple(seed + i for i in range(cfg.wd_num_seeds))
    out.append(Grid("transience", os.path.join(workdir, "run_wd.npz"), wd, wd_seeds, cfg.wd_k_values, (0.0, cfg.wd)))
    return out


def _inputs(g: Grid):
    cells = [(s, k, w) for s in g.seeds for k in g.k_values for w in g.wds]
    keys = jnp.stack([jax.random.fold_in(jax.random.key(s), k) for s, k, _ in cells])  # paired across N and wd
    return keys, jnp.asarray([k for _, k, _ in cells], jnp.int32), jnp.asarray([w for *_, w in cells], jnp.float32)


def run_grids(todo: list[Grid], cfg: ICLConfig) -> None:
    """Trains every grid in ``todo`` (compiling the next ones on a thread pool while one runs)."""
    lowered = []
    for g in todo:
        fn = jax.jit(
            jax.vmap(functools.partial(model_lib.train, g.spec, model_lib.graphdef(g.spec))),
            compiler_options=compiler_options(cfg),
        )
        lowered.append(fn.lower(*_inputs(g)))
    start = time.time()
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(low.compile) for low in lowered]
        for i, (g, fut) in enumerate(zip(todo, futures, strict=True)):
            compiled = fut.result()
            t0 = time.time()
            out = jax.device_get(compiled(*_inputs(g)))
            if not np.isfinite(out["train_loss_E"]).all():
                raise FloatingPointError(f"NaN/inf training loss in {g.path}: lower icl.lr.")
            lead = (len(g.seeds), len(g.k_values)) + ((len(g.wds),) if len(g.wds) > 1 else ())
            shaped = {name: v.reshape(*lead, *v.shape[1:]) for name, v in out.items()}
            run_s = time.time() - t0
            print(
                f"[icl] {i + 1}/{len(todo)} {os.path.basename(g.path)} (N={g.spec.n}): "
                f"{int(np.prod(lead))} networks x {g.spec.checkpoints * g.spec.steps_per_checkpoint} steps, "
                f"{run_s:.0f} s run, {time.time() - start:.0f} s elapsed",
                flush=True,
            )
            np.savez(
                g.path,
                seeds=np.asarray(g.seeds),
                k_values=np.asarray(g.k_values),
                wds=np.asarray(g.wds),
                seconds=run_s,
                **shaped,
            )


def run_study(seed: int, cfg: ICLConfig, workdir: str, mode: str = "all", command: str = "") -> dict:
    os.makedirs(workdir, exist_ok=True)
    if command:
        with open(os.path.join(workdir, "commands.txt"), "a") as f:
            f.write(command + "\n")
    stages = STAGES if mode in ("all",) else (mode,) if mode in STAGES else ()
    todo = [g for g in grids(seed, cfg, workdir) if g.stage in stages and not os.path.exists(g.path)]
    if todo:
        run_grids(todo, cfg)
    if mode in ("all", "report"):
        from gdc.studies.icl import analysis, report

        try:
            res = analysis.analyze(seed, cfg, workdir)
        except FileNotFoundError as e:
            stage = next((g.stage for g in grids(seed, cfg, workdir) if g.path == e.filename), "all")
            raise StageInputError(f"{e.filename} is missing: run --mode={stage} (or all) first.") from e
        return report.write(res, cfg, workdir)
    return {}
