"""Memorization in classifiers (issue 8, parts 1-3): MAT, DeMem-style selective penalties with LiRA, and Pepin et
al.'s memorization-and-fairness results.

``mat``: XRM held-out predictions, calibrated p_ho, the logit-shift training and the 1 - p_ho scorer on the paper's
interpretable toy. ``demem`` + ``lira``: a selective loss-floor penalty on high-loss or hotspot examples against
DP-SGD, judged by the loss attack and online LiRA (vmapped shadows). ``fairness`` + ``pepin``: the zero-bias
memorized sets (linear programs), the bounds on their mass and the equalized-odds condition on a synthetic and a
bundled real table; the conditional-probability identities (exact by construction) on memorizing / pruning a
GenDataCarto quadrant. ``demem_robust`` (``robust``, ``adversarial``): the same penalty inside FGSM / PGD / TRADES
adversarial training on digits. ``launch.py --mode=all`` runs the part a config names (configs/mat_toy.py,
configs/demem.py, configs/fairness.py, configs/demem_robust.py); ``--mode=report`` re-renders report.md from the
seeds already run.
"""

from collections.abc import Mapping
from typing import Any

from gdc.errors import ConfigError
from gdc.studies.classify import config as classify_config

MODES = ("all", "report")


def run(config: Mapping[str, Any], workdir: str, mode: str = "all", command: str = "") -> dict:
    """Runs (``all``, resumable per seed) or re-reports (``report``) the part of a classify config.

    Args:
      config: ConfigDict (or dict) with ``seed`` and ``classify`` (see ``gdc.studies.classify.config``).
      workdir: output folder; ``results.json`` and ``report.md`` collect every part run into it.
      mode: "all" or "report" ("report" runs nothing new: it fails if a seed is missing).
      command: the command line, cited in report.md.

    Returns:
      The part's summary (as stored in results.json).
    """
    import os

    from gdc.studies.classify import study

    cfg = classify_config.from_mapping(config)
    if mode == "report":
        part = classify_config.part_of(cfg)
        missing = [s for s in cfg.seeds if not os.path.exists(os.path.join(workdir, part, f"seed_{s}.json"))]
        if missing:
            raise ConfigError(f"--mode=report: seeds {missing} of {part} not run; use --mode=all.")
    return study.run(cfg, workdir, command=command, keep_command=mode == "report")
