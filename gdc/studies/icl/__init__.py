"""ICL kinetics (Nguyen & Reddy, ICLR 2025): when a one-layer transformer learns in context instead of in weights.

``task``: the item-label task, its IWL / ICL probes and the accuracy metric. ``model``: LayerNorm -> attention ->
MLP, vmapped training over (seed, K, weight decay). ``study``: the stages train / nu / transience / report
(``launch.py --mode=all``). ``fits``: K*, acquisition times, power-law exponents with intervals. ``analysis``: K*
per N, nu from IWL-only runs, the K* slope against 1/nu, transience. ``report`` and ``plots``: the outputs.
"""

from collections.abc import Mapping
from typing import Any

MODES = ("all", "train", "nu", "transience", "report")


def run(config: Mapping[str, Any], workdir: str, mode: str = "all", command: str = "") -> dict:
    """Runs the ICL study stages named by ``mode`` in ``workdir`` (finished stages are skipped).

    Args:
      config: ConfigDict (or dict) with ``seed`` and ``icl`` (see ``gdc.studies.icl.config``); validated before compute.
      workdir: output folder (created).
      mode: one of MODES.
      command: the command line, cited in report.md.
    """
    from gdc.studies.icl import config as icl_config
    from gdc.studies.icl import study

    seed, cfg = icl_config.from_mapping(config)
    return study.run_study(seed, cfg, workdir, mode, command)
