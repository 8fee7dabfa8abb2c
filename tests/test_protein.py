"""jaxfold.common.protein: PDB / mmCIF round trips on real files, and equality with AlphaFold."""

import dataclasses
import io
import pathlib

import numpy as np
import pytest
from Bio.PDB import MMCIFParser

from jaxfold.common import protein
from jaxfold.common import residue_constants as rc

_PDB_FILES = ['101m.pdb', 'glucagon.pdb', '2rbg.pdb']


@pytest.fixture(scope='module')
def pdb_dir(shared_dir):
  return shared_dir / 'data' / 'pdb'


def _read(pdb_dir: pathlib.Path, name: str) -> str:
  path = pdb_dir / name
  if not path.exists():
    pytest.skip(f'{path} not present')
  return path.read_text()


def _fields(prot: protein.Protein) -> dict[str, np.ndarray]:
  return {f.name: getattr(prot, f.name) for f in dataclasses.fields(prot)}


def _assert_same_protein(ours: protein.Protein, theirs, atol: float = 0.0) -> None:
  for name, value in _fields(ours).items():
    np.testing.assert_allclose(value, getattr(theirs, name), atol=atol, rtol=0, err_msg=name)


def _prediction_like(num_res: int = 12, seed: int = 0) -> protein.Protein:
  """A two-chain protein with every standard residue type, ideal masks and pLDDT B-factors."""
  rng = np.random.default_rng(seed)
  aatype = np.arange(num_res) % 21
  mask = rc.STANDARD_ATOM_MASK[aatype].astype(np.float32)
  mask[aatype == rc.unk_restype_index, :3] = 1.0  # UNK with a backbone
  plddt = rng.uniform(0, 100, num_res)
  return protein.Protein(
      atom_positions=rng.normal(scale=30.0, size=(num_res, 37, 3)) * mask[..., None],
      aatype=aatype, atom_mask=mask,
      residue_index=np.arange(num_res) + 1,
      chain_index=(np.arange(num_res) >= num_res // 2).astype(np.int32),
      b_factors=np.repeat(plddt[:, None], 37, axis=1) * mask)


@pytest.mark.parametrize('name', _PDB_FILES)
def test_pdb_round_trip_preserves_structure(pdb_dir, name):
  prot = protein.from_pdb_string(_read(pdb_dir, name))
  assert prot.atom_positions.shape == (len(prot.aatype), 37, 3)
  again = protein.from_pdb_string(protein.to_pdb(prot))
  np.testing.assert_allclose(again.atom_positions, prot.atom_positions, atol=1e-3, rtol=0)
  np.testing.assert_allclose(again.b_factors, prot.b_factors, atol=5e-3, rtol=0)
  for field in ('aatype', 'atom_mask', 'residue_index', 'chain_index'):
    np.testing.assert_array_equal(getattr(again, field), getattr(prot, field), err_msg=field)


def test_glucagon_content(pdb_dir):
  prot = protein.from_pdb_string(_read(pdb_dir, 'glucagon.pdb'))
  sequence = ''.join(rc.restypes_with_x[a] for a in prot.aatype)
  assert sequence == 'HSQGTFTSDYSKYLDSRRAQDFVQWLMNT'
  assert prot.residue_index[0] == 1 and set(prot.chain_index) == {0}


def test_chain_selection(pdb_dir):
  both = protein.from_pdb_string(_read(pdb_dir, '2rbg.pdb'))
  chain_b = protein.from_pdb_string(_read(pdb_dir, '2rbg.pdb'), chain_id='B')
  assert set(both.chain_index) == {0, 1}
  np.testing.assert_array_equal(chain_b.atom_positions, both.atom_positions[both.chain_index == 1])


@pytest.mark.parametrize('text,message', [
    ('', 'could not parse it: Empty file'),
    ('this is not a PDB file\n', 'expected exactly one model, found 0'),
    ('HETATM    1 FE   HEM A   1       0.000   0.000   0.000  1.00  0.00          FE\n',
     'no residue has any of the 37 standard heavy atoms'),
    ('ATOM      1  CA  ALA A   1A      0.000   0.000   0.000  1.00  0.00           C\n',
     "insertion code 'A' at chain A residue 1"),
])
def test_bad_input_raises_one_clear_error(text, message):
  with pytest.raises(ValueError, match=message):
    protein.from_pdb_string(text)


def test_missing_chain_and_bad_fields_raise(pdb_dir):
  with pytest.raises(ValueError, match="no chain 'Q'"):
    protein.from_pdb_string(_read(pdb_dir, 'glucagon.pdb'), chain_id='Q')
  prot = _prediction_like()
  with pytest.raises(ValueError, match='Protein.atom_mask has shape'):
    dataclasses.replace(prot, atom_mask=prot.atom_mask[:, :14])
  with pytest.raises(ValueError, match='outside 0..20'):
    protein.to_pdb(dataclasses.replace(prot, aatype=prot.aatype + 20))


def test_pdb_records_chains_and_b_factors():
  prot = _prediction_like()
  lines = protein.to_pdb(prot).splitlines()
  assert lines[0].rstrip() == 'MODEL     1' and [l.rstrip() for l in lines[-2:]] == ['ENDMDL', 'END']
  assert all(len(line) == 80 for line in lines)
  assert sum(line.startswith('TER') for line in lines) == 2
  atoms = [line for line in lines if line.startswith('ATOM')]
  assert {line[21] for line in atoms} == {'A', 'B'}
  assert len(atoms) == int(prot.atom_mask.sum())
  # Every atom of a residue carries that residue's pLDDT.
  for line in atoms:
    residue = int(line[22:26]) - 1
    assert float(line[60:66]) == pytest.approx(prot.b_factors[residue, 0], abs=5e-3)


def test_mmcif_parsed_back_by_biopython():
  prot = _prediction_like()
  text = protein.to_mmcif(prot, file_id='test')
  structure = MMCIFParser(QUIET=True).get_structure('x', io.StringIO(text))
  atoms = list(structure.get_atoms())
  assert len(atoms) == int(prot.atom_mask.sum())
  assert [c.id for c in structure[0]] == ['A', 'B']
  expected = {}
  for i in range(len(prot.aatype)):
    for slot in np.flatnonzero(prot.atom_mask[i]):
      expected[(protein.PDB_CHAIN_IDS[prot.chain_index[i]], int(prot.residue_index[i]),
                rc.atom_types[slot])] = (prot.atom_positions[i, slot], prot.b_factors[i, slot])
  for atom in atoms:
    residue = atom.get_parent()
    position, b_factor = expected[(residue.get_parent().id, residue.id[1], atom.get_id())]
    np.testing.assert_allclose(atom.coord, position, atol=1e-3)
    assert atom.bfactor == pytest.approx(b_factor, abs=5e-3)
  back = protein.from_mmcif_string(text)
  np.testing.assert_allclose(back.atom_positions, prot.atom_positions, atol=1e-3)
  np.testing.assert_array_equal(back.aatype, prot.aatype)


def test_mmcif_of_real_file_round_trips(pdb_dir):
  prot = protein.from_pdb_string(_read(pdb_dir, '101m.pdb'))
  back = protein.from_mmcif_string(protein.to_mmcif(prot))
  _assert_same_protein(back, prot, atol=5e-3)


def test_from_prediction_and_ideal_mask():
  prot = _prediction_like()
  plddt = prot.b_factors[:, 1]
  features = {'aatype': prot.aatype[None], 'residue_index': prot.residue_index[None] - 1}
  result = {'structure_module': {'final_atom_positions': prot.atom_positions,
                                 'final_atom_mask': prot.atom_mask}}
  built = protein.from_prediction(features, result, b_factors=plddt)
  np.testing.assert_array_equal(built.b_factors, np.repeat(plddt[:, None], 37, axis=1))
  np.testing.assert_array_equal(built.residue_index, prot.residue_index)
  assert not built.chain_index.any()
  np.testing.assert_array_equal(protein.ideal_atom_mask(prot), rc.STANDARD_ATOM_MASK[prot.aatype])


# ---- Equality with AlphaFold's protein module. -----------------------------------------------

def _alphafold_protein():
  pytest.importorskip('alphafold')
  from alphafold.common import protein as af_protein
  return af_protein


def _as_alphafold(prot: protein.Protein):
  return _alphafold_protein().Protein(**_fields(prot))


@pytest.mark.parametrize('name', _PDB_FILES)
def test_parse_and_write_equal_alphafold(pdb_dir, name):
  af_protein = _alphafold_protein()
  text = _read(pdb_dir, name)
  ours, theirs = protein.from_pdb_string(text), af_protein.from_pdb_string(text)
  _assert_same_protein(ours, theirs)
  assert protein.to_pdb(ours).splitlines() == af_protein.to_pdb(theirs).splitlines()


def test_prediction_pdb_equals_alphafold_line_for_line():
  af_protein = _alphafold_protein()
  prot = _prediction_like(num_res=30, seed=3)
  ours, theirs = protein.to_pdb(prot), af_protein.to_pdb(_as_alphafold(prot))
  assert ours.splitlines() == theirs.splitlines()
  assert ours == theirs


def test_from_prediction_equals_alphafold():
  af_protein = _alphafold_protein()
  prot = _prediction_like()
  features = {'aatype': prot.aatype[None], 'residue_index': prot.residue_index[None],
              'asym_id': prot.chain_index[None]}
  result = {'structure_module': {'final_atom_positions': prot.atom_positions,
                                 'final_atom_mask': prot.atom_mask}}
  _assert_same_protein(protein.from_prediction(features, result, prot.b_factors),
                       af_protein.from_prediction(features, result, prot.b_factors))


def test_mmcif_parse_equals_alphafold(pdb_dir):
  af_protein = _alphafold_protein()
  path = pdb_dir.parent / 'mmcif' / '101m.cif'
  if not path.exists():
    pytest.skip(f'{path} not present')
  text = path.read_text()
  _assert_same_protein(protein.from_mmcif_string(text), af_protein.from_mmcif_string(text))
