"""jaxfold.data.mmcif on real PDB entries, checked against the files' own _atom_site rows."""

import json
import pathlib

import numpy as np
import pytest
from Bio.PDB.MMCIF2Dict import MMCIF2Dict

from jaxfold.common import residue_constants as rc
from jaxfold.data import mmcif

_ENTRIES = ['101m', '2crb', '2q2k', '3zee', '4i6p', '4zey']


@pytest.fixture(scope='module')
def mmcif_dir(shared_dir) -> pathlib.Path:
  return shared_dir / 'data' / 'mmcif'


@pytest.fixture(scope='module')
def parsed(mmcif_dir) -> dict[str, mmcif.MmcifObject]:
  return {entry: mmcif.read(mmcif_dir / f'{entry}.cif') for entry in _ENTRIES}


def _first_model_protein_rows(path: pathlib.Path) -> list[dict[str, str]]:
  """The file's first-model atom rows of polymer residues with an atom37 name, read directly."""
  info = MMCIF2Dict(str(path))
  keys = ['label_seq_id', 'label_comp_id', 'label_atom_id', 'label_alt_id', 'auth_asym_id',
          'occupancy', 'Cartn_x', 'Cartn_y', 'Cartn_z', 'pdbx_PDB_model_num']
  rows = [dict(zip(keys, values)) for values in zip(*(info[f'_atom_site.{k}'] for k in keys))]
  first_model = rows[0]['pdbx_PDB_model_num']
  return [r for r in rows if r['pdbx_PDB_model_num'] == first_model and r['label_seq_id'] != '.'
          and (r['label_atom_id'] in rc.atom_order or r['label_atom_id'] == 'SE')]


def _slot(row: dict[str, str]) -> int:
  return rc.atom_order['SD' if row['label_atom_id'] == 'SE' else row['label_atom_id']]


def test_every_shared_entry_is_covered(mmcif_dir):
  assert sorted(p.stem for p in mmcif_dir.glob('*.cif')) == _ENTRIES


@pytest.mark.parametrize('entry', _ENTRIES)
def test_entry_parses_to_consistent_chains(parsed, entry):
  structure = parsed[entry]
  assert structure.file_id == entry and structure.chains
  for chain_id, chain in structure.chains.items():
    num_res = len(chain.sequence)
    assert chain.chain_id == chain_id and len(chain.residue_names) == num_res
    assert chain.atom_positions.shape == (num_res, 37, 3)
    assert chain.atom_positions.dtype == chain.atom_mask.dtype == np.float32
    assert set(np.unique(chain.atom_mask)) <= {0.0, 1.0}
    # Unobserved atoms sit at the origin; every residue with atoms has its CA.
    assert not chain.atom_positions[chain.atom_mask == 0].any()
    assert chain.atom_mask.any(-1).sum() > 0


@pytest.mark.parametrize('entry', _ENTRIES)
def test_positions_are_the_files_coordinates(parsed, mmcif_dir, entry):
  """Every unambiguous atom is where the file puts it, and nothing else is present."""
  rows = _first_model_protein_rows(mmcif_dir / f'{entry}.cif')
  chains = parsed[entry].chains
  checked = 0
  for row in rows:
    if row['label_alt_id'] != '.':
      continue
    chain = chains[row['auth_asym_id']]
    i = int(row['label_seq_id']) - 1  # these entries number their sequences from 1
    assert chain.residue_names[i] == row['label_comp_id']
    assert chain.atom_mask[i, _slot(row)] == 1.0
    expected = np.array([row['Cartn_x'], row['Cartn_y'], row['Cartn_z']], np.float32)
    np.testing.assert_array_equal(chain.atom_positions[i, _slot(row)], expected)
    checked += 1
  assert checked > 0.9 * len(rows)
  distinct = {(r['auth_asym_id'], r['label_seq_id'], _slot(r)) for r in rows}
  assert sum(int(c.atom_mask.sum()) for c in chains.values()) == len(distinct)


def test_2q2k_chains_and_header_match_the_openfold_cache(parsed, mmcif_dir):
  cache = json.loads((mmcif_dir / '2q2k_cache.json').read_text())['2q2k']
  structure = parsed['2q2k']
  assert list(structure.chains) == cache['chain_ids'] == ['A', 'B']  # the DNA chain F is not
  assert [c.sequence for c in structure.chains.values()] == cache['seqs']
  assert structure.header.release_date == cache['release_date']
  assert structure.header.resolution == cache['resolution']
  assert structure.header.structure_method == 'x-ray diffraction'


def test_missing_residues_are_in_the_sequence_with_zero_mask(parsed, mmcif_dir):
  rows = _first_model_protein_rows(mmcif_dir / '2q2k.cif')
  observed = {int(r['label_seq_id']) - 1 for r in rows if r['auth_asym_id'] == 'A'}
  chain = parsed['2q2k'].chains['A']
  assert len(chain.sequence) == 70 and len(observed) == 45
  np.testing.assert_array_equal(np.flatnonzero(chain.atom_mask.any(-1)), sorted(observed))


def test_selenomethionine_reads_as_methionine_with_sd(parsed):
  chain = parsed['4zey'].chains['A']
  mse = [i for i, name in enumerate(chain.residue_names) if name == 'MSE']
  assert mse == [1, 42, 62]
  assert all(chain.sequence[i] == 'M' for i in mse)
  sd = rc.atom_order['SD']
  assert chain.atom_mask[mse, sd].all()
  # HETATM 11 SE of MSE 2 in 4zey.cif.
  np.testing.assert_array_equal(chain.atom_positions[1, sd],
                                np.array([9.630, 24.320, 9.473], np.float32))


def test_header_fields(parsed):
  assert parsed['101m'].header == mmcif.MmcifHeader('1998-04-08', 2.07, 'x-ray diffraction')
  assert parsed['2crb'].header == mmcif.MmcifHeader('2005-11-20', 0.0, 'solution nmr')
  assert parsed['3zee'].header == mmcif.MmcifHeader('2013-10-16', 6.1, 'electron microscopy')


def test_unset_revision_dates_are_not_release_dates(mmcif_dir):
  text = (mmcif_dir / '2q2k.cif').read_text()
  first_unset = text.replace("0 2008-02-05 \n", "0 ? \n")
  assert mmcif.parse(first_unset, '2q2k').header.release_date == '2011-07-13'
  none_set = first_unset.replace("1 2011-07-13 \n", "1 . \n")
  assert mmcif.parse(none_set, '2q2k').header.release_date is None


def test_nmr_entry_reads_first_model_only(parsed, mmcif_dir):
  info = MMCIF2Dict(str(mmcif_dir / '2crb.cif'))
  assert len(set(info['_atom_site.pdbx_PDB_model_num'])) == 20
  assert parsed['2crb'].chains['A'].atom_mask.sum() == 759


def test_heme_is_not_part_of_the_myoglobin_chain(parsed, shared_dir):
  structure = parsed['101m']
  assert list(structure.chains) == ['A']
  fasta = (shared_dir / 'data' / 'pdb' / '101m_1_A.fasta').read_text().split('\n', 1)[1]
  assert structure.chains['A'].sequence == ''.join(fasta.split())
  assert 'HEM' not in structure.chains['A'].residue_names


def test_alternate_locations_take_the_highest_occupancy(mmcif_dir, tmp_path):
  text = (mmcif_dir / '4zey.cif').read_text()
  ca = rc.atom_order['CA']
  # In the file both conformers of LYS 64 have occupancy 0.50: the first (A) is read.
  tied = mmcif.parse(text, '4zey').chains['A']
  np.testing.assert_array_equal(tied.atom_positions[63, ca],
                                np.array([3.709, -2.437, -5.052], np.float32))
  # Give conformer B the higher occupancy and it is read instead.
  favoured_b = text.replace('A LYS A 1 64 ? 3.709  -2.437  -5.052  0.50',
                            'A LYS A 1 64 ? 3.709  -2.437  -5.052  0.40').replace(
                                'B LYS A 1 64 ? 3.709  -2.435  -5.055  0.50',
                                'B LYS A 1 64 ? 3.709  -2.435  -5.055  0.60')
  assert favoured_b != text
  chain = mmcif.parse(favoured_b, '4zey').chains['A']
  np.testing.assert_array_equal(chain.atom_positions[63, ca],
                                np.array([3.709, -2.435, -5.055], np.float32))


def test_insertion_codes_do_not_move_residues(mmcif_dir, parsed):
  """2q2k chain A's residue 29 (author number 10) renumbered as 9A stays at position 29."""
  lines = (mmcif_dir / '2q2k.cif').read_text().splitlines()
  renumbered = 0
  for n, line in enumerate(lines):
    fields = line.split()
    if fields[:1] == ['ATOM'] and fields[6] == 'B' and fields[8] == '29':
      fields[9], fields[16] = 'A', str(int(fields[16]) - 1)
      lines[n] = ' '.join(fields)
      renumbered += 1
  assert renumbered > 0
  chain = mmcif.parse('\n'.join(lines), '2q2k').chains['A']
  np.testing.assert_array_equal(chain.atom_positions, parsed['2q2k'].chains['A'].atom_positions)
  np.testing.assert_array_equal(chain.atom_mask, parsed['2q2k'].chains['A'].atom_mask)


def test_residue_letters():
  assert [mmcif.residue_letter(name) for name in ('ALA', 'MSE', 'SEP', 'HOH', 'DA')] == \
      ['A', 'M', 'S', 'X', 'X']


def _dna_only(text: str) -> str:
  """2q2k with its protein entity's chem comps relabelled: a file with no protein chain."""
  return text.replace("'L-peptide linking'", "'L-other linking'").replace(
      "'peptide linking'", "'other linking'")


@pytest.mark.parametrize('make_bad, reason', [
    (lambda text: '', 'not an mmCIF file'),
    (lambda text: 'HEADER    this is a PDB file, not mmCIF\n', 'not an mmCIF file'),
    (lambda text: text[:text.index('_atom_site.group_PDB')], 'no _atom_site'),
    (lambda text: text[:text.index('ATOM   600 ') + 40], 'different lengths'),
    (_dna_only, 'no protein chains'),
    (lambda text: text.replace('31.339 32.877', 'abc 32.877'), 'unreadable number'),
    (lambda text: 'data_x\nloop_\n1 2\n', r'not an mmCIF file \(ZeroDivisionError'),
    (lambda text: text.replace('31.339 32.877', 'nan 32.877'),
     'chain A residue 44 GLU atom CD: coordinates nan 32.877 17.784 are not finite'),
    (lambda text: text.replace('31.339 32.877', '1e39 32.877'), r'coordinates 1e\+39 32.877'),
])
def test_malformed_files_raise_naming_the_file(mmcif_dir, tmp_path, make_bad, reason):
  path = tmp_path / 'broken.cif'
  path.write_text(make_bad((mmcif_dir / '2q2k.cif').read_text()))
  with pytest.raises(mmcif.MmcifError, match=reason) as error:
    mmcif.read(path)
  assert str(path) in str(error.value) and '\n' not in str(error.value)


def test_binary_file_raises_naming_the_file(tmp_path):
  path = tmp_path / 'binary.cif'
  path.write_bytes(bytes(range(256)) * 4)
  with pytest.raises(mmcif.MmcifError, match='not UTF-8 text: byte 0x80 at offset 128') as error:
    mmcif.read(path)
  assert str(path) in str(error.value)
