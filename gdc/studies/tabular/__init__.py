"""Tabular diffusion family: a DDPM on mixed-type rows trained by the engine, the distance-ratio replica test,
TabCutMix / TabCutMixPlus / DynamicCut, GenDataCarto scores and a sharpness scorer (issue 6).

``run(config, workdir, mode="all")`` runs ``gdc.studies.tabular.study`` for every table in ``tabular.datasets`` and
every seed (resumable, into ``workdir/<table>/seed_S``) and writes ``results.json``, ``report.md`` and PNGs (one set
per table, prefixed by its name) into ``workdir``.
"""

import dataclasses
import os
import time
from collections.abc import Mapping
from typing import Any

import jax

from gdc import jsonio
from gdc.studies.tabular import config as tabular_config

MODES = ("all",)


def run(config: Mapping[str, Any], workdir: str, mode: str = "all", command: str = "") -> dict:
    """Runs the study for every ``tabular.seeds``; returns the aggregated results."""
    del mode  # launch.py has checked it against MODES
    cfg = tabular_config.from_mapping(config)  # validated before anything is built or compiled
    from gdc.studies.tabular import plots, report, sharp_sweep, study

    os.makedirs(workdir, exist_ok=True)
    # Every probe stop and arm compiles the same steps; a persistent cache makes the later compiles cheap.
    if not jax.config.jax_compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", os.path.join(os.path.abspath(workdir), ".jax_cache"))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    start = time.time()
    tables = {}
    for name in cfg.datasets:
        per_seed = [study.run_seed(cfg, seed, workdir, name) for seed in cfg.seeds]
        tables[name] = {"aggregate": report.aggregate(per_seed), "per_seed": per_seed}
        plots.plots(per_seed, workdir, prefix=f"{name}_", seed_root=os.path.join(workdir, name))
        for path in sharp_sweep.plot(per_seed, workdir, dataclasses.asdict(cfg)):  # one spectrum per table
            os.replace(path, os.path.join(workdir, f"{name}_{os.path.basename(path)}"))
    cfg_dict = dataclasses.asdict(cfg)
    results = {
        "command": command,
        "config": cfg_dict,
        "environment": f"jax {jax.__version__}, {jax.device_count()} {jax.devices()[0].platform} device(s)",
        "seconds_this_call": time.time() - start,
        "tables": tables,
    }
    jsonio.write(os.path.join(workdir, "results.json"), results)
    with open(os.path.join(workdir, "report.md"), "w") as f:
        f.write(report.render_all({k: v["per_seed"] for k, v in tables.items()}, cfg_dict, command))
    return results
