"""Files that appear whole or not at all: written beside their target, then renamed over it;
on object storage (gs://, s3://) written in one upload, which publishes an object whole."""

import contextlib
import importlib.util
import io
import os
import pathlib
import uuid
from collections.abc import Iterator
from typing import IO

from etils import epath

from jaxfold.common.errors import described_os_error

# Object storage epath reaches through fsspec, and the package that gives fsspec each scheme.
_REMOTE_PACKAGES = {'gs://': 'gcsfs', 's3://': 's3fs', 'az://': 'adlfs'}


def is_remote(path: str | os.PathLike) -> bool:
  """Whether `path` names object storage (gs://, s3://, az://) rather than a local file."""
  return os.fspath(path).startswith(tuple(_REMOTE_PACKAGES))


def run_path(path: str | os.PathLike) -> epath.Path:
  """`path` as an epath.Path: local paths made absolute, object-storage URLs as they are.

  Raises:
    ValueError: `path` is on object storage whose fsspec package is not installed.
  """
  if not is_remote(path):
    return epath.Path(pathlib.Path(path).absolute())
  package = next(p for scheme, p in _REMOTE_PACKAGES.items() if os.fspath(path).startswith(scheme))
  if importlib.util.find_spec(package) is None:
    raise ValueError(f'{os.fspath(path)}: object storage needs the {package} package (for gs://: '
                     "pip install 'jaxfold[tpu]')")
  return epath.Path(path)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = 'wb') -> Iterator[IO]:
  """Opens a temporary file beside `path`; on success it is synced and renamed to `path`.

  On any error the temporary file is removed and `path` is untouched. The file gets the
  permissions of any new file (0666 less the umask), not mkstemp's 0600. On object storage
  the content is collected in memory and uploaded once at the end.
  """
  if is_remote(path):
    buffer = io.BytesIO() if 'b' in mode else io.StringIO()
    yield buffer
    target = epath.Path(path)
    if 'b' in mode:
      target.write_bytes(buffer.getvalue())
    else:
      target.write_text(buffer.getvalue())
    return
  path = pathlib.Path(path)
  if not path.parent.is_dir():
    raise FileNotFoundError(f'{path}: its directory {path.parent} does not exist')
  temporary = path.with_name(f'.{path.name}.{uuid.uuid4().hex[:12]}.tmp')
  try:
    with os.fdopen(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), mode) as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.replace(temporary, path)
  except OSError as e:  # a full disk names no file: name the one being written
    temporary.unlink(missing_ok=True)
    raise described_os_error(e, path) from e
  except BaseException:
    temporary.unlink(missing_ok=True)
    raise
