"""The README's quick start and Python snippet run as written (slow: two full-size predictions
of query73, about 3 minutes on 2 cores).

They run in a fresh folder beside a link `../shared` to the shared data, with this
environment's `jaxfold` on PATH; the quick start's install and activate lines are the only ones
left out (this environment is what they make).
"""

import os
import pathlib
import re
import subprocess
import sys

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / 'README.md'


def _block(section: str, language: str) -> str:
  """The first ```language block after the heading or line starting `section`."""
  text = README.read_text()
  start = text.index(section)
  match = re.compile(rf'```{language}\n(.*?)```', re.DOTALL).search(text, start)
  return match.group(1)


@pytest.fixture(scope='module')
def folder(tmp_path_factory, shared_dir) -> pathlib.Path:
  root = tmp_path_factory.mktemp('readme')
  (root / 'shared').symlink_to(shared_dir)
  (root / 'work').mkdir()
  return root / 'work'


@pytest.mark.slow
def test_the_quick_start_runs_as_written(folder):
  lines = [line for line in _block('## Quick start', 'bash').splitlines()
           if not line.startswith(('python3 -m venv', 'source '))]
  environment = dict(os.environ, PATH=f'{pathlib.Path(sys.executable).parent}:'
                                       f'{os.environ["PATH"]}')
  done = subprocess.run(['bash', '-euo', 'pipefail', '-c', '\n'.join(lines)], cwd=folder,
                        env=environment, capture_output=True, text=True, timeout=900)
  assert done.returncode == 0, done.stderr
  written = sorted(p.name for p in (folder / 'out').iterdir())
  assert written == ['confidence.json', 'outputs.npz', 'query_confidence.png',
                     'query_unrelaxed.cif', 'query_unrelaxed.pdb']
  assert (folder / 'glucagon_relaxed.pdb').read_text().startswith(('MODEL', 'ATOM', 'REMARK'))


@pytest.mark.slow
def test_the_python_snippet_runs_as_written(folder):
  if not (folder / 'params_model_1_ptm.npz').exists():  # the quick start's weights
    subprocess.run([str(pathlib.Path(sys.executable).parent / 'jaxfold'), '--quiet', 'convert',
                    '--random', '--preset', 'model_1_ptm', 'params_model_1_ptm.npz'],
                   cwd=folder, check=True)
  done = subprocess.run([sys.executable, '-c', _block('In Python', 'python')], cwd=folder,
                        capture_output=True, text=True, timeout=900)
  assert done.returncode == 0, done.stderr
  assert done.stdout.startswith('(73, 37, 3) '), done.stdout
  assert (folder / 'out_python' / 'query_unrelaxed.pdb').is_file()
