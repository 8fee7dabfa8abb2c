"""Self-distillation sets (Jumper et al. (2021) Suppl. 1.3): `jaxfold data build --structures-dir
--distillation` on the real 2q2k alignment folders of ../shared/data, with "predicted" PDB files
written by jaxfold's PDB writer from the 2q2k mmCIF chains (unresolved residues filled in) and
pLDDTs set here: OpenFold's pLDDT mask on the ground truth, resolution 0, and `is_distillation`
with resolution 0 from a distillation source's processing."""

import numpy as np
import pytest

from jaxfold import cli
from jaxfold.common import protein
from jaxfold.common import residue_constants as rc
from jaxfold.data import dataset_builder, mmcif, openproteinset, processing, training_set
from jaxfold.model.config import preset

_CHAINS = ('2q2k_A', '2q2k_B')
# Structure file names: `<chain>.pdb`, and what `jaxfold predict --name <chain>` writes.
_FILE_NAMES = {'2q2k_A': '2q2k_A.pdb', '2q2k_B': '2q2k_B_unrelaxed.pdb'}
# Residues (0-based) given special pLDDTs; every other resolved residue has 90, every
# unresolved one 30.
_LOW = (30, 31, 45)  # pLDDT 40: masked
_AT_THRESHOLD = 50  # pLDDT exactly 50: masked (OpenFold keeps pLDDT > 50)
_ONE_ATOM_ABOVE = 40  # CA at 60, the other atoms at 40: kept (any atom above 50 suffices)


@pytest.fixture(scope='module')
def data(shared_dir):
  return shared_dir / 'data'


def _predicted(chain: mmcif.MmcifChain) -> tuple[protein.Protein, np.ndarray]:
  """A full-length "prediction" of the chain (its mmCIF coordinates, unresolved residues
  filled with placeholder atoms far away, pLDDTs as the module constants say) and the atom
  mask OpenFold's rule leaves, written out residue by residue."""
  aatype = np.array([rc.restype_order_with_x[c] for c in chain.sequence])
  resolved = chain.atom_mask.any(axis=-1)
  positions = chain.atom_positions.astype(np.float64).copy()
  mask = chain.atom_mask.astype(np.float64).copy()
  for i in np.flatnonzero(~resolved):
    atoms = np.flatnonzero(rc.STANDARD_ATOM_MASK[aatype[i]])
    angles = np.arange(len(atoms))
    positions[i, atoms] = np.stack([100 + 3.8 * i + 0.3 * angles, np.cos(angles),
                                    np.sin(angles)], axis=-1)
    mask[i, atoms] = 1
  plddt = np.where(resolved, 90.0, 30.0)
  plddt[list(_LOW)] = 40.0
  plddt[_AT_THRESHOLD] = 50.0
  b_factors = np.repeat(plddt[:, None], rc.atom_type_num, axis=1)
  b_factors[_ONE_ATOM_ABOVE] = 40.0
  b_factors[_ONE_ATOM_ABOVE, rc.atom_order['CA']] = 60.0
  assert resolved[[*_LOW, _AT_THRESHOLD, _ONE_ATOM_ABOVE]].all()
  prot = protein.Protein(atom_positions=positions, aatype=aatype, atom_mask=mask,
                         residue_index=np.arange(1, len(aatype) + 1),
                         chain_index=np.zeros(len(aatype), int), b_factors=b_factors * mask)
  keep = resolved.copy()  # unresolved residues (pLDDT 30) go
  keep[[*_LOW, _AT_THRESHOLD]] = False
  return prot, mask * keep[:, None]


@pytest.fixture(scope='module')
def predictions(data, tmp_path_factory):
  """(structures folder, chain -> (the Protein written there, its expected masked atoms))."""
  folder = tmp_path_factory.mktemp('structures')
  chains = mmcif.read(data / 'mmcif' / '2q2k.cif').chains
  written = {}
  for chain_id in _CHAINS:
    written[chain_id] = _predicted(chains[chain_id[-1]])
    (folder / _FILE_NAMES[chain_id]).write_text(protein.to_pdb(written[chain_id][0]))
  return folder, written


@pytest.fixture(scope='module')
def built(data, predictions, tmp_path_factory):
  """`jaxfold data build --structures-dir --distillation` of the two 2q2k chains (no mmCIF
  folder: no templates); the built split's examples by chain."""
  output = tmp_path_factory.mktemp('distillation_set')
  chains = output / 'chains.txt'
  chains.write_text('\n'.join(_CHAINS) + '\n')
  assert cli.main(['--quiet', 'data', 'build', '--alignments', str(data / 'alignments'),
                   '--structures-dir', str(predictions[0]), '--distillation', '--chains',
                   str(chains), '--output', str(output)]) == 0
  dataset_dir = output / 'chain_features' / '1.0.0'
  summary = dataset_builder.BuildSummary.load(dataset_dir)
  assert summary.num_examples == {'train': 2} and summary.num_failed == 0
  source = dataset_builder.load_data_source(dataset_dir)
  return dataset_dir, {x['domain_name'][0].decode(): x for x in source}


def test_reading_a_prediction_masks_residues_of_plddt_at_most_50(predictions):
  folder, written = predictions
  path = folder / _FILE_NAMES['2q2k_A']
  masked = openproteinset.read_predicted_structure(
      path, openproteinset.DISTILLATION_PLDDT_THRESHOLD)
  np.testing.assert_array_equal(masked.atom_mask, written['2q2k_A'][1])
  assert openproteinset.DISTILLATION_PLDDT_THRESHOLD == 50.0
  # 25 unresolved residues, 3 low, 1 at the threshold lose their atoms.
  assert (~masked.atom_mask.any(-1)).sum() == 25 + 3 + 1
  unmasked = openproteinset.read_predicted_structure(path)
  np.testing.assert_array_equal(unmasked.atom_mask, written['2q2k_A'][0].atom_mask)


def test_distillation_set_has_plddt_masked_ground_truth_and_resolution_0(built, predictions):
  _, examples = built
  _, written = predictions
  assert sorted(examples) == list(_CHAINS)
  for chain_id, example in examples.items():
    prot, mask = written[chain_id]
    np.testing.assert_array_equal(example['all_atom_mask'], mask, err_msg=chain_id)
    kept = mask.astype(bool)
    np.testing.assert_allclose(example['all_atom_positions'][kept], prot.atom_positions[kept],
                               atol=1e-3)  # PDB coordinates have 3 decimals
    assert example['resolution'] == 0.0 and example['resolution'].dtype == np.float32
    np.testing.assert_array_equal(np.argmax(example['aatype'], -1), prot.aatype)
    # The labels derived from the mask drop the same residues.
    np.testing.assert_array_equal(example['pseudo_beta_mask'], mask.any(-1))
    assert not example['atom14_gt_exists'][~mask.any(-1)].any()
    assert example['msa'].shape[1] == len(prot.aatype) == 70


def test_processing_a_distillation_source_sets_the_flag_and_resolution_0(built, predictions):
  _, examples = built
  _, written = predictions
  data_config = preset('model_1_ptm').data
  crop = processing.TrainingDataConfig(crop_size=80, max_msa_clusters=8, max_extra_msa=8)
  # A resolution that is not 0, to see the distillation source replace it.
  example = {**examples['2q2k_A'], 'resolution': np.float32(2.5)}
  rng = np.random.default_rng(0)
  for distillation, flag, resolution in ((True, 1.0, 0.0), (False, 0.0, 2.5)):
    process = training_set._Process(data_config, crop, num_recycle=0, distillation=distillation)
    batch = process(example, rng)
    assert batch['is_distillation'].tolist() == [flag]
    assert batch['resolution'].tolist() == [resolution]
    num_res = int(batch['seq_length'][0])
    kept = batch['residue_index'][0, :num_res]
    assert num_res == 70  # the crop keeps every residue; rows past 70 are padding
    np.testing.assert_array_equal(batch['all_atom_mask'][0, :num_res],
                                  written['2q2k_A'][1][kept])


def _build_one(data, structures, output):
  chains = output.parent / 'one_chain.txt'
  chains.write_text('2q2k_A\n')
  return cli.main(['--quiet', 'data', 'build', '--alignments', str(data / 'alignments'),
                   '--structures-dir', str(structures), '--distillation', '--chains', str(chains),
                   '--output', str(output)])


@pytest.mark.parametrize('problem', ['missing', 'other_sequence', 'unreadable'])
def test_bad_structures_fail_with_one_line_naming_the_file(data, predictions, tmp_path, capsys,
                                                           problem):
  structures = tmp_path / 'structures'
  structures.mkdir()
  path = structures / '2q2k_A.pdb'
  prot = predictions[1]['2q2k_A'][0]
  if problem == 'other_sequence':  # the first residue dropped
    path.write_text(protein.to_pdb(protein.Protein(
        **{field: getattr(prot, field)[1:] for field in ('atom_positions', 'aatype', 'atom_mask',
                                                         'residue_index', 'chain_index',
                                                         'b_factors')})))
  elif problem == 'unreadable':
    path.write_text('this is not a PDB file\n')
  status = _build_one(data, structures, tmp_path / 'out')
  # TFDS's progress bars share stderr; the error is its last line, and the only one.
  before, _, err = capsys.readouterr().err.strip().rpartition('jaxfold: error: ')
  assert status == 2 and 'error' not in before and '\n' not in err, before + err
  assert err.startswith("split 'train': all 1 chains failed, e.g. 2q2k_A: ")
  assert str(path) in err
  assert {'missing': f'no structure file {path} (nor 2q2k_A_unrelaxed.pdb)',
          'other_sequence': 'its sequence (69 residues) is not the query of '
                            '2q2k_A/uniref90_hits.sto (70 residues); they differ at residue 1',
          'unreadable': 'not a readable PDB structure'}[problem] in err


def test_distillation_needs_predicted_structures(data, tmp_path, capsys):
  status = cli.main(['data', 'build', '--alignments', str(data / 'alignments'), '--mmcif-dir',
                     str(data / 'mmcif'), '--distillation', '--output', str(tmp_path / 'out')])
  assert status == 2
  assert capsys.readouterr().err.strip() == ('jaxfold: error: --distillation builds from '
                                             'predicted structures: pass --structures-dir')
  assert not (tmp_path / 'out').exists()
