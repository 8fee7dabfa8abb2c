"""Embedders (Suppl. Alg. 3-5, Alg. 32, extra-MSA and template torsion embedding) against AlphaFold.

AlphaFold has no module for them: its EmbeddingsAndEvoformer (model_1_ptm channel sizes,
few blocks) runs on a real 16-residue batch (2 padded residues, padded MSA rows) and the
values they produce are taken from inside it: the first extra-MSA block's inputs (extra MSA
embedding; pair after input, relative-position, recycling and template embedding), the
first Evoformer block's inputs (MSA after recycling plus the template torsion rows and
their mask) and the template embedding's output. jaxfold's embedders run on their own,
on the same weights (their parameters sit in the `evoformer` scope, as AlphaFold's).
"""

import jax
import pytest
from alphafold.model import modules as af

from jaxfold.model import embedders
from jaxfold.model.global_config import GlobalConfig
from jaxfold.model.template_embedding import TemplateTorsionEmbedder
from jaxfold.parity.alphafold_reference import flax_params
from trunk_reference import alphafold_trunk_run, processed_batch, trunk_config


@pytest.fixture(scope='module')
def reference(shared_dir):
  batch, params, _, captures = alphafold_trunk_run(shared_dir)
  return batch, {'params': flax_params(params)}, captures


def test_dgram_and_pseudo_beta(parity, shared_dir):
  batch = processed_batch(shared_dir)
  cfg = trunk_config()[0]
  ours_pb, ours_mask = embedders.pseudo_beta_fn(
      batch['template_aatype'], batch['template_all_atom_positions'],
      batch['template_all_atom_masks'])
  ref_pb, ref_mask = af.pseudo_beta_fn(
      batch['template_aatype'], batch['template_all_atom_positions'],
      batch['template_all_atom_masks'])
  parity.check('pseudo_beta_fn', {'positions': ours_pb, 'mask': ours_mask},
               {'positions': ref_pb, 'mask': ref_mask}, tol=0.0)
  for name, bins in (('prev_pos', cfg.prev_pos), ('dgram_features', cfg.template.dgram_features)):
    ours = embedders.dgram_from_positions(batch['template_pseudo_beta'],
                                          embedders.DgramConfig(**bins))
    ref = af.dgram_from_positions(batch['template_pseudo_beta'], **bins)
    parity.check(f'dgram_from_positions({name})', ours, ref, tol=0.0)


def test_extra_msa_feature(parity, shared_dir):
  batch = processed_batch(shared_dir)
  keys = ('extra_msa', 'extra_has_deletion', 'extra_deletion_value')
  parity.check('create_extra_msa_feature',
               embedders.create_extra_msa_feature(*(batch[k] for k in keys)),
               af.create_extra_msa_feature({k: batch[k] for k in keys}), tol=0.0)


@pytest.mark.parametrize('pair_chunk_size,pair_as_rows', [(None, False), (5, False), (5, True)])
def test_input_and_recycling_embedders(parity, reference, pair_chunk_size, pair_as_rows):
  """MSA: rows of the first Evoformer block's input; pair: the extra-MSA stack's input
  less AlphaFold's own template update (compared on its own in test_template_embedding).
  In one piece, and 5 pair rows at a time (16 residues: the last chunk shorter), also with
  the input pair built row by row into the previous pair's buffer (the trunk's way)."""
  batch, variables, captures = reference
  cfg = trunk_config()[0]
  gc = GlobalConfig(pair_chunk_size=pair_chunk_size)

  @jax.jit
  def embed(variables, batch):
    msa, pair = embedders.InputEmbedder(cfg.msa_channel, cfg.pair_channel,
                                        cfg.max_relative_feature, gc).apply(
        variables, batch['target_feat'], batch['msa_feat'], batch['residue_index'],
        pair_as_rows=pair_as_rows)
    return embedders.RecyclingEmbedder(cfg.pair_channel, embedders.DgramConfig(**cfg.prev_pos),
                                       global_config=gc).apply(
        variables, msa, pair, batch['aatype'], batch['prev_pos'], batch['prev_msa_first_row'],
        batch['prev_pair'])

  msa, pair = embed(variables, batch)
  num_seq = batch['msa_feat'].shape[0]
  name = f'(pair_chunk={pair_chunk_size}, pair_as_rows={pair_as_rows})'
  parity.check('input+recycling embedding: msa' + name,
               msa, captures['evoformer_iteration']['activations']['msa'][:num_seq])
  parity.check('input+relpos+recycling embedding: pair' + name,
               pair + captures['template_embedding'],
               captures['extra_msa_stack']['activations']['pair'])


def test_extra_msa_embedder(parity, reference):
  batch, variables, captures = reference
  ours = embedders.ExtraMsaEmbedder().apply(
      variables, batch['extra_msa'], batch['extra_has_deletion'], batch['extra_deletion_value'])
  parity.check('extra_msa embedding', ours, captures['extra_msa_stack']['activations']['msa'])


def test_template_torsion_embedder(parity, reference):
  batch, variables, captures = reference
  rows, mask = jax.jit(TemplateTorsionEmbedder().apply)(
      variables, {k: batch[k] for k in ('template_aatype', 'template_all_atom_positions',
                                        'template_all_atom_masks')})
  num_seq = batch['msa_feat'].shape[0]
  evoformer_input = captures['evoformer_iteration']
  parity.check('template torsion rows', rows, evoformer_input['activations']['msa'][num_seq:])
  parity.check('template torsion row mask', mask, evoformer_input['masks']['msa'][num_seq:],
               tol=0.0)
