"""How a `jaxfold` command must fail on bad input, checked the same way by every CLI test."""

import os
import re

from jaxfold import cli

PROGRESS_LINE = re.compile(r'\[\s*\d+\.\ds\] \S')
ERROR_PREFIX = 'jaxfold: error: '


def assert_fails(capsys, argv: list, names: str | os.PathLike) -> str:
  """Runs `argv` in process and returns its error line, after checking the failure: exit
  status 2, nothing on stdout, one `jaxfold: error:` line naming `names`, last, and only
  progress lines before it."""
  status = cli.main([str(arg) for arg in argv])
  out, err = capsys.readouterr()
  lines = err.splitlines()
  assert status == 2, err
  assert out == ''
  errors = [line for line in lines if line.startswith(ERROR_PREFIX)]
  assert len(errors) == 1 and lines[-1] == errors[0], err
  assert all(PROGRESS_LINE.match(line) for line in lines[:-1]), err
  assert str(names) in errors[0], errors[0]
  return errors[0]
