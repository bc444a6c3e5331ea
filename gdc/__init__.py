"""gdc: Generative Data Cartography.

Records every training example's loss while a model trains (a sharded on-device tracker), derives difficulty and
memorization scores from it, and tests interventions built on those scores.

The engine, in the order data flows through it: ``data`` (sources, canaries, batches) -> ``train`` (config, pure
jitted steps, the loop) -> ``tracker`` (per-example learn/forget events, the rule in ``forgetting``) ->
``checkpoint`` (snapshots) -> ``scoring`` (d, m, quadrants) -> ``interventions`` (prune, down-weight, up-sample)
-> ``evaluation`` (perplexity, extraction, exposure, MIA); ``influence`` and ``theory`` check the paper's claims
against exact influence and leave-one-out. ``studies`` sits above all of them: one package per experiment family,
each driving the engine and writing its report. Nothing in the engine imports a study.
"""
