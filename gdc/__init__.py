"""gdc: Generative Data Cartography.

Records every training example's loss while a model trains (a sharded on-device tracker), derives difficulty and
memorization scores from it, and tests interventions built on those scores.
"""
