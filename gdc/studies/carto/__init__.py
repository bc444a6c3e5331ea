"""GenDataCarto, the paper's study: probe, score, intervene, retrain, evaluate, report (``study``, ``report``).

``launch.py --config=configs/X.py --workdir=DIR --mode=M`` runs ``run`` below for every config without a family
section of its own. Modes: ``run`` (one training run), ``all`` (every stage for every ``study.seeds``), or one stage.
"""

import os
from collections.abc import Mapping
from typing import Any

import jax

from gdc import config as parse
from gdc.studies.carto import config as carto_config
from gdc.studies.carto import study
from gdc.train import loop

MODES = ("run", "all", *study.STAGES)


def run(config: Mapping[str, Any], workdir: str, mode: str = "all", command: str = "") -> None:
    """``--mode=run``: one training run in ``workdir``; otherwise the study's stage(s) ``mode`` (``all``: every one).

    ``command`` (the launching command line) is appended to ``commands.txt``, which the report cites, except by
    ``report``: it computes nothing, so re-rendering a report leaves it byte-identical. The caller holds the workdir
    lock for the study modes; ``loop.train`` takes it itself.
    """
    cfg = carto_config.from_mapping(config, device_count=jax.device_count())  # validated before any compute
    parse.check_workdir(workdir)
    if mode == "run":
        result = loop.train(cfg, workdir)
        print(f"done: step {int(result.state.step)}, metrics {result.last_metrics}")
        return
    if command and mode != "report" and jax.process_index() == 0:
        with open(os.path.join(workdir, "commands.txt"), "a") as f:
            f.write(command + "\n")
    study.run(cfg, workdir, mode)
