"""Flax modules of the AlphaFold2 monomer network; parameter names and shapes are AlphaFold's."""
