"""Evaluators: perplexity, canary extraction and exposure, membership inference, one protocol.

An evaluator is a function ``EvalContext -> dict`` (``common``: the context and the per-example scoring pass they
share); ``EVALUATORS`` names every evaluator a study may ask for and ``evaluate`` runs a list of them.
"""

import functools
from collections.abc import Sequence

from gdc.evaluation import exposure, extraction, mia, perplexity
from gdc.evaluation.common import EvalContext, Evaluator, Result, per_example_losses

EVALUATORS: dict[str, Evaluator] = {
    "perplexity": perplexity.evaluate,
    "extraction": extraction.evaluate,
    "exposure": exposure.evaluate,
    # The inserted canaries only: half the cost, for studies with many arms (never-trained controls sit at ~2 bits
    # whatever the arm; the baseline's are in its exploration run).
    "exposure_inserted": functools.partial(exposure.evaluate, groups=("inserted",)),
    "mia": mia.evaluate,
}


def evaluate(ctx: EvalContext, names: Sequence[str]) -> Result:
    """Runs the named evaluators and merges their results (key collisions raise)."""
    unknown = [n for n in names if n not in EVALUATORS]
    if unknown:
        raise ValueError(f"unknown evaluators {unknown}; known: {sorted(EVALUATORS)}.")
    out: Result = {}
    for name in names:
        result = EVALUATORS[name](ctx)
        clash = out.keys() & result.keys()
        if clash:
            raise ValueError(f"evaluator {name!r} returns keys already returned: {sorted(clash)}.")
        out.update(result)
    return out


__all__ = ["EVALUATORS", "EvalContext", "Evaluator", "evaluate", "per_example_losses"]
