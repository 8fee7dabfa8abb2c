"""Every loss term against AlphaFold's own loss code on a real training example.

jaxfold's model (perturbed random weights converted from AlphaFold's Haiku tree, one
iteration, deterministic) runs once on the processed training crop of 2q2k chain A (64
residues); on its outputs and that batch, jaxfold's loss breakdown and AlphaFold's head
`.loss` methods, `StructureModule.loss` and the weighted total as `AlphaFoldIteration` sums it
agree within 1e-5 relative (`jaxfold.parity.alphafold_loss`). Fast tier: a reduced model
(fewer blocks, every channel), plus a check that the comparison fails where AlphaFold's code
is handed different outputs. Slow tier: the full-size model_1_ptm.
"""

import json
import time

import jax
import numpy as np
import pytest

from jaxfold.parity import alphafold_loss
from jaxfold.parity.agreement import format_table

# Terms the fine-tuning loss of a pTM model must have, each compared.
TERMS = ('fape', 'backbone_fape', 'sidechain_fape', 'supervised_chi', 'chi', 'angle_norm',
         'violation', 'structure_module', 'distogram', 'masked_msa', 'plddt',
         'experimentally_resolved', 'aligned_error', 'total')


@pytest.fixture
def restore_matmul_precision():
  before = jax.config.jax_default_matmul_precision
  yield
  jax.config.update('jax_default_matmul_precision', before)


def _check(parity, rows):
  print('\n' + format_table(rows))
  names = {r.name for r in rows}
  assert {f'losses/{t}' for t in TERMS} <= names, sorted(names)
  by_name = {r.name: r for r in rows}
  for term in TERMS:  # every term is exercised: AlphaFold's value is not zero
    assert by_name[f'losses/{term}'].max_abs_ref > 0, term
  parity.record(rows)


def test_reduced_model_every_term_equals_alphafold(shared_dir, parity, restore_matmul_precision):
  start = time.perf_counter()
  inputs = alphafold_loss.loss_inputs(shared_dir, 'model_1_ptm', reduced=True)
  rows, _ = alphafold_loss.loss_rows(inputs)
  print(f'\nreduced model_1_ptm, {inputs.example["aatype"].shape[0]} residues, '
        f'{time.perf_counter() - start:.0f} s')
  _check(parity, rows)

  # The comparison can fail: AlphaFold's code handed distogram logits scaled by 1.01 disagrees
  # on the distogram term and the total, and on nothing else.
  outputs = dict(inputs.outputs)
  outputs['distogram'] = {**outputs['distogram'],
                          'logits': np.asarray(outputs['distogram']['logits']) * 1.01}
  changed, _ = alphafold_loss.loss_rows(inputs, alphafold_outputs=outputs)
  assert {r.name for r in changed if not r.passed} == {'losses/distogram', 'losses/total'}


@pytest.mark.slow
def test_full_model_1_ptm_every_term_equals_alphafold(shared_dir, parity,
                                                      restore_matmul_precision):
  result = alphafold_loss.compare_losses(shared_dir, 'model_1_ptm', progress=print)
  print(f'\n{result.reference}: {result.preset}, {result.num_residues} residues, '
        f'seconds {({k: round(v, 1) for k, v in result.seconds.items()})}')
  _check(parity, result.rows)
  assert result.passed


@pytest.mark.slow
def test_parity_alphafold_losses_command(tmp_path, capsys):
  """`jaxfold parity alphafold --losses`: the full-size table and its report."""
  from jaxfold import cli  # pylint: disable=import-outside-toplevel
  report = tmp_path / 'losses.json'
  status = cli.main(['--quiet', 'parity', 'alphafold', '--losses', '--report', str(report)])
  out = capsys.readouterr().out
  print(out)
  assert status == 0, out
  assert out.startswith('jaxfold vs AlphaFold loss code (live): model_1_ptm, 64 residues')
  document = json.loads(report.read_text())
  assert document['passed'] and {'ours', 'reference'} <= document['rows'][0].keys()
