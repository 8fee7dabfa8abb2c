"""jaxfold must import without the reference implementations (haiku, alphafold) installed."""

import subprocess
import sys

_SCRIPT = '''
import importlib, pkgutil, sys
sys.modules["haiku"] = None      # None makes any import of these fail
sys.modules["alphafold"] = None
import jaxfold
for info in pkgutil.walk_packages(jaxfold.__path__, "jaxfold."):
  importlib.import_module(info.name)
print("imported", sum(name.startswith("jaxfold") for name in sys.modules))
'''


def test_every_jaxfold_module_imports_without_haiku_or_alphafold():
  result = subprocess.run([sys.executable, '-c', _SCRIPT], capture_output=True, text=True,
                          check=False)
  assert result.returncode == 0, result.stderr
  assert int(result.stdout.split()[-1]) > 20
