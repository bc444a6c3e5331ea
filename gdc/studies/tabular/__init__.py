"""Tabular diffusion family: a DDPM on mixed-type rows trained by the engine, the distance-ratio replica test,
TabCutMix / TabCutMixPlus / DynamicCut, GenDataCarto scores and a sharpness scorer (issue 6).

``run(config, workdir, mode="all")`` runs ``gdc.studies.tabular.study`` for every seed (resumable) and writes
``results.json``, ``report.md`` and PNGs into ``workdir``.
"""

import dataclasses
import os
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
    from gdc.studies.tabular import report, study

    os.makedirs(workdir, exist_ok=True)
    per_seed = []
    for seed in cfg.seeds:
        per_seed.append(study.run_seed(cfg, seed, workdir))
    cfg_dict = dataclasses.asdict(cfg)
    results = {
        "command": command,
        "config": cfg_dict,
        "environment": f"jax {jax.__version__}, {jax.device_count()} {jax.devices()[0].platform} device(s)",
        "aggregate": report.aggregate(per_seed),
        "per_seed": per_seed,
    }
    jsonio.write(os.path.join(workdir, "results.json"), results)
    report.plots(per_seed, workdir, cfg_dict)
    with open(os.path.join(workdir, "report.md"), "w") as f:
        f.write(report.render(per_seed, cfg_dict, command))
    return results
