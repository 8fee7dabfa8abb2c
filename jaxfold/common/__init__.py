"""Facts and data types shared by every layer (DESIGN.md 'common/').

residue_constants: residue/atom alphabets, idealised geometry and the derived per-residue-type
tables, under AlphaFold's names (numpy only). protein: the `Protein` record and its PDB /
mmCIF I/O (numpy + Biopython). geometry: rigid transforms in JAX. errors: `JaxfoldError`, the
one error type of bad input. atomic_file: files written whole or not at all.
"""
