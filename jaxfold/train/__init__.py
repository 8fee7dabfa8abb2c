"""Training: optimizer, train state, train step, validation and the training loop."""
