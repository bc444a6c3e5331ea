"""Training: state, the pure step, and the loop."""
