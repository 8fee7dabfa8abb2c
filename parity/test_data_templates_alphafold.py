"""jaxfold.data's HHR parser, mmCIF reader and template featurizer against AlphaFold's own.

AlphaFold here is the installed `alphafold` package with Biopython 1.88, whose
`PDBData.protein_letters_3to1` holds the 20 standard residues only, so it reads modified
residues (4zey's selenomethionines) as 'X' where jaxfold, like AlphaFold with the
Biopython it was written for, reads their parent ('M').
"""

import dataclasses

import numpy as np
import pytest
from alphafold.data import mmcif_parsing, parsers
from alphafold.data import templates as af_templates

from jaxfold.common import residue_constants as rc
from jaxfold.data import hhr, mmcif, templates

_ENTRIES = ['101m', '2crb', '2q2k', '3zee', '4i6p', '4zey']
_HHR_FILES = ['alignments/query73/pdb70_hits.hhr', 'examples/6KWC_1/hhsearch_output.hhr']


@pytest.fixture(scope='module')
def data_dir(shared_dir):
  return shared_dir / 'data'


@pytest.mark.parametrize('name', _HHR_FILES)
def test_hhr_hits_equal_alphafolds(data_dir, name):
  text = (data_dir / name).read_text()
  ours, theirs = hhr.parse_hhr(text), parsers.parse_hhr(text)
  assert len(ours) == len(theirs) > 0
  for our_hit, their_hit in zip(ours, theirs):
    expected = dataclasses.asdict(their_hit)
    expected['indices_query'] = tuple(expected['indices_query'])
    expected['indices_hit'] = tuple(expected['indices_hit'])
    assert dataclasses.asdict(our_hit) == expected


@pytest.mark.parametrize('entry', _ENTRIES)
def test_mmcif_equals_alphafolds(data_dir, entry):
  text = (data_dir / 'mmcif' / f'{entry}.cif').read_text()
  ours = mmcif.parse(text, entry)
  theirs = mmcif_parsing.parse(file_id=entry, mmcif_string=text,
                               catch_all_errors=False).mmcif_object
  assert ours.header.release_date == theirs.header['release_date']
  assert ours.header.resolution == theirs.header['resolution']
  assert ours.header.structure_method == theirs.header['structure_method']
  assert list(ours.chains) == list(theirs.chain_to_seqres)
  for chain_id, chain in ours.chains.items():
    their_sequence = theirs.chain_to_seqres[chain_id]
    assert len(chain.sequence) == len(their_sequence)
    for ours_aa, theirs_aa, resname in zip(chain.sequence, their_sequence, chain.residue_names):
      assert ours_aa == theirs_aa or (theirs_aa == 'X' and resname not in rc.restype_3to1)
    # Atom positions through AlphaFold's template code (which fixes arginine NH1/NH2).
    positions, mask = af_templates._get_atom_positions(  # pylint: disable=protected-access
        theirs, chain_id, max_ca_ca_distance=150.0)
    our_positions, our_mask = templates.chain_atoms(chain)
    np.testing.assert_array_equal(our_mask, mask, err_msg=f'{entry}_{chain_id} mask')
    np.testing.assert_array_equal(our_positions, positions.astype(np.float32),
                                  err_msg=f'{entry}_{chain_id} positions')


def test_template_features_equal_alphafolds_featurizer(data_dir):
  """AlphaFold's HhsearchHitFeaturizer on the same folder and hits gives the same features.

  AlphaFold's featurizer stops at a missing mmCIF, so it is given the hits whose file is
  present. It needs kalign only to re-align a hit whose sequence is not in the mmCIF; these
  hits need none, so a kalign path that does not exist is never run (no kalign is installed).
  """
  folder = data_dir / 'alignments' / 'query73'
  query = ''.join((folder / 'query.fasta').read_text().split('\n', 1)[1].split())
  hits = hhr.read_hhr(folder / 'pdb70_hits.hhr')
  present = [h for h in parsers.parse_hhr((folder / 'pdb70_hits.hhr').read_text())
             if (data_dir / 'mmcif' / f'{h.name[:4].lower()}.cif').is_file()]
  featurizer = af_templates.HhsearchHitFeaturizer(
      mmcif_dir=str(data_dir / 'mmcif'), max_template_date='2100-01-01', max_hits=20,
      kalign_binary_path='/kalign-not-installed', release_dates_path=None,
      obsolete_pdbs_path=None)
  theirs = featurizer.get_templates(query_sequence=query, hits=present)
  assert not theirs.errors and not theirs.warnings
  ours = templates.template_features(query, hits, data_dir / 'mmcif',
                                     max_template_date='2100-01-01', max_hits=20)
  assert len(ours.features['template_domain_names']) == 5
  for key in templates.TEMPLATE_FEATURES:
    assert ours.features[key].dtype == theirs.features[key].dtype, key
    np.testing.assert_array_equal(ours.features[key], theirs.features[key], err_msg=key)
