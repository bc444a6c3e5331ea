"""Multi-stage pipelines on the engine; ``study``: probe, score, intervene, retrain, evaluate, report."""
