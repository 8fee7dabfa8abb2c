"""The recycling AlphaFold model (Suppl. Alg. 2) without a reference: training-side behaviour.

A reduced model_1_ptm (every width, few blocks; templates and the pTM head on) runs on a
synthetic 12-residue batch in AlphaFold's processed layout, built here with numpy: two
padded residues, a padded MSA row, one full and one partial template, and a fresh MSA
sample in each recycling slice. Weights are random and non-zero everywhere (AlphaFold's
zero-initialised layers would hide most gradients). Covered: gradients (with and without
remat), a traced recycling count under one compilation, bfloat16 drift (printed: pytest -s),
dropout keys, and the check of `prev`. Compiled functions are shared at module level.
"""

import functools

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxfold.common import residue_constants as rc
from jaxfold.model import config
from jaxfold.model.alphafold import AlphaFold, initial_prev
from jaxfold.model.global_config import GlobalConfig

N_RES, N_REAL, N_SEQ, N_EXTRA = 12, 10, 4, 6
# Two templates: the second covers only part of the chain.
TEMPLATE_COVERAGE = (N_REAL, 6)
# Slices of the leading axis: enough for num_recycle = 2, each a fresh MSA sample.
N_SLICES = 3
MODEL = config.reduced(config.preset('model_1_ptm'), num_recycle=1).model


def _one_hot(indices: np.ndarray, depth: int) -> np.ndarray:
  return np.eye(depth, dtype=np.float32)[indices]


def _deletion_value(deletions: np.ndarray) -> np.ndarray:
  # AlphaFold's squashing of deletion counts into [0, 1).
  return (np.arctan(deletions / 3.0) * (2.0 / np.pi)).astype(np.float32)


def _atoms_near_trace(rng: np.random.Generator, aatype: np.ndarray, ca: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
  """atom37 positions [N, 37, 3] scattered ~1.5 Å around a Cα trace, and their mask."""
  mask = rc.restype_atom37_mask[aatype].astype(np.float32)
  positions = ca[:, None, :] + 1.5 * rng.standard_normal((len(aatype), 37, 3))
  positions[:, rc.atom_order['CA']] = ca
  return (positions * mask[..., None]).astype(np.float32), mask


def synthetic_batch(seed: int = 0) -> dict[str, np.ndarray]:
  """AlphaFold's processed features: leading axis N_SLICES, residues past N_REAL padding."""
  rng = np.random.default_rng(seed)
  seq_mask = (np.arange(N_RES) < N_REAL).astype(np.float32)
  aatype = np.where(seq_mask > 0, rng.integers(0, 20, N_RES), 0).astype(np.int32)
  # A Cα trace with 3.8 Å steps in random directions.
  steps = rng.standard_normal((N_RES, 3))
  ca = np.cumsum(rc.ca_ca * steps / np.linalg.norm(steps, axis=-1, keepdims=True), axis=0)

  t_aatype, t_pos, t_mask, t_pb, t_pb_mask = [], [], [], [], []
  for covered in TEMPLATE_COVERAGE:
    pos, mask = _atoms_near_trace(rng, aatype, ca + rng.standard_normal(ca.shape))
    mask[covered:] = 0.0
    t_aatype.append(aatype)
    t_pos.append(pos * mask[..., None])
    t_mask.append(mask)
    # Pseudo-β: Cβ, Cα for glycine.
    atom = np.where(aatype == rc.restype_order['G'], rc.atom_order['CA'], rc.atom_order['CB'])
    t_pb.append(np.take_along_axis(pos, atom[:, None, None], axis=1)[:, 0])
    t_pb_mask.append(np.take_along_axis(mask, atom[:, None], axis=1)[:, 0])

  def msa_sample():
    msa = rng.integers(0, 21, (N_SEQ, N_RES))
    msa[0] = aatype
    deletions = rng.poisson(0.3, (N_SEQ, N_RES)).astype(np.float32)
    profile = _one_hot(rng.integers(0, 21, (N_SEQ, N_RES)), 23).mean(axis=0)
    msa_mask = np.ones((N_SEQ, N_RES), np.float32)
    msa_mask[-1] = 0.0  # a padding row
    extra = rng.integers(0, 22, (N_EXTRA, N_RES))
    extra_deletions = rng.poisson(0.3, (N_EXTRA, N_RES)).astype(np.float32)
    msa_feat = np.concatenate([
        _one_hot(msa, 23), (deletions > 0)[..., None], _deletion_value(deletions)[..., None],
        np.broadcast_to(profile, (N_SEQ, N_RES, 23)),
        np.broadcast_to(_deletion_value(deletions.mean(axis=0))[:, None], (N_SEQ, N_RES, 1)),
    ], axis=-1)
    return {
        'msa_feat': msa_feat * seq_mask[None, :, None],
        'msa_mask': msa_mask * seq_mask,
        'extra_msa': extra.astype(np.int32),
        'extra_has_deletion': (extra_deletions > 0).astype(np.float32),
        'extra_deletion_value': _deletion_value(extra_deletions),
        'extra_msa_mask': np.ones((N_EXTRA, N_RES), np.float32) * seq_mask,
    }

  fixed = {
      'aatype': aatype,
      'residue_index': np.arange(N_RES, dtype=np.int32),
      'seq_mask': seq_mask,
      'target_feat': np.concatenate([np.zeros((N_RES, 1), np.float32), _one_hot(aatype, 21)],
                                    axis=-1) * seq_mask[:, None],
      'template_aatype': np.stack(t_aatype).astype(np.int32),
      'template_all_atom_positions': np.stack(t_pos).astype(np.float32),
      'template_all_atom_masks': np.stack(t_mask).astype(np.float32),
      'template_mask': np.ones(len(TEMPLATE_COVERAGE), np.float32),
      'template_pseudo_beta': np.stack(t_pb).astype(np.float32),
      'template_pseudo_beta_mask': np.stack(t_pb_mask).astype(np.float32),
      'atom14_atom_exists': rc.restype_atom14_mask[aatype] * seq_mask[:, None],
      'atom37_atom_exists': rc.restype_atom37_mask[aatype] * seq_mask[:, None],
      'residx_atom14_to_atom37': rc.restype_atom14_to_atom37[aatype],
      'residx_atom37_to_atom14': rc.restype_atom37_to_atom14[aatype],
  }
  samples = [msa_sample() for _ in range(N_SLICES)]
  batch = {k: np.stack([v] * N_SLICES) for k, v in fixed.items()}
  batch.update({k: np.stack([s[k] for s in samples]) for k in samples[0]})
  return batch


def random_params(batch: dict[str, np.ndarray], seed: int = 0) -> dict:
  """Random weights for MODEL, from its parameter shapes only (nothing is compiled).

  LayerNorm scales and gate biases around one, everything else around zero; noise
  1/sqrt(fan-in) for matrices, 0.1 for vectors, so no layer is zero.
  """
  shapes = jax.eval_shape(AlphaFold(MODEL).init, jax.random.key(0), batch)['params']
  rng = np.random.default_rng(seed)

  def leaf(path, shape):
    centre = 1.0 if path[-1].key in ('scale', 'gating_b') else 0.0
    scale = 1.0 / np.sqrt(np.prod(shape.shape[:-1])) if len(shape.shape) >= 2 else 0.1
    return jnp.asarray(centre + scale * rng.standard_normal(shape.shape), shape.dtype)

  return jax.tree_util.tree_map_with_path(leaf, shapes)


@pytest.fixture(scope='module')
def batch():
  return synthetic_batch()


@pytest.fixture(scope='module')
def params(batch):
  return random_params(batch)


# One entry per trace of the float32 forward pass; a traced recycling count adds only one.
_TRACES: list[None] = []


@jax.jit
def _forward(params, batch, num_recycle, prev):
  _TRACES.append(None)
  return AlphaFold(MODEL).apply({'params': params}, batch, num_recycle=num_recycle, prev=prev)


def _count(n: int) -> jax.Array:
  return jnp.asarray(n, jnp.int32)


def _zeros_prev() -> dict[str, jax.Array]:
  return initial_prev(N_RES, MODEL)


@pytest.fixture(scope='module')
def float32_outputs(params, batch):
  """MODEL's float32 outputs, its recycling count traced; deterministic, so no RNG given."""
  return jax.tree.map(np.asarray, _forward(params, batch, _count(MODEL.num_recycle),
                                           _zeros_prev()))


def _loss(out) -> jax.Array:
  return (jnp.sum(out['structure_module']['final_atom_positions'])
          + jnp.mean(out['predicted_lddt']['logits']))


@functools.lru_cache(maxsize=None)
def _grad_fn(use_remat: bool):
  """(gradient w.r.t. the parameters, outputs): MODEL.num_recycle as a Python int."""
  model = AlphaFold(MODEL, GlobalConfig(use_remat=use_remat))

  def loss(params, batch):
    out = model.apply({'params': params}, batch, num_recycle=MODEL.num_recycle)
    return _loss(out), out
  return jax.jit(jax.grad(loss, has_aux=True))


@pytest.fixture(scope='module')
def remat_run(params, batch):
  return jax.tree.map(np.asarray, _grad_fn(True)(params, batch))


def _flat(tree) -> dict[str, np.ndarray]:
  return {jax.tree_util.keystr(path, simple=True, separator='/'): leaf
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def test_gradient_with_remat_reaches_trunk_and_structure_module(remat_run):
  grads = _flat(remat_run[0])
  assert all(np.all(np.isfinite(g)) for g in grads.values())
  for part in ('evoformer/evoformer_iteration/', 'evoformer/extra_msa_stack/',
               'evoformer/template_embedding/', 'structure_module/'):
    names = [k for k in grads if part in k]
    assert names, part
    zero = [k for k in names if not np.any(grads[k])]
    assert not zero, f'no gradient reaches {zero}'
  # The loss reads neither the distogram nor the masked-MSA head.
  for head in ('distogram_head/', 'masked_msa_head/'):
    assert not any(np.any(g) for k, g in grads.items() if head in k), head


# Rematerialisation recomputes the same operations, but XLA fuses the two programs
# differently, so gradients agree to float32 rounding of their own magnitude. Leaves whose
# true gradient is ~0 (e.g. a LayerNorm offset that only shifts softmax logits) hold rounding
# noise alone: their error is measured against the largest gradient of their module.
REMAT_RTOL = 1e-4


@pytest.mark.slow  # a second whole-model backward compilation: 1-2 min on 2 CPU cores
def test_remat_changes_no_gradient(params, batch, remat_run):
  plain_grads, plain_out = jax.tree.map(np.asarray, _grad_fn(False)(params, batch))
  plain, remat = _flat(plain_grads), _flat(remat_run[0])
  assert plain.keys() == remat.keys()
  module_scale: dict[str, float] = {}
  for key, g in plain.items():
    module = key.rsplit('/', 2)[0]
    module_scale[module] = max(module_scale.get(module, 0.0), float(np.abs(g).max()))
  for key, g in plain.items():
    scale = max(float(np.abs(g).max()), 1e-2 * module_scale[key.rsplit('/', 2)[0]])
    error = float(np.abs(remat[key] - g).max())
    assert error <= REMAT_RTOL * scale, f'{key}: max|Δ| {error:.3g}, scale {scale:.3g}'
  np.testing.assert_allclose(remat_run[1]['structure_module']['final_atom_positions'],
                             plain_out['structure_module']['final_atom_positions'],
                             rtol=0, atol=1e-4)


def test_traced_recycling_count_compiles_once(params, batch, float32_outputs, remat_run):
  # float32_outputs traced _forward (count 1); counts 0 and 2 reuse that compilation.
  assert len(_TRACES) == 1
  prev = _zeros_prev()
  traced = {n: jax.tree.map(np.asarray, _forward(params, batch, _count(n), prev))
            for n in (0, 2)}
  assert len(_TRACES) == 1
  # The traced count runs what the Python int (compiled into the gradient function) runs.
  python_int = remat_run[1]
  np.testing.assert_allclose(float32_outputs['structure_module']['final_atom_positions'],
                             python_int['structure_module']['final_atom_positions'],
                             rtol=0, atol=1e-4)
  np.testing.assert_allclose(float32_outputs['confidence']['plddt'],
                             python_int['confidence']['plddt'], rtol=0, atol=1e-3)
  positions = {n: out['structure_module']['final_atom_positions'] for n, out in traced.items()}
  assert not np.allclose(positions[0], positions[2], atol=1e-2)

  # Recycling by hand: iteration r reads slice r (rolled to the front) and the last 'prev'.
  out, prev = None, _zeros_prev()
  for r in range(N_SLICES):
    out = _forward(params, {k: np.roll(v, -r, axis=0) for k, v in batch.items()}, _count(0),
                   prev)
    prev = out['prev']
  np.testing.assert_allclose(out['structure_module']['final_atom_positions'], positions[2],
                             rtol=0, atol=1e-4)
  np.testing.assert_allclose(out['confidence']['plddt'], traced[2]['confidence']['plddt'],
                             rtol=0, atol=1e-3)
  assert len(_TRACES) == 1


# bfloat16 keeps 8 significand bits (relative rounding 2^-9 ~ 2e-3). Through 2 iterations of
# this reduced model it compounds to ~0.8% of the largest coordinate (0.25 Å) and 0.03 pLDDT
# points (measured, printed). The bounds leave ~6x headroom for other inputs; they catch
# gross failures (garbage from a bad cast, a dropped mask), not subtle precision loss.
POSITION_DRIFT_BOUND = 0.05  # max|Δ| / max|ref| over existing atoms
PLDDT_DRIFT_BOUND = 5.0  # pLDDT points (of 100) over real residues


@pytest.mark.slow  # ~110 s of compile; bfloat16 blocks and the bf16 train step cover it too
def test_bfloat16_runs_and_drift_is_measured(params, batch, float32_outputs):
  model = AlphaFold(MODEL, GlobalConfig(dtype='bfloat16'))
  out = jax.jit(lambda p, b: model.apply({'params': p}, b))(params, batch)
  out = jax.tree.map(np.asarray, out)
  positions = out['structure_module']['final_atom_positions']
  plddt = out['confidence']['plddt']
  for name, value in (('final_atom_positions', positions), ('plddt', plddt),
                      ('ptm', out['confidence']['ptm']),
                      ('distogram logits', out['distogram']['logits'])):
    assert value.dtype == np.float32, (name, value.dtype)
    assert np.all(np.isfinite(value)), name
  ref_positions = float32_outputs['structure_module']['final_atom_positions']
  exists = float32_outputs['structure_module']['final_atom_mask'] > 0
  position_drift = np.abs(positions - ref_positions)[exists].max()
  relative = position_drift / np.abs(ref_positions[exists]).max()
  real = batch['seq_mask'][0] > 0
  plddt_drift = np.abs(plddt - float32_outputs['confidence']['plddt'])[real].max()
  print(f'\nbfloat16 drift of the reduced model_1_ptm ({MODEL.num_recycle} recycle): '
        f'final_atom_positions max|Δ| {position_drift:.3g} Å (rel {relative:.3g}), '
        f'plddt max|Δ| {plddt_drift:.3g}')
  assert relative < POSITION_DRIFT_BOUND and plddt_drift < PLDDT_DRIFT_BOUND


@jax.jit
def _forward_with_dropout(params, batch, key):
  return AlphaFold(MODEL).apply({'params': params}, batch, deterministic=False,
                                rngs={'dropout': key})


@pytest.mark.slow  # ~130 s of compile; per-module dropout is checked in the fast tier
def test_dropout_follows_its_key(params, batch, float32_outputs):
  def positions(key):
    out = _forward_with_dropout(params, batch, jax.random.key(key))
    return np.asarray(out['structure_module']['final_atom_positions'])

  first, again, other = positions(0), positions(0), positions(1)
  np.testing.assert_array_equal(first, again)
  assert not np.allclose(first, other, atol=1e-3)
  assert not np.allclose(first, float32_outputs['structure_module']['final_atom_positions'],
                         atol=1e-3)
  # Deterministic runs need no RNG (float32_outputs got none); dropout without one fails.
  with pytest.raises(flax.errors.InvalidRngError):
    jax.eval_shape(lambda p, b: AlphaFold(MODEL).apply({'params': p}, b, deterministic=False),
                   params, batch)


def test_prev_with_wrong_keys_is_rejected(params, batch):
  prev = _zeros_prev()
  missing = {k: v for k, v in prev.items() if k != 'prev_pair'}
  with pytest.raises(ValueError, match='prev_pair'):
    AlphaFold(MODEL).apply({'params': params}, batch, prev=missing)
  extra = {**prev, 'prev_extra': prev['prev_pos']}
  with pytest.raises(ValueError, match='prev_extra'):
    AlphaFold(MODEL).apply({'params': params}, batch, prev=extra)
