"""jaxfold against the recorded runs of the real OpenFold code (shared/fixtures/openfold).

The weights are regenerated from the manifests' names by the fixtures' rule and converted by
jaxfold's OpenFold table; the inputs are OpenFold's own processed batches. Every recorded
module output is compared with the module fed its recorded inputs, and the whole model end
to end (jaxfold.parity.openfold_fixture). The tables are printed in the parity summary.
"""

import json

import numpy as np
import pytest

from jaxfold.convert.schema import parameter_shapes
from jaxfold.model.alphafold import feature_shapes
from jaxfold.parity import openfold_fixture, openfold_live
from jaxfold.parity.agreement import format_table

FULL = 'fixtures/openfold/model_1_ptm_full'
SMALL = 'fixtures/openfold/small'

def _report(result: openfold_fixture.Comparison) -> None:
  print(f'\n{result.reference}: {result.preset}, {result.num_residues} residues, '
        f'{result.num_recycle} recycling iterations, seconds {result.seconds}')
  print(format_table(result.rows))


def test_batch_is_openfolds_inputs_in_alphafold_layout(shared_dir):
  fixture = openfold_fixture.load_fixture(shared_dir / FULL)
  config = openfold_fixture.fixture_config(fixture.manifest).model
  batch = openfold_fixture.batch_from_openfold(fixture.inputs, config)
  expected = feature_shapes(config, num_res=48, num_seq=16, num_extra=32, num_templates=2,
                            num_slices=2, template_torsions=True)
  assert {k: (v.shape, v.dtype) for k, v in batch.items()} == {
      k: (s.shape, s.dtype) for k, s in expected.items()}
  # Recycling iteration r is OpenFold's last-axis slice r; the MSA is resampled per iteration.
  for r in range(2):
    np.testing.assert_array_equal(batch['msa_feat'][r], fixture.inputs['msa_feat'][..., r])
    np.testing.assert_array_equal(batch['extra_msa'][r], fixture.inputs['extra_msa'][..., r])
    np.testing.assert_array_equal(batch['template_all_atom_masks'][r],
                                  fixture.inputs['template_all_atom_mask'][..., r])
    np.testing.assert_array_equal(batch['template_torsion_angles_sin_cos'][r],
                                  fixture.inputs['template_torsion_angles_sin_cos'][..., r])
  assert not np.array_equal(batch['msa_feat'][0], batch['msa_feat'][1])


def test_template_torsion_angles_agree_with_openfolds_features(shared_dir, parity):
  fixture = openfold_fixture.load_fixture(shared_dir / FULL)
  config = openfold_fixture.fixture_config(fixture.manifest).model
  batch = openfold_fixture.batch_from_openfold(fixture.inputs, config)
  parity.record(openfold_fixture.torsion_rows(fixture, batch))


def test_full_config_has_the_manifests_parameter_count(shared_dir):
  fixture = openfold_fixture.load_fixture(shared_dir / FULL)
  config = openfold_fixture.fixture_config(fixture.manifest).model
  count = sum(int(np.prod(s)) for s in parameter_shapes(config).values())
  manifest_count = sum(int(np.prod(e['shape'])) for e in fixture.manifest['state_dict'])
  assert count == manifest_count == 93_237_338
  assert config.num_recycle == 1


def test_small_config_has_the_manifests_parameters(shared_dir):
  # OpenFold keeps its per-head attention widths when c_t, c_m and c_e shrink; the config
  # states them (and the template channel) so that every shape is the manifest's.
  fixture = openfold_fixture.load_fixture(shared_dir / SMALL)
  config = openfold_fixture.fixture_config(fixture.manifest, 'small/manifest.json').model
  count = sum(int(np.prod(s)) for s in parameter_shapes(config).values())
  assert count == sum(int(np.prod(e['shape'])) for e in fixture.manifest['state_dict'])
  assert len(parameter_shapes(config)) < len(fixture.manifest['state_dict'])  # stacked blocks


def test_small_set_every_recorded_output(shared_dir, parity):
  result = openfold_fixture.compare(shared_dir / SMALL)
  _report(result)
  parity.record(result.rows)


@pytest.mark.slow
def test_full_model_1_ptm_every_recorded_output(shared_dir, parity):
  result = openfold_fixture.compare(shared_dir / FULL)
  _report(result)
  names = {r.name for r in result.rows}
  for expected in ('iter0/evoformer.blocks.47 (blocks 24-47 fed block 23)[1]',
                   'iter0/structure_module/frames/quaternion', 'iter0/structure_module/states',
                   'end to end/final_atom_positions', 'end to end/ptm_score',
                   'final/plddt (from final logits)'):
    assert expected in names
  parity.record(result.rows)


def test_missing_fixture_file_is_named(tmp_path):
  (tmp_path / 'manifest.json').write_text(json.dumps({'state_dict': []}))
  with pytest.raises(openfold_fixture.FixtureError, match='missing inputs.npz, outputs.npz'):
    openfold_fixture.load_fixture(tmp_path)


def test_unknown_config_change_is_named():
  manifest = {'preset': 'model_1_ptm', 'config_changes': {'model.heads.foo': 1},
              'state_dict': []}
  with pytest.raises(openfold_fixture.UnsupportedFixtureConfig,
                     match=r'x/manifest.json: config change model.heads.foo=1'):
    openfold_fixture.fixture_config(manifest, 'x/manifest.json')


def test_cli_names_a_fixture_it_cannot_run(shared_dir, tmp_path, capsys):
  from jaxfold import cli  # pylint: disable=import-outside-toplevel
  assert cli.main(['--quiet', 'parity', 'openfold', '--fixture', str(tmp_path)]) == 2
  assert f'jaxfold: error: {tmp_path}: not an OpenFold fixture directory' in capsys.readouterr().err
  # A recorded run whose OpenFold configuration jaxfold cannot state.
  fixture = tmp_path / 'unstated'
  fixture.mkdir()
  manifest = json.loads((shared_dir / SMALL / 'manifest.json').read_text())
  manifest['config_changes']['model.heads.lddt.no_bins'] = 64
  (fixture / 'manifest.json').write_text(json.dumps(manifest))
  for name in ('inputs.npz', 'outputs.npz'):
    (fixture / name).symlink_to(shared_dir / SMALL / name)
  assert cli.main(['--quiet', 'parity', 'openfold', '--fixture', str(fixture)]) == 2
  error = capsys.readouterr().err.strip()
  assert error.startswith('jaxfold: error: ') and 'model.heads.lddt.no_bins=64' in error
  assert '\n' not in error


@pytest.mark.skipif(openfold_live.available(), reason='openfold is importable here')
def test_live_without_openfold_is_one_clear_line(shared_dir, capsys):
  from jaxfold import cli  # pylint: disable=import-outside-toplevel
  assert cli.main(['--quiet', 'parity', 'openfold', '--live', '--fixture',
                   str(shared_dir / SMALL)]) == 2
  error = capsys.readouterr().err
  assert error.startswith('jaxfold: error: the openfold package is not importable (')
  assert len(error.splitlines()) == 1
