"""Memorization localization in a self-supervised encoder (Wang et al., NeurIPS 2024) beside GenDataCarto scores.

``metrics``: UnitMem, LayerMem, Delta-LayerMem and the enrichment test (numpy). ``model``: the SimCLR MLP encoder on
digits (Flax NNX, vmapped training). ``study``: the stages train / analyze / report (``launch.py --mode=all``).
"""

from collections.abc import Mapping
from typing import Any

MODES = ("all", "train", "analyze", "report")


def run(config: Mapping[str, Any], workdir: str, mode: str = "all", command: str = "") -> dict:
    """Runs the SSL study stages named by ``mode`` in ``workdir`` (finished stages are skipped).

    Args:
      config: ConfigDict (or dict) with ``seed`` and ``ssl`` (see ``gdc.studies.ssl.config``); validated before compute.
      workdir: output folder (created).
      mode: one of MODES.
      command: the command line, cited in report.md.
    """
    from gdc.studies.ssl import config as ssl_config
    from gdc.studies.ssl import study

    seed, cfg = ssl_config.from_mapping(config)
    return study.run_study(seed, cfg, workdir, mode, command)
