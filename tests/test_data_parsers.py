"""jaxfold.data.parsers and msa_features on real alignments: AlphaFold's own features.pkl
reproduced row for row, deletion matrices against a plain per-character count, bad inputs."""

import pathlib
import pickle

import numpy as np
import pytest

from jaxfold.common import residue_constants as rc
from jaxfold.data import msa_features, parsers

_ALIGNMENTS = ['alignments/2q2k_A/bfd_uniclust_hits.a3m', 'alignments/2q2k_A/mgnify_hits.sto',
               'alignments/2q2k_A/uniprot_hits.sto', 'alignments/2q2k_A/uniref90_hits.sto',
               'alignments/query73/bfd_uniclust_hits.a3m', 'alignments/query73/mgnify_hits.sto',
               'alignments/query73/uniref90_hits.sto', 'examples/6KWC_1/bfd_uniref_hits.a3m',
               'examples/6KWC_1/mgnify_hits.sto']


@pytest.fixture(scope='module')
def data_dir(shared_dir) -> pathlib.Path:
  return shared_dir / 'data'


@pytest.fixture(scope='module')
def alphafold_features(data_dir) -> dict:
  with open(data_dir / 'features' / 'alphafold_feature_dict.pickle', 'rb') as f:
    return pickle.load(f)


def _reference_rows(path: pathlib.Path) -> tuple[list[str], list[list[int]]]:
  """Aligned rows and deletions, one character at a time, straight from the format's definition."""
  text = path.read_text()
  if path.suffix == '.a3m':
    raw = [record.split('\n', 1)[1].replace('\n', '') for record in text.split('>')[1:]]
    query_column = None
  else:
    named: dict[str, str] = {}
    for line in text.splitlines():
      if line.strip() and not line.startswith(('#', '//')):
        name, part = line.split()
        named[name] = named.get(name, '') + part
    raw = list(named.values())
    query_column = [c != '-' for c in raw[0]]
  rows, deletions = [], []
  for row in raw:
    aligned, counts, pending = '', [], 0
    for column, char in enumerate(row):
      is_column = char.isupper() or char == '-' if query_column is None else query_column[column]
      if is_column:
        aligned += char
        counts.append(pending)
        pending = 0
      elif char != '-':
        pending += 1
    rows.append(aligned)
    deletions.append(counts)
  return rows, deletions


@pytest.mark.parametrize('name', _ALIGNMENTS)
def test_real_alignment_rows_and_deletions_match_a_per_character_count(data_dir, name):
  path = data_dir / name
  msa = parsers.read_msa(path)
  rows, deletions = _reference_rows(path)
  assert msa.sequences == rows
  np.testing.assert_array_equal(msa.deletion_matrix, deletions)
  assert msa.deletion_matrix.dtype == np.int32
  assert len(msa.descriptions) == len(rows)
  assert not msa.deletion_matrix[0].any()  # the query has no insertion against itself


@pytest.mark.parametrize('folder, fasta, a3m, sto, rows', [
    ('alignments/query73', 'query.fasta', 'bfd_uniclust_hits.a3m', 'mgnify_hits.sto',
     (1024, 59)),
    ('examples/6KWC_1', '6kwc.fasta', 'bfd_uniref_hits.a3m', 'mgnify_hits.sto', (1428, 1698)),
])
def test_real_alignments_start_with_their_query(data_dir, folder, fasta, a3m, sto, rows):
  (query,), (description,) = parsers.read_fasta(data_dir / folder / fasta)
  for file, count in zip((a3m, sto), rows):
    msa = parsers.read_msa(data_dir / folder / file)
    assert len(msa) == count
    assert msa.sequences[0] == query
    assert msa.descriptions[0] == description
    assert msa.deletion_matrix.shape == (count, len(query))


def test_stockholm_cap_keeps_the_first_sequences_across_blocks(data_dir):
  path = data_dir / 'examples/6KWC_1/mgnify_hits.sto'  # five interleaved blocks
  full = parsers.read_msa(path)
  capped = parsers.read_msa(path, max_sequences=501)
  assert len(capped) == 501
  assert capped.sequences == full.sequences[:501]
  assert capped.descriptions == full.descriptions[:501]
  np.testing.assert_array_equal(capped.deletion_matrix, full.deletion_matrix[:501])


def test_insert_column_gaps_and_lower_case_as_hmmer_and_hhblits_write_them(tmp_path):
  # HMMER marks the query's insert columns with '.'; residues there are deletions of the hit.
  sto = parsers.parse_stockholm('# STOCKHOLM 1.0\nq  MK..V\nh  MKacV\nh2 M-..V\nh3 mK.aV\n//\n')
  assert sto.sequences == ['MKV', 'MKV', 'M-V', 'MKV']
  np.testing.assert_array_equal(sto.deletion_matrix,
                                [[0, 0, 0], [0, 0, 2], [0, 0, 0], [0, 0, 1]])
  # A3M may pad insertions with '.', which is not a residue and so not a deletion.
  path = tmp_path / 'dots.a3m'
  path.write_text('>q\nMKV\n>h\nMa.KVc\n>h2\nM-V\n')
  a3m = parsers.read_msa(path)
  assert a3m.sequences == ['MKV', 'MKV', 'M-V']
  np.testing.assert_array_equal(a3m.deletion_matrix, [[0, 0, 0], [0, 1, 0], [0, 0, 0]])
  assert parsers.read_msa(path, max_sequences=2).sequences == ['MKV', 'MKV']


def test_alignment_folder_reproduces_alphafold_msa_features(data_dir, alphafold_features):
  """The proof: AlphaFold's features.pkl for query73, row for row (uniref90, BFD, MGnify)."""
  folder = data_dir / 'alignments' / 'query73'
  msas = msa_features.read_alignment_dir(folder)
  assert [len(msa) for msa in msas] == [57, 1024, 59]
  features = msa_features.make_msa_features(msas)
  for key in ('msa', 'deletion_matrix_int', 'num_alignments'):
    assert features[key].dtype == alphafold_features[key].dtype == np.int32, key
    np.testing.assert_array_equal(features[key], alphafold_features[key], err_msg=key)
  # 1140 rows read; 4 repeat an earlier row: one UniRef90 hit, BFD's query, two MGnify hits.
  assert features['msa'].shape == (1136, 73)
  species = features['msa_species_identifiers']
  assert species.dtype == object and species.shape == (1136,)
  # UniRef90 names carry no species; row 56 is BFD's first hit, tr|A0A2A6NXF8|..._9BRAD.
  assert not species[:56].any() and species[56] == b'9BRAD'


def test_sequence_features_equal_alphafold(data_dir, alphafold_features):
  (query,), (description,) = parsers.read_fasta(data_dir / 'alignments/query73/query.fasta')
  features = msa_features.make_sequence_features(query, description, len(query))
  assert set(features) == {'aatype', 'between_segment_residues', 'domain_name',
                           'residue_index', 'seq_length', 'sequence'}
  for key, value in features.items():
    assert value.dtype == alphafold_features[key].dtype, key
    np.testing.assert_array_equal(value, alphafold_features[key], err_msg=key)


def test_sequence_features_map_unknown_letters_to_x_and_reject_others():
  features = msa_features.make_sequence_features('AUB', 'toy', 3)
  np.testing.assert_array_equal(features['aatype'].argmax(-1),
                                [rc.restype_order['A'], rc.unk_restype_index,
                                 rc.unk_restype_index])
  with pytest.raises(ValueError, match='Invalid character'):
    msa_features.make_sequence_features('AcD', 'toy', 3)
  with pytest.raises(ValueError, match="'toy' has 3 residues; num_res is 4"):
    msa_features.make_sequence_features('ACD', 'toy', 4)


def test_msa_merge_drops_rows_equal_once_encoded_keeping_the_first():
  # B encodes as D and J as X in HHblits' alphabet, so rows 'AB-J' and 'AD-X' are one row.
  first = parsers.parse_a3m('>q\nAD-X\n>tr|P12345|P12345_HUMAN x\nAB-J\n>u\nAC-X\n')
  second = parsers.parse_a3m('>q2\nADaa-X\n>sp|Q9XYZ1|ABC_MOUSE/3-9\nAC-X\n>v\nAEGX\n')
  features = msa_features.make_msa_features([first, second])
  hhblits = [rc.HHBLITS_AA_TO_ID[c] for c in 'ADC-XEG']
  a, d, c, gap, x, e, g = hhblits
  np.testing.assert_array_equal(features['msa'], [[a, d, gap, x], [a, c, gap, x],
                                                  [a, e, g, x]])
  np.testing.assert_array_equal(features['deletion_matrix_int'], np.zeros((3, 4)))
  np.testing.assert_array_equal(features['num_alignments'], [3] * 4)
  np.testing.assert_array_equal(features['msa_species_identifiers'], [b'', b'', b''])


@pytest.mark.parametrize('description, species', [
    ('tr|A0A146SKV9|A0A146SKV9_FUNHE some protein', 'FUNHE'),
    ('sp|P0C2L1|A3X1_LOXLA', 'LOXLA'),
    ('tr|A0A0K0ME10|A0A0K0ME10_9STAP/1-51', '9STAP'),  # jackhmmer range suffix
    ('tr|Q1ABC2_1|Q1ABC2_YEAST_12', 'YEAST'),  # isoform and small-BFD suffixes
    ('UniRef90_D7BIZ4/1-73', ''), ('MGYP000123', ''), ('', ''),
])
def test_species_identifier_from_uniprot_names(description, species):
  assert msa_features.species_identifier(description) == species


def test_alignment_folder_order_prefers_a3m_and_skips_absent(tmp_path):
  for name in ('mgnify_hits.sto', 'mgnify_hits.a3m', 'bfd_uniref_hits.a3m', 'uniprot_hits.sto'):
    (tmp_path / name).write_text('>q\nAC\n' if name.endswith('.a3m') else 'q AC\n//\n')
  assert msa_features.alignment_paths(tmp_path) == [
      (tmp_path / 'bfd_uniref_hits.a3m', None), (tmp_path / 'mgnify_hits.a3m', 501)]
  assert [msa.sequences for msa in msa_features.read_alignment_dir(tmp_path)] == [['AC'], ['AC']]


def test_alignment_folder_missing_or_without_alignments(tmp_path):
  with pytest.raises(FileNotFoundError, match='absent: alignment folder not found'):
    msa_features.alignment_paths(tmp_path / 'absent')
  (tmp_path / 'pdb70_hits.hhr').write_text('')
  with pytest.raises(FileNotFoundError, match=f'{tmp_path}: no alignment file'):
    msa_features.alignment_paths(tmp_path)


def test_make_msa_features_rejects_empty_or_misaligned_msas():
  with pytest.raises(ValueError, match='at least one MSA'):
    msa_features.make_msa_features([])
  with pytest.raises(ValueError, match='MSA 1 has rows of widths \\[3\\]'):
    msa_features.make_msa_features([parsers.parse_a3m('>q\nAC\n'), parsers.parse_a3m('>q\nACD\n')])


@pytest.mark.parametrize('file, text, problem', [
    ('empty.fasta', '\n\n', "no sequences \\(no '>'"),
    ('headless.fasta', 'MKV\n>q\nMKV\n', "line 1: sequence before the first '>'"),
    ('junk.fasta', '>q\nMK\nV*\n', "line 3: invalid character '\\*' in sequence 'q'"),
    ('no_residues.fasta', '>q\n>r\nMK\n', "line 1: sequence 'q' is empty"),
    ('ragged.a3m', '>q\nMKV\n>hit\nMaaK\n', "line 3: sequence 'hit' has 2 aligned columns; "
                                           'the query has 3'),
    ('digits.a3m', '>q\nMKV\n>hit\nM1V\n', "line 4: invalid character '1' in sequence 'hit'"),
    ('empty.sto', '# STOCKHOLM 1.0\n#=GF ID x\n//\n', 'no sequences'),
    ('ragged.sto', '# STOCKHOLM 1.0\nq MKV\nhit MK\n//\n', "line 3: sequence 'hit' is 2 "
                                                          "columns long; the query 'q' is 3"),
    ('junk.sto', 'q MKV\nhit M?V\n', "line 2: invalid character '\\?' in sequence 'hit'"),
    ('fields.sto', 'q MKV\nhit M K V\n', "line 2: expected 'name aligned_sequence', got 4"),
    ('hits.txt', '>q\nMKV\n', "unknown alignment format '.txt'"),
])
def test_malformed_files_raise_naming_file_and_line(tmp_path, file, text, problem):
  path = tmp_path / file
  path.write_text(text)
  read = parsers.read_fasta if file.endswith('.fasta') else parsers.read_msa
  with pytest.raises(parsers.ParseError, match=f'^{path}: {problem}'):
    read(path)


def test_unreadable_files_raise_naming_the_file(tmp_path):
  with pytest.raises(parsers.ParseError, match=f'^{tmp_path}/missing.a3m: cannot read'):
    parsers.read_msa(tmp_path / 'missing.a3m')
  (tmp_path / 'binary.sto').write_bytes(b'q \xff\xfe\n')
  with pytest.raises(parsers.ParseError,
                     match=f'^{tmp_path}/binary.sto: not UTF-8 text: byte 0xff at offset 2'):
    parsers.read_msa(tmp_path / 'binary.sto')
  assert issubclass(parsers.ParseError, ValueError)


def test_text_that_is_not_utf8_names_the_file_and_the_byte_offset(tmp_path):
  fasta = tmp_path / 'query.fasta'
  fasta.write_bytes(b'\xef\xbb\xbf>q\nMKV\n')  # UTF-8 with a byte order mark reads as UTF-8
  assert parsers.read_fasta(fasta) == (['MKV'], ['q'])
  fasta.write_text('>q\nMKV\n', encoding='utf-16')
  with pytest.raises(parsers.ParseError, match=(
      f'^{fasta}: not UTF-8 text: byte 0xff at offset 0 \\(invalid start byte; the file is '
      'UTF-16: save it as UTF-8\\)$')):
    parsers.read_fasta(fasta)
  cases = {'hits.a3m': (b'>q\nMKV\n>h\xe9\nMKV\n', 9),
           'hits.sto': (b'# STOCKHOLM 1.0\nq MKV\nh\xe9 MKV\n//\n', 23)}  # read line by line
  for name, (data, offset) in cases.items():
    (tmp_path / name).write_bytes(data)
    with pytest.raises(parsers.ParseError, match=(
        f'^{tmp_path / name}: not UTF-8 text: byte 0xe9 at offset {offset} ')):
      parsers.read_msa(tmp_path / name)
