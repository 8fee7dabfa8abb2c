"""jaxfold.data parsers and raw features against AlphaFold's own data pipeline, on every real
alignment and sequence file of shared/data: identical rows, deletions, descriptions and features."""

import pathlib

import numpy as np
import pytest
from alphafold.data import msa_identifiers as af_identifiers
from alphafold.data import parsers as af_parsers
from alphafold.data import pipeline as af_pipeline

from jaxfold.data import msa_features, parsers

_A3M = ['alignments/2q2k_A/bfd_uniclust_hits.a3m', 'alignments/2q2k_B/bfd_uniclust_hits.a3m',
        'alignments/query73/bfd_uniclust_hits.a3m', 'examples/6KWC_1/bfd_uniref_hits.a3m']
_STOCKHOLM = [f'alignments/{chain}/{db}_hits.sto' for chain in ('2q2k_A', '2q2k_B')
              for db in ('mgnify', 'uniprot', 'uniref90')] + [
    'alignments/query73/mgnify_hits.sto', 'alignments/query73/uniref90_hits.sto',
    'examples/6KWC_1/mgnify_hits.sto']
_FASTA = ['alignments/query73/query.fasta', 'examples/6KWC_1/6kwc.fasta', 'pdb/101m_1_A.fasta']
_FOLDERS = ['alignments/query73', 'alignments/2q2k_A', 'examples/6KWC_1']


@pytest.fixture(scope='module')
def data_dir(shared_dir) -> pathlib.Path:
  return shared_dir / 'data'


def _assert_same_msa(ours: parsers.Msa, theirs: af_parsers.Msa) -> None:
  assert ours.sequences == list(theirs.sequences)
  assert ours.descriptions == list(theirs.descriptions)
  np.testing.assert_array_equal(ours.deletion_matrix, np.asarray(theirs.deletion_matrix))


@pytest.mark.parametrize('name', _A3M)
def test_parse_a3m_equals_alphafold(data_dir, name):
  text = (data_dir / name).read_text()
  _assert_same_msa(parsers.parse_a3m(text), af_parsers.parse_a3m(text))


@pytest.mark.parametrize('name', _STOCKHOLM)
def test_parse_stockholm_equals_alphafold(data_dir, name):
  text = (data_dir / name).read_text()
  _assert_same_msa(parsers.parse_stockholm(text), af_parsers.parse_stockholm(text))


@pytest.mark.parametrize('cap', [1, 7, 501])
def test_stockholm_cap_equals_alphafold_truncation(data_dir, cap):
  path = data_dir / 'examples/6KWC_1/mgnify_hits.sto'  # five blocks, 1698 sequences
  theirs = af_parsers.parse_stockholm(af_parsers.truncate_stockholm_msa(str(path), cap))
  _assert_same_msa(parsers.read_msa(path, max_sequences=cap), theirs)


@pytest.mark.parametrize('name', _FASTA + _A3M)
def test_parse_fasta_equals_alphafold(data_dir, name):
  text = (data_dir / name).read_text()
  sequences, descriptions = af_parsers.parse_fasta(text)
  assert parsers.parse_fasta(text) == (list(sequences), list(descriptions))


@pytest.mark.parametrize('name', _FASTA)
def test_sequence_features_equal_alphafold(data_dir, name):
  (sequence,), (description,) = parsers.read_fasta(data_dir / name)
  ours = msa_features.make_sequence_features(sequence, description, len(sequence))
  theirs = af_pipeline.make_sequence_features(sequence, description, len(sequence))
  assert set(ours) == set(theirs)
  for key, value in theirs.items():
    assert ours[key].dtype == value.dtype and ours[key].shape == value.shape, key
    np.testing.assert_array_equal(ours[key], value, err_msg=key)


@pytest.mark.parametrize('folder', _FOLDERS)
def test_msa_features_equal_alphafold_rows_first_occurrence_kept(data_dir, folder):
  """AlphaFold's make_msa_features on AlphaFold's parse of the same files, then each encoded
  row's first occurrence: this reference build keeps every row, AlphaFold 2.3 de-duplicates."""
  theirs = af_pipeline.make_msa_features([
      af_parsers.parse_a3m(path.read_text()) if path.suffix == '.a3m' else
      af_parsers.parse_stockholm(af_parsers.truncate_stockholm_msa(str(path), cap))
      for path, cap in msa_features.alignment_paths(data_dir / folder)])
  first = {}
  for index, row in enumerate(map(tuple, theirs['msa'])):
    first.setdefault(row, index)
  keep = sorted(first.values())
  ours = msa_features.make_msa_features(msa_features.read_alignment_dir(data_dir / folder))
  for key in ('msa', 'deletion_matrix_int', 'msa_species_identifiers'):
    assert ours[key].dtype == theirs[key].dtype, key
    np.testing.assert_array_equal(ours[key], theirs[key][keep], err_msg=key)
  np.testing.assert_array_equal(ours['num_alignments'], [len(keep)] * len(ours['msa'][0]))


@pytest.mark.parametrize('name', _A3M + _STOCKHOLM)
def test_species_identifiers_equal_alphafold(data_dir, name):
  msa = parsers.read_msa(data_dir / name)
  for description in msa.descriptions:
    assert (msa_features.species_identifier(description)
            == af_identifiers.get_identifiers(description).species_id), description
