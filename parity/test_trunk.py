"""EmbeddingsAndEvoformer (Suppl. Alg. 2 lines 5-17) against AlphaFold's, and its parameter tree.

One recycling iteration of the trunk with model_1_ptm's configuration (templates and their
torsion embedding on; every channel size full, few blocks) on a real 16-residue batch with
padding: outputs and the values entering the extra-MSA and Evoformer stacks. AlphaFold's
OuterProductMean divides its bias by ~1e-3 at padded pairs, so the padded entries of the
pair dominate its max|ref|; the pair is therefore also compared on real residues alone.
The full-size parameter tree must equal DeepMind's released checkpoints' key for key.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxfold.convert.haiku_tree import to_haiku
from jaxfold.model.global_config import GlobalConfig
from jaxfold.model.template_embedding import TemplateConfig
from jaxfold.model.trunk import EmbeddingsAndEvoformer, EmbeddingsAndEvoformerConfig
from jaxfold.parity.alphafold_reference import config_from_reference, reference_config
from trunk_reference import alphafold_trunk_run, jaxfold_trunk_run, processed_batch

TRUNK_PREFIX = 'alphafold/alphafold_iteration/'


def test_trunk(parity, shared_dir):
  batch, params, ref, ref_captures = alphafold_trunk_run(shared_dir)
  ours, captures = jaxfold_trunk_run(params, batch)
  parity.check('trunk', ours, ref)
  real = batch['seq_mask'] > 0
  parity.check('trunk/pair[real residues]', ours['pair'][real][:, real],
               ref['pair'][real][:, real])
  parity.check('trunk: stack inputs', captures, ref_captures)


@pytest.mark.parametrize('preset', ['model_1_ptm', 'model_3_ptm'])
def test_parameter_tree_equals_alphafold_checkpoint(shared_dir, preset):
  """Names and shapes of every trunk parameter at full size (48 Evoformer blocks)."""
  with open(shared_dir / 'fixtures' / 'alphafold' / f'{preset}_manifest.json') as f:
    manifest = json.load(f)
  expected = {key[len(TRUNK_PREFIX):]: tuple(shape) for key, shape in manifest.items()
              if key.startswith(TRUNK_PREFIX + 'evoformer/')}
  cfg = config_from_reference(EmbeddingsAndEvoformerConfig,
                              reference_config(preset).model.embeddings_and_evoformer)
  batch = processed_batch(shared_dir)
  shapes = jax.eval_shape(EmbeddingsAndEvoformer(cfg).init, jax.random.key(0), batch)
  ours = {f'{path}//{name}': tuple(leaf.shape)
          for path, leaves in to_haiku(shapes['params'], root='evoformer').items()
          for name, leaf in leaves.items()}
  assert ours == expected


def test_default_config_is_alphafolds():
  """The config dataclasses' defaults are AlphaFold's base `embeddings_and_evoformer`."""
  af_cfg = reference_config('model_3').model.embeddings_and_evoformer
  assert EmbeddingsAndEvoformerConfig() == config_from_reference(EmbeddingsAndEvoformerConfig,
                                                                  af_cfg)
  assert TemplateConfig() == config_from_reference(TemplateConfig, af_cfg.template)


@pytest.mark.slow
def test_trunk_runs_in_bfloat16(shared_dir):
  """bfloat16 compute on float32 weights: finite float32 outputs near the float32 ones.

  Measured drift on real residues (max|Δ| / max|ref|): single 0.5%, MSA 0.8%, pair 1.7%.
  """
  batch, params, ref, _ = alphafold_trunk_run(shared_dir)
  ours, _ = jaxfold_trunk_run(params, batch, GlobalConfig(dtype='bfloat16'))
  real = batch['seq_mask'] > 0
  for name in ('single', 'msa_first_row', 'msa', 'pair'):
    assert ours[name].dtype == jnp.float32 and np.all(np.isfinite(ours[name]))
    # Residues are the leading axis of single / msa_first_row, the next one of msa / pair.
    o, r = ((ours[name][real], ref[name][real]) if name in ('single', 'msa_first_row')
            else (ours[name][:, real], ref[name][:, real]))
    if name == 'pair':
      o, r = o[real], r[real]
    drift = np.max(np.abs(o - r)) / np.max(np.abs(r))
    assert drift < 0.05, f'{name}: bfloat16 drift {drift:.3g}'
