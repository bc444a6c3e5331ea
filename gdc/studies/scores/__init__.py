"""The score benchmark: which per-example score finds what a model memorizes, against counterfactual memorization.

``config``: the ``scores`` section. ``study``: per seed and setting (``lm``: canary character LM, ``mlp``: blobs with
flipped labels) one tracked engine run scored by cartography (m, m over the eps sweep, upward variation, d, final
loss) and the alternatives (EL2N, GraNd, AUM, loss-trace features, a random control), each timed, and K models on
random halves for counterfactual memorization. ``report``: the leaderboard per setting (Spearman with
counterfactual memorization, AUROC for canary copies / flipped labels, precision at the top 1/5/10%, cost in
training runs), pooled over seeds with t-intervals; report.md, results.json and PNGs. ``interventions``: prune /
down-weight by the best score beside m, d and random, retrained and evaluated.
"""

from collections.abc import Mapping
from typing import Any

MODES = ("all", "train", "intervene", "report")


def run(config: Mapping[str, Any], workdir: str, mode: str = "all", command: str = "") -> dict:
    """Runs the benchmark stages named by ``mode`` in ``workdir`` (finished seeds are skipped).

    Args:
      config: ConfigDict (or dict) with ``scores`` (see ``gdc.studies.scores.config``); validated before compute.
      workdir: output folder (created).
      mode: one of MODES: ``train`` (runs, scores and ensembles per seed), ``intervene`` (prune / down-weight
        arms retrained and evaluated), ``report``, or ``all`` (the three).
      command: the command line, cited in report.md.
    """
    from gdc.studies.scores import config as scores_config
    from gdc.studies.scores import study

    cfg = scores_config.from_mapping(config)
    return study.run_study(cfg, workdir, mode, command)
