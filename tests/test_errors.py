"""jaxfold.common.errors and the CLI's error lines: bad input is one `jaxfold: error:` line and
exit 2, a fault of jaxfold one line naming the exception and where (exit 1), and a write that
fails (a full disk) names its file and leaves nothing."""

import errno

import pytest

from jaxfold import cli
from jaxfold.common.atomic_file import atomic_write
from jaxfold.common.errors import JaxfoldError, described_os_error


def test_a_failed_write_names_its_file_and_leaves_nothing(tmp_path):
  target = tmp_path / 'out.json'
  with pytest.raises(OSError, match=rf'No space left on device: .{target}.') as caught:
    with atomic_write(target, 'w') as f:
      f.write('{')
      raise OSError(errno.ENOSPC, 'No space left on device')  # as a full disk's write does
  assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(target)
  assert list(tmp_path.iterdir()) == []
  with pytest.raises(OSError, match=f'^{target}: disk full$'):
    with atomic_write(target) as f:
      raise OSError('disk full')
  assert list(tmp_path.iterdir()) == []


def test_an_os_error_that_names_a_file_is_kept():
  error = FileNotFoundError(errno.ENOENT, 'No such file or directory', '/a/b')
  assert described_os_error(error, '/elsewhere') is error


def _run(monkeypatch, capsys, error, *flags):
  def fail(args):
    raise error
  monkeypatch.setattr(cli, '_plan', fail)
  status = cli.main([*flags, 'plan', '--preset', 'model_1', '--length', '64'])
  return status, capsys.readouterr().err


@pytest.mark.parametrize('error', [JaxfoldError('x.a3m: line 3: not a sequence'),
                                   ValueError('x.a3m: line 3: not a sequence'),
                                   FileNotFoundError(errno.ENOENT, 'No such file', 'x.a3m')])
def test_bad_input_is_one_line_and_exit_2(monkeypatch, capsys, error):
  status, err = _run(monkeypatch, capsys, error)
  assert status == 2
  assert err.count('\n') == 1 and err.startswith('jaxfold: error: ') and 'x.a3m' in err, err


def test_a_fault_is_one_line_naming_the_exception_and_where(monkeypatch, capsys):
  status, err = _run(monkeypatch, capsys, IndexError('list index out of range'))
  assert status == 1
  assert err.count('\n') == 1, err
  assert err.startswith('jaxfold: error: IndexError at ') and 'test_errors.py:' in err, err
  assert 'list index out of range' in err and '--debug' in err and 'Traceback' not in err
  status, err = _run(monkeypatch, capsys, IndexError('list index out of range'), '--debug')
  assert status == 1 and 'Traceback (most recent call last)' in err
  assert err.splitlines()[-1].startswith('jaxfold: error: IndexError at ')
