"""The live OpenFold recorder against the recorded small fixture (shared/fixtures/openfold/small).

Runs only where OpenFold imports (an OpenFold checkout and torch on PYTHONPATH, plus a CPU
stand-in for its compiled softmax kernel); elsewhere it is skipped. Same code, weights and
inputs as the recording: the outputs agree to float32 rounding of a different CPU's kernels.
"""

import numpy as np
import pytest

pytest.importorskip('openfold.model.model')
torch = pytest.importorskip('torch')

# pylint: disable=wrong-import-position
from jaxfold.common.errors import JaxfoldError
from jaxfold.convert.openfold_keys import rule_weights
from jaxfold.parity import openfold_fixture, openfold_live
from jaxfold.parity.agreement import Agreement, agreement

TOLERANCE = 1e-5  # max|Δ| / max|ref|


def _agreement(key: str, ours: dict[str, np.ndarray], fixture: openfold_fixture.Fixture
               ) -> Agreement:
  """max|Δ| / max|ref| of one key; normalised angles weighted by their vector's length.

  OpenFold's `angles` are its unnormalised (sin, cos) vectors divided by their length, so
  a short vector (|u| ~ 0.005 here) turns rounding of u into a 1/|u| larger error of the
  direction. Weighted by |u| the error is that of u itself, on u's scale.
  """
  if not key.endswith('/angles'):
    return agreement(key, ours[key], fixture.output(key))[0]
  length = np.linalg.norm(fixture.output(key.replace('/angles', '/unnormalized_angles')),
                          axis=-1, keepdims=True).astype(np.float64)
  error = np.abs(ours[key].astype(np.float64) - fixture.output(key)) * length
  return Agreement(key + ' (x |unnormalized|)', float(error.max()), float(length.max()))


@pytest.fixture
def one_torch_thread():
  # The small model gains nothing from threads, and on a busy machine torch's threads
  # wait on one another (seconds become a minute); the results do not depend on them.
  threads = torch.get_num_threads()
  torch.set_num_threads(1)
  yield
  torch.set_num_threads(threads)


@pytest.mark.usefixtures('one_torch_thread')
def test_live_openfold_reproduces_the_small_recording(shared_dir):
  fixture = openfold_fixture.load_fixture(shared_dir / 'fixtures/openfold/small')
  ours, aliases = openfold_live.record_outputs(
      fixture.manifest, fixture.inputs, rule_weights(fixture.manifest['state_dict']))
  ours = {**ours, **{k: ours[v] for k, v in aliases.items()}}
  expected = set(fixture.outputs) | set(fixture.aliases)
  assert not expected - ours.keys(), f'not recorded: {sorted(expected - ours.keys())}'
  shapes = {k: (ours[k].shape, fixture.output(k).shape) for k in expected
            if ours[k].shape != fixture.output(k).shape}
  assert not shapes, f'shapes (ours, recorded) differ: {shapes}'

  rows = sorted((_agreement(k, ours, fixture) for k in sorted(expected)),
                key=lambda r: r.relative, reverse=True)
  print(f'\n{len(rows)} keys; worst 5:')
  for row in rows[:5]:
    print(row.row())
  bad = [r.row() for r in rows if not r.relative <= TOLERANCE]
  assert not bad, f'beyond {TOLERANCE:g}:\n' + '\n'.join(bad)


def test_unavailable_openfold_is_a_clear_error(monkeypatch):
  monkeypatch.setattr(openfold_live, '_import_error', lambda: 'ModuleNotFoundError: openfold')
  assert not openfold_live.available()
  with pytest.raises(JaxfoldError, match='the openfold package is not importable'):
    openfold_live.record_outputs({}, {}, {})


@pytest.mark.usefixtures('one_torch_thread')
def test_parity_openfold_live_command(shared_dir, tmp_path, capsys):
  """`jaxfold parity openfold --live`: jaxfold against OpenFold run now, every row passes."""
  from jaxfold import cli  # pylint: disable=import-outside-toplevel
  report = tmp_path / 'live.json'
  status = cli.main(['--quiet', 'parity', 'openfold', '--live', '--fixture',
                     str(shared_dir / 'fixtures/openfold/small'), '--report', str(report)])
  out = capsys.readouterr().out
  print(out)
  assert status == 0, out
  assert out.startswith('jaxfold vs OpenFold (live, on the inputs of ')
  document = report.read_text()
  assert '"passed": true' in document and 'end to end/final_atom_positions' in document
