"""Between Haiku's flat parameter dict and jaxfold's nested Flax tree.

Haiku keys a parameter by module path and name: {'a/b/c': {'weights': w}}. jaxfold's
tree nests the same path: {'a': {'b': {'c': {'weights': w}}}}. The two hold the same
arrays, so conversion is a re-nesting and never a reshape (DESIGN.md, "Parameter tree").
"""

from collections.abc import Mapping
from typing import Any

from jaxfold.common.errors import JaxfoldError


def from_haiku(params: Mapping[str, Mapping[str, Any]], root: str | None = None) -> dict:
  """Nests Haiku's {'module/path': {name: array}} dict; `root` picks one top-level subtree."""
  tree: dict = {}
  for path, leaves in params.items():
    node = tree
    for part in path.split('/'):
      node = node.setdefault(part, {})
    for name, value in leaves.items():
      if name in node:
        raise ValueError(f'parameter {path}//{name} collides with a submodule of that name')
      node[name] = value
  if root is None:
    return tree
  if root not in tree:
    raise JaxfoldError(f'no parameters under {root!r}; top-level modules: {sorted(tree)}')
  return tree[root]


def to_haiku(tree: Mapping[str, Any], root: str | None = None) -> dict[str, dict[str, Any]]:
  """Inverse of `from_haiku`: a leaf's module path is the path of dicts above it."""
  flat: dict[str, dict[str, Any]] = {}

  def visit(node: Mapping[str, Any], path: tuple[str, ...]) -> None:
    for key, value in node.items():
      if isinstance(value, Mapping):
        visit(value, path + (key,))
      else:
        flat.setdefault('/'.join(path), {})[key] = value

  visit(tree, (root,) if root else ())
  return flat
