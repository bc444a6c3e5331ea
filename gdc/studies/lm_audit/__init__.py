"""Language-model extraction and probing audit (issues 7 and 21): Freeman-style extraction protocol, MemHunter's
prompt inducer and dataset-level membership test, Slonski-style activation probes with direction ablation, each tied
to GenDataCarto quadrants of the target run.

Modules: ``teacher_forcing`` (teacher-forced NLL and hidden states; greedy continuation is the engine's
``gdc.evaluation.extraction.greedy_decode``), ``metrics`` (longest common substring, against a row or a whole
corpus, ROUGE-L, exact match, bootstrap gaps, Wilson and t intervals), ``freeman`` (prompt templates, continuations
scored on the aligned continuation and the whole source), ``inducer`` (the prompt inducer and its rejection-sampling
loop), ``hunt`` (the inducer against the target beside a never-fine-tuned control), ``memhunter`` (one-sided
Mann-Whitney / Welch test, power, false positives), ``probes`` (counterfactual token labels, cross-canary per-layer
probes, probe direction), ``ablation`` (directions fitted on part of the canaries, measured on the rest, compared at
matched perplexity), ``study`` (per-seed train / evaluate), ``report`` (aggregation over seeds, results.json),
``render`` / ``render_sections`` (report.md) and ``plots`` (its PNGs).

``launch.py --config=configs/lm_audit.py --workdir=DIR --mode=all`` runs ``run`` below. Modes: ``all`` (train,
evaluate, report), ``train``, ``evaluate`` (trains what is missing first), ``report``. Finished stages are skipped.
"""

import os
from collections.abc import Mapping
from typing import Any

from gdc.studies.lm_audit import config as audit_config

MODES = ("all", "train", "evaluate", "report")


def run(config: Mapping[str, Any], workdir: str, mode: str = "all", command: str = "") -> dict:
    """Runs the study of an ``lm_audit`` config in ``workdir``; returns the aggregated results (modes all/report)."""
    cfg = audit_config.from_mapping(config)  # validated before any compute
    from gdc.studies.lm_audit import report, study  # heavy imports after validation

    os.makedirs(workdir, exist_ok=True)
    per_seed = []
    for seed in cfg.seeds:
        sdir = os.path.join(workdir, f"seed_{seed}")
        if mode in ("all", "train", "evaluate"):
            study.train_seed(cfg, seed, sdir)
        if mode in ("all", "evaluate"):
            per_seed.append(study.evaluate_seed(cfg, seed, sdir))
    if mode in ("all", "report"):
        return report.write(cfg, workdir, command=command)
    return {"seeds": per_seed}
