"""The one error type of jaxfold's own failures: bad input, told in one line.

Every reader and checker raises `JaxfoldError` (or a subclass) with the file, key or value
it is about in the message; `jaxfold`'s `main()` prints it as one `jaxfold: error:` line and
exits 2. It is a ValueError, so callers that caught ValueError before still do.
"""

import os


class JaxfoldError(ValueError):
  """Input jaxfold cannot use; the message names the file, key or value and the problem."""


def described_os_error(error: OSError, path: str | os.PathLike) -> OSError:
  """`error` with `path` as its filename where it names none (a write that fails for a full
  disk names no file), so its message says where: '[Errno 28] No space left on device: path'."""
  if error.filename is not None:
    return error
  if error.errno is None:  # raised with a message only
    return type(error)(f'{os.fspath(path)}: {error}')
  return type(error)(error.errno, error.strerror or os.strerror(error.errno), os.fspath(path))
