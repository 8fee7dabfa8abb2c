"""Files that appear whole or not at all: written beside their target, then renamed over it."""

import contextlib
import os
import pathlib
import uuid
from collections.abc import Iterator
from typing import IO


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = 'wb') -> Iterator[IO]:
  """Opens a temporary file beside `path`; on success it is synced and renamed to `path`.

  On any error the temporary file is removed and `path` is untouched. The file gets the
  permissions of any new file (0666 less the umask), not mkstemp's 0600.
  """
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
  except BaseException:
    temporary.unlink(missing_ok=True)
    raise
