"""The head losses against OpenFold's recorded terms and AlphaFold's own head loss code.

On OpenFold's loss example (shared/fixtures/openfold/small_loss: 2q2k chain A, crop 48, the
recorded outputs), each term equals OpenFold's unweighted term in losses.json within 1e-4
relative, and AlphaFold's `DistogramHead.loss`, `MaskedMsaHead.loss`, `PredictedLDDTHead.loss`,
`ExperimentallyResolvedHead.loss`, `PredictedAlignedErrorHead.loss` and `lddt.lddt`, called
on the same arrays, within 1e-5 relative; the gradients with respect to the logits too.
A second, masked variant of the batch (a quarter of the residues and MSA positions masked
out) exercises the masks, which the fixture leaves almost all set.
"""

import dataclasses

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from alphafold.model import lddt as af_lddt
from alphafold.model import modules as af

from jaxfold.loss import aligned_error, distogram, experimentally_resolved, lddt, masked_msa, plddt
from jaxfold.parity.agreement import OPENFOLD_MODULE_TOLERANCE
from jaxfold.parity.alphafold_reference import reference_config
from jaxfold.parity.openfold_loss import load_loss_fixture

HEADS_CFG = reference_config('model_1_ptm').model.heads
GLOBAL_CFG = reference_config('model_1_ptm').model.global_config

_LDDT = jax.jit(lddt.lddt, static_argnames=('cutoff', 'per_residue'))
_AF_LDDT = jax.jit(af_lddt.lddt, static_argnames=('cutoff', 'per_residue'))

# OpenFold's name of each term -> (AlphaFold's head class, its name in AlphaFold's outputs).
TERMS = {
    'distogram': (af.DistogramHead, 'distogram'),
    'masked_msa': (af.MaskedMsaHead, 'masked_msa'),
    'plddt_loss': (af.PredictedLDDTHead, 'predicted_lddt'),
    'experimentally_resolved': (af.ExperimentallyResolvedHead, 'experimentally_resolved'),
    'tm': (af.PredictedAlignedErrorHead, 'predicted_aligned_error'),
}


@pytest.fixture(scope='module')
def fixture(shared_dir):
  path = shared_dir / 'fixtures' / 'openfold' / 'small_loss'
  if not path.is_dir():
    pytest.skip(f'no OpenFold loss fixture at {path}')
  return load_loss_fixture(path)


def _masked(batch, seed=0):
  """The batch with a quarter of the residues and of the MSA's BERT positions masked out."""
  rng = np.random.default_rng(seed)
  batch = dict(batch)
  drop = rng.random(batch['aatype'].shape[0]) < 0.25
  for key in ('pseudo_beta_mask', 'backbone_affine_mask'):
    batch[key] = np.where(drop, 0.0, batch[key]).astype(np.float32)
  for key in ('all_atom_mask', 'atom37_atom_exists'):
    batch[key] = np.where(drop[:, None], 0.0, batch[key]).astype(np.float32)
  batch['bert_mask'] = np.where(rng.random(batch['bert_mask'].shape) < 0.25, 0.0,
                                batch['bert_mask']).astype(np.float32)
  return batch


def _ours(term, outputs, batch):
  """jaxfold's loss `term` on jaxfold's outputs and an AlphaFold-form batch."""
  sm = outputs['structure_module']
  if term == 'distogram':
    return distogram.distogram_loss(outputs['distogram']['logits'],
                                    outputs['distogram']['bin_edges'], batch['pseudo_beta'],
                                    batch['pseudo_beta_mask'])
  if term == 'masked_msa':
    return masked_msa.masked_msa_loss(outputs['masked_msa']['logits'], batch['true_msa'],
                                      batch['bert_mask'])
  if term == 'plddt_loss':
    return plddt.plddt_loss(outputs['predicted_lddt']['logits'], sm['final_atom_positions'],
                            batch['all_atom_positions'], batch['all_atom_mask'],
                            batch['resolution'])
  if term == 'experimentally_resolved':
    return experimentally_resolved.experimentally_resolved_loss(
        outputs['experimentally_resolved']['logits'], batch['atom37_atom_exists'],
        batch['all_atom_mask'], batch['resolution'])
  if term == 'tm':
    return aligned_error.aligned_error_loss(
        outputs['predicted_aligned_error']['logits'], outputs['predicted_aligned_error']['breaks'],
        sm['final_affines'], batch['backbone_affine_tensor'], batch['backbone_affine_mask'],
        batch['resolution'])
  raise KeyError(term)


def _alphafold(term, outputs, batch):
  """AlphaFold's own head loss for `term`, called as AlphaFold's model calls it.

  The pLDDT and aligned error heads read the whole output dict (`filter_ret=False` in
  AlphaFold's `AlphaFoldIteration`), the others their own head's outputs.
  """
  cls, name = TERMS[term]
  whole = name in ('predicted_lddt', 'predicted_aligned_error')
  value = outputs if whole else outputs[name]

  def loss():
    return cls(HEADS_CFG[name], GLOBAL_CFG).loss(value, batch)['loss']

  return hk.transform(loss).apply({}, None)


def _with_logits(outputs, term, logits):
  name = TERMS[term][1]
  return {**outputs, name: {**outputs[name], 'logits': logits}}


def _values_and_logit_gradients(loss_fn):
  """A compiled function (outputs, batch) -> {term: (loss, d loss / d logits)} of loss_fn."""
  @jax.jit
  def run(outputs, batch):
    result = {}
    for term, (_, name) in TERMS.items():
      def fn(x, term=term):
        return loss_fn(term, _with_logits(outputs, term, x), batch)
      result[term] = jax.value_and_grad(fn)(outputs[name]['logits'])
    return result
  return run


@pytest.fixture(scope='module')
def results(fixture):
  """{variant: (jaxfold's, AlphaFold's) {term: (loss, d_logits)}}, fixture and masked batch."""
  runs = [_values_and_logit_gradients(fn) for fn in (_ours, _alphafold)]
  outputs = jax.tree.map(jnp.asarray, fixture.outputs)
  out = {}
  for variant, batch in (('fixture', fixture.batch), ('masked', _masked(fixture.batch))):
    batch = {k: jnp.asarray(v) for k, v in batch.items()}
    out[variant] = tuple(run(outputs, batch) for run in runs)
  return out


@pytest.mark.parametrize('term', sorted(TERMS))
def test_term_equals_openfold(parity, results, fixture, term):
  ours = float(results['fixture'][0][term][0])
  ref = fixture.losses[term]
  print(f'{term:25s} jaxfold {ours:.8g}  OpenFold {ref:.8g}  rel {abs(ours - ref) / abs(ref):.2e}')
  parity.check(f'openfold_loss/{term}', np.float32(ours), np.float32(ref),
               tol=OPENFOLD_MODULE_TOLERANCE)


@pytest.mark.parametrize('variant', ['fixture', 'masked'])
@pytest.mark.parametrize('term', sorted(TERMS))
def test_term_and_logit_gradient_equal_alphafold(parity, results, term, variant):
  (ours_value, ours_grad), (ref_value, ref_grad) = (r[term] for r in results[variant])
  rows = parity.check(f'alphafold_loss/{variant}/{term}',
                      {'loss': ours_value, 'd_logits': ours_grad},
                      {'loss': ref_value, 'd_logits': ref_grad})
  relative = ''.join(f'  {r.name.rsplit("/", 1)[-1]} rel {r.relative:.2e}' for r in rows)
  print(f'{variant:8s} {term:25s} jaxfold {float(ours_value):.8g}  '
        f'AlphaFold {float(ref_value):.8g}{relative}')
  assert float(ref_value) > 0.0


@pytest.mark.parametrize('variant', ['fixture', 'masked'])
def test_lddt_equals_alphafold(parity, fixture, variant):
  """lDDT-Cα of the recorded prediction and of the truth plus 1 Å noise, per residue and global."""
  batch = fixture.batch if variant == 'fixture' else _masked(fixture.batch)
  true = batch['all_atom_positions'][:, 1]
  mask = batch['all_atom_mask'][:, 1:2]
  noisy = true + np.random.default_rng(1).standard_normal(true.shape).astype(np.float32)
  predicted = fixture.outputs['structure_module']['final_atom_positions'][:, 1]
  for label, pred in (('prediction', predicted), ('noise_1A', noisy)):
    for per_residue in (False, True):
      ours = _LDDT(pred, true, mask, per_residue=per_residue)
      ref = _AF_LDDT(pred[None], true[None], mask[None], per_residue=per_residue)[0]
      name = f'alphafold_lddt/{variant}/{label}/{"per_residue" if per_residue else "global"}'
      rows = parity.check(name, ours, ref)
      print(f'{name:55s} mean {float(jnp.mean(ours)):.6f}  rel {rows[0].relative:.2e}')


def test_configs_hold_alphafold_values():
  """Every loss setting in the configs is AlphaFold's `model.heads.*` value (model_1_ptm)."""
  pairs = {
      distogram.DistogramLossConfig(): ('distogram', {}),
      masked_msa.MaskedMsaLossConfig(): ('masked_msa', {'num_classes': 'num_output'}),
      plddt.PlddtLossConfig(): ('predicted_lddt', {}),
      experimentally_resolved.ExperimentallyResolvedLossConfig(): ('experimentally_resolved', {}),
      aligned_error.AlignedErrorLossConfig(): ('predicted_aligned_error', {}),
  }
  for config, (name, renames) in pairs.items():
    af_head = HEADS_CFG[name]
    shared = {field: getattr(config, field) for field in
              (f.name for f in dataclasses.fields(config))
              if renames.get(field, field) in af_head}
    assert shared == {k: af_head[renames.get(k, k)] for k in shared}, name
    assert set(shared) >= {f.name for f in dataclasses.fields(config)} - {'eps', 'cutoff'}, name
