"""jaxfold: AlphaFold2 in JAX/Flax, trainable and provably equal to AlphaFold and OpenFold."""

__version__ = "0.1.0"
