"""The whole model at full size against AlphaFold's, end to end and module by module.

Full-size `model_1_ptm` (templates) and `model_3_ptm` (none) on perturbed random weights and
the real query73 features processed by AlphaFold's own pipeline, with two recycling
iterations: every row of `jaxfold.parity.alphafold_model.compare` (the table `jaxfold parity
alphafold` prints) passes: each module, each recycling iteration teacher-forced, and issue
#3's end-to-end figures (representations max|Δ| / max|ref| <= 1e-4, final atom positions
<= 0.01 Å, pLDDT <= 0.01, PAE <= 0.01 Å) unless a recycled-bin flip explains them. The MSA is cut to 32 clusters and 128 extra rows so that the suite stays
fast on a 2-core CPU; `jaxfold parity alphafold` runs the presets' own sizes (512 / 5120).
The bfloat16 run of model_1_ptm is compared with float32 and its drift printed.
"""

import pytest

from jaxfold.parity import alphafold_model
from jaxfold.parity.agreement import format_table

MSA_SIZES = {'max_msa_clusters': 32, 'max_extra_msa': 128}


@pytest.mark.slow
@pytest.mark.parametrize('preset', ['model_1_ptm', 'model_3_ptm'])
def test_full_size_end_to_end(parity, shared_dir, monkeypatch, preset):
  monkeypatch.setenv('JAXFOLD_SHARED', str(shared_dir))
  result = alphafold_model.compare(preset, num_recycle=2, bfloat16=preset == 'model_1_ptm',
                                   **MSA_SIZES)
  print(f'\n{preset}, {result.num_residues} residues, 2 recycling iterations '
        f'(seconds: {result.seconds})\n{format_table(result.rows)}')
  names = {r.name for r in result.rows}
  for required in ('end to end/final_atom_positions', 'end to end/plddt',
                   'teacher-forced/iteration 2/final_atom_positions',
                   'AlphaFold against itself (subbatch 4)/final_atom_positions',
                   'end to end/predicted_aligned_error', 'end to end/ptm',
                   'end to end/representations/pair', 'structure_module/final_atom_positions',
                   'evoformer/evoformer_iteration[47]/msa', 'predicted_aligned_error_head'):
    assert required in names
  assert ('evoformer/template_embedding' in names) == (preset == 'model_1_ptm')
  parity.record(result.rows)
