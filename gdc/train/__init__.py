"""Training: state, the pure step, a run's setup, its input paths and the loop."""
