"""AlphaFold2's training losses and validation metrics (Jumper et al. (2021) Suppl. 1.9).

Every function reads one example (no batch axis): the model's outputs as jaxfold's AlphaFold
module returns them and the ground-truth features under AlphaFold's names
(jaxfold.data.ground_truth). One file per idea.
"""
