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

import numpy as np
import pytest

from jaxfold.model.embedders import pseudo_beta_fn
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


# Issue #20: on a 2-core AMD EPYC the main job failed with exactly these end-to-end figures
# (max|Δ|), every module and teacher-forced figure being within tolerance.
ISSUE_20 = {'representations/pair': 1.44, 'final_atom_positions': 0.306, 'plddt': 0.0230,
            'predicted_aligned_error': 2.46}
# On query73 with the main job's weights, AlphaFold's recycled Cβ distance of residues 32-64
# after iteration 0 lies 2.6e-5 Å below the 10.75 Å edge (measured on a 2-core Intel Xeon),
# where the two models' Cβ positions differ by 2.8e-4 Å.
LOADED_PAIR, LOADED_EDGE = (31, 63), 10.75


@pytest.mark.slow
def test_one_recycled_bin_flip_is_the_failure_of_issue_20(shared_dir, monkeypatch):
  """The main job (full MSA sizes) with AlphaFold's distance of the loaded pair moved 1e-4 Å
  above its edge, as the AMD machine's rounding put one model's: the failure's figures come
  back to three digits, the detector names that pair alone, and the rows are explained."""
  monkeypatch.setenv('JAXFOLD_SHARED', str(shared_dir))
  af_cfg = alphafold_model.alphafold_config('model_1_ptm', 2)
  batch = alphafold_model.query73_features(af_cfg)
  i, j = LOADED_PAIR

  def nudge(iteration, prev):
    if iteration != 1:
      return prev
    cb = np.asarray(pseudo_beta_fn(batch['aatype'][0], prev['prev_pos']), np.float64)
    distance = np.linalg.norm(cb[j] - cb[i])
    assert abs(distance - LOADED_EDGE) < 1e-3, distance
    positions = np.array(prev['prev_pos'], np.float64)
    positions[j] += (LOADED_EDGE + 1e-4 - distance) * (cb[j] - cb[i]) / distance
    return {**prev, 'prev_pos': positions.astype(np.float32)}

  result = alphafold_model.compare('model_1_ptm', num_recycle=2, batch=batch, envelope=False,
                                   nudge=nudge)
  print('\n'.join(result.notes))
  flips = result.details['recycling']['free_running'][0]['flips']
  if not flips:
    pytest.skip('jaxfold put this pair above the edge on this machine too: no flip to study')
  assert [f['residues'] for f in flips] == [list(LOADED_PAIR)]
  measured = {r.name.removeprefix('end to end/'): r for r in result.rows
              if r.name.startswith('end to end/')}
  for name, figure in ISSUE_20.items():
    assert measured[name].max_abs_diff == pytest.approx(figure, rel=5e-3), name
    assert not measured[name].within_tolerance and measured[name].explained_by
  assert result.passed
