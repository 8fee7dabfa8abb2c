"""Studying how a model learns: measures of predicted structures over a training run."""
