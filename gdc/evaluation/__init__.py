"""Evaluators: perplexity, canary extraction and exposure, membership inference; one protocol (``common``).

``common`` is imported first: it defines the protocol the evaluator modules import, then builds
``EVALUATORS``.
"""

from gdc.evaluation.common import EVALUATORS, EvalContext, Evaluator, evaluate, per_example_losses

__all__ = ["EVALUATORS", "EvalContext", "Evaluator", "evaluate", "per_example_losses"]
