"""The studies: each drives the engine below it (data, models, train, tracker, scoring, interventions, evaluation,
influence, theory) through one experiment family and writes its report.

Every family is a package with ``MODES`` (the ``--mode`` values it takes) and ``run(config, workdir, mode=...,
command=...)``. A config names its family by holding that family's top-level section (``lm_audit``, ``classify``,
...); a config without one is a GenDataCarto config (``carto``: data, model, train, tracker, checkpoint, log,
study). Nothing below ``gdc/studies`` imports from it.
"""

from collections.abc import Mapping
from types import ModuleType
from typing import Any

from gdc import theory
from gdc.studies import carto, classify, icl, lm_audit, scores, ssl, tabular

# The section a config holds -> the family that runs it.
FAMILIES: dict[str, ModuleType] = {
    "theory": theory,
    "lm_audit": lm_audit,
    "classify": classify,
    "ssl": ssl,
    "icl": icl,
    "tabular": tabular,
    "scores": scores,
}


def family_of(config: Mapping[str, Any]) -> tuple[str, ModuleType]:
    """(name, package) of the family that runs ``config``: the one whose section it holds, else carto."""
    name = next((name for name in FAMILIES if name in config), None)
    return ("carto", carto) if name is None else (name, FAMILIES[name])
