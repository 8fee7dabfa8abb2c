"""Layer-by-layer comparison of jaxfold against the reference implementations."""
