"""Data pipeline: parsers, features, transforms and datasets (numpy only)."""
