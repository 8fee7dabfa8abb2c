"""The real OpenFold model run on a fixture's inputs, its modules recorded with forward hooks.

The `--live` counterpart of a fixture's outputs.npz (shared/fixtures/openfold/README.md):
OpenFold is built from the manifest's preset and config changes, loaded with the given
state dict (strict), and run in eval mode, float32, without gradients, on the inputs in
OpenFold's layout (recycling axis last). Forward hooks copy each module's return value
at the moment it returns, before OpenFold's in-place updates change it, under outputs.npz's
keys:
- `iter<r>/<module>` in recycling iteration r, for the embedders, the template embedder
  and its parts, the extra-MSA stack, the Evoformer stack (m, z, s), its blocks 0, 1,
  N/2 - 1 and N - 1 (m, z), block 0's sub-modules (their updates as OpenFold returns them,
  mostly before the residual add) and the structure module's dict;
- `final/aux_heads/*` and `final/<name>`: the heads and the dict `forward` returns.
A tuple is split as `<key>/0`, `<key>/1`, ...; a dict as `<key>/<name>`. Every value is
stored, so no output_aliases are needed; a fixture that recorded only some iterations
(model_1_ptm_full) gets a superset of its keys. Values are float32, as in outputs.npz.
OpenFold is imported only inside `record_outputs`; jaxfold does not depend on it.
"""

import importlib
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxfold.common.errors import JaxfoldError

# Recorded in every recycling iteration (OpenFold's module names).
_MODULES = ('input_embedder', 'recycling_embedder', 'template_embedder',
            'template_embedder.template_pair_embedder', 'template_embedder.template_pair_stack',
            'template_embedder.template_pointwise_att',
            'template_embedder.template_single_embedder', 'extra_msa_embedder',
            'extra_msa_stack', 'evoformer', 'structure_module')
# Evoformer block 0's sub-modules, recorded as well.
_BLOCK_PARTS = ('msa_att_row', 'msa_att_col', 'msa_transition', 'outer_product_mean',
                'pair_stack', 'pair_stack.tri_mul_out', 'pair_stack.tri_mul_in',
                'pair_stack.tri_att_start', 'pair_stack.tri_att_end',
                'pair_stack.pair_transition')


def _import_error() -> str | None:
  """Why OpenFold's model and config cannot be imported, or None when they can."""
  try:
    for name in ('openfold.config', 'openfold.model.model'):
      importlib.import_module(name)
  except ImportError as error:
    return f'{type(error).__name__}: {error}'
  return None


def available() -> bool:
  """Whether OpenFold's model (openfold.model.model.AlphaFold) and config import."""
  return _import_error() is None


def _recorded_blocks(num_blocks: int) -> list[int]:
  """The Evoformer blocks the fixtures record: 0, 1, the middle one and the last."""
  return sorted({b for b in (0, 1, num_blocks // 2 - 1, num_blocks - 1) if 0 <= b < num_blocks})


def _config(manifest: Mapping[str, Any]):
  """OpenFold's config for the manifest's preset with its model and globals changes."""
  from openfold.config import model_config  # pylint: disable=import-outside-toplevel
  config = model_config(manifest['preset'], train=bool(manifest.get('train', False)))
  for key, value in manifest.get('config_changes', {}).items():
    if key == 'raw_feature_crop' or key.startswith('data.'):
      continue  # these shaped the recorded inputs, not the network
    *path, name = key.split('.')
    node = config
    for part in path:
      node = node[part]
    node[name] = value  # a shared FieldReference (globals.c_z, ...) updates every user
  return config


def _store(key: str, value: Any, out: dict[str, np.ndarray]) -> None:
  """Copies a module's return value (tensor, tuple or dict of them) into out as float32."""
  import torch  # pylint: disable=import-outside-toplevel
  if isinstance(value, torch.Tensor):
    out[key] = value.detach().to(torch.float32).numpy().copy()
  elif isinstance(value, (tuple, list)):
    for i, item in enumerate(value):
      _store(f'{key}/{i}', item, out)
  elif isinstance(value, Mapping):
    for name, item in value.items():
      _store(f'{key}/{name}', item, out)


def record_outputs(manifest: Mapping[str, Any], inputs: Mapping[str, np.ndarray],
                   state_dict: Mapping[str, np.ndarray]
                   ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
  """Runs OpenFold's AlphaFold.forward once and records the fixture's module outputs.

  Args:
    manifest: a fixture's manifest.json ('preset', 'config_changes', optional 'train').
    inputs: the processed batch in OpenFold's layout, recycling axis last (inputs.npz).
    state_dict: OpenFold's weights as numpy arrays keyed by OpenFold's names.

  Returns:
    (outputs, aliases): outputs keyed as outputs.npz (module docstring); aliases is {}.

  Raises:
    JaxfoldError: the openfold package is not importable.
  """
  error = _import_error()
  if error:
    raise JaxfoldError(f'the openfold package is not importable ({error}); put an OpenFold '
                       'checkout (commit ce0029e1) and torch on PYTHONPATH')
  # pylint: disable=import-outside-toplevel
  import torch
  from openfold.model.model import AlphaFold

  config = _config(manifest)
  model = AlphaFold(config).to(torch.float32)
  model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state_dict.items()},
                        strict=True)
  model.eval()

  outputs: dict[str, np.ndarray] = {}
  state = {'prefix': '', 'iteration': 0}

  def next_iteration(module, args):
    del module, args
    state['prefix'] = f'iter{state["iteration"]}/'
    state['iteration'] += 1

  def recorder(name: str, prefix: str | None = None):
    def hook(module, args, output):
      del module, args
      _store((state['prefix'] if prefix is None else prefix) + name, output, outputs)
    return hook

  modules = dict(model.named_modules())
  names = (list(_MODULES) + [f'evoformer.blocks.0.{part}' for part in _BLOCK_PARTS]
           + [f'evoformer.blocks.{b}' for b in _recorded_blocks(len(model.evoformer.blocks))])
  handles = [modules['input_embedder'].register_forward_pre_hook(next_iteration),
             modules['aux_heads'].register_forward_hook(recorder('aux_heads', 'final/'))]
  # A module the config leaves out (templates off, ...) is not recorded.
  handles += [modules[n].register_forward_hook(recorder(n)) for n in names if n in modules]
  batch = {k: torch.from_numpy(np.asarray(v, np.int64 if np.issubdtype(v.dtype, np.integer)
                                          else np.float32))
           for k, v in inputs.items()}
  try:
    with torch.no_grad(), warnings.catch_warnings():
      # Newer torch deprecates calls OpenFold makes in every layer (list indexing, ...).
      warnings.filterwarnings('ignore', module=r'openfold\.')
      final = model(batch)
  finally:
    for handle in handles:
      handle.remove()
  _store('final', final, outputs)
  return outputs, {}
