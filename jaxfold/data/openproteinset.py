"""Readers of the OpenProteinSet / OpenFold training-data layout, and AF2's chain sampling weights.

OpenProteinSet ships one folder per PDB chain, `<root>/<pdb>_<chain>/`, holding that chain's
alignments (`*.a3m`, `*.sto`, `*.hhr`); the structures are `<mmcif_dir>/<pdb>.cif`. OpenFold
adds three files this module reads:
  - the chain-data cache, `{"<pdb>_<chain>": {"release_date", "seq", "resolution",
    "cluster_size"?}}`, and the mmCIF cache, `{"<pdb>": {"release_date", "chain_ids", "seqs",
    "resolution", "cluster_sizes"?, ...}}`;
  - the alignment database: `.db` files, each the plain concatenation of alignment files, and
    a JSON `.index` mapping `<pdb>_<chain>` to `{"db": db file name, "files": [[file name,
    byte start, byte size], ...]}` (OpenFold's `create_alignment_db_sharded.py`; the older
    per-db index of `create_alignment_db.py` maps a chain straight to its file list).
Several chains may share one entry (OpenProteinSet stores identical chains once).

`write_alignment_db` writes the sharded database from a folder tree; `sampling_probability`
gives the per-chain sampling weight of Jumper et al. (2021) Suppl. 1.2.5.

A self-distillation set (Suppl. 1.3) has predicted structures in place of mmCIF files: a
folder of `<chain>.pdb` files (or `<chain>_unrelaxed.pdb`, as `jaxfold predict` names them)
with the pLDDT in the B-factor column. `read_predicted_structure` reads one with OpenFold's
rule (data_pipeline.py, `make_pdb_features`): the atoms of a residue whose pLDDT is not above
`DISTILLATION_PLDDT_THRESHOLD` are left out of the ground truth.
"""

import dataclasses
import datetime
import json
import pathlib
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from jaxfold.common import protein as protein_lib
from jaxfold.common.errors import JaxfoldError

ALIGNMENT_SUFFIXES = ('.a3m', '.sto', '.hhr')
# A predicted structure's file in a structures folder, by preference: `<chain>.pdb`, then the
# name `jaxfold predict --name <chain>` gives it.
STRUCTURE_FILE_NAMES = ('{}.pdb', '{}_unrelaxed.pdb')
# OpenFold's `make_pdb_features(confidence_threshold=50.)`: a residue of a distillation
# structure keeps its atoms only if some atom's pLDDT (B-factor) is strictly above this.
DISTILLATION_PLDDT_THRESHOLD = 50.0

# Suppl. 1.2.5: a chain of N_res residues is kept with probability max(min(N_res, 512), 256)/512.
_LENGTH_WEIGHT_MIN = 256
_LENGTH_WEIGHT_MAX = 512


class OpenProteinSetError(JaxfoldError):
  """A file or entry of the OpenProteinSet / OpenFold layout is missing or malformed."""


class MissingChainError(OpenProteinSetError):
  """A chain has no alignment folder, index entry or cache entry."""


@dataclasses.dataclass(frozen=True)
class ChainMetadata:
  """What OpenFold's caches record for one chain."""
  chain_id: str  # '<pdb>_<chain>', e.g. '2q2k_A'
  release_date: datetime.date | None
  resolution: float | None  # Å; None when the entry has none (NMR)
  sequence: str  # SEQRES one-letter sequence
  cluster_size: int | None  # chains in its 40%-identity cluster; None when not recorded


def split_chain_id(chain_id: str) -> tuple[str, str]:
  """'2q2k_A' -> ('2q2k', 'A'); the PDB ID is everything before the last underscore."""
  pdb_id, sep, chain = chain_id.rpartition('_')
  if not sep or not pdb_id or not chain:
    raise OpenProteinSetError(f'chain ID {chain_id!r} is not of the form <pdb>_<chain>')
  return pdb_id, chain


def sampling_probability(sequence_length: int, cluster_size: int | None) -> float:
  """Probability of keeping a chain when sampled: Suppl. 1.2.5, as OpenFold computes it.

  The inverse of the chain's cluster size (so each cluster is seen about equally often) times
  the length acceptance max(min(N_res, 512), 256) / 512 (favouring long chains). A missing or
  non-positive cluster size (OpenFold writes -1 for unclustered chains) contributes no factor.
  """
  length_weight = max(min(sequence_length, _LENGTH_WEIGHT_MAX), _LENGTH_WEIGHT_MIN) / _LENGTH_WEIGHT_MAX
  if cluster_size is None or cluster_size <= 0:
    return length_weight
  return length_weight / cluster_size


def sampling_weights(chains: Sequence[ChainMetadata]) -> np.ndarray:
  """[N_chains] float64 Suppl. 1.2.5 weights, `sampling_probability` of each chain."""
  return np.array([sampling_probability(len(c.sequence), c.cluster_size) for c in chains],
                  dtype=np.float64)


def _parse_date(value: str | None, path: pathlib.Path, key: str) -> datetime.date | None:
  if value is None:
    return None
  try:
    return datetime.date.fromisoformat(value)
  except (TypeError, ValueError) as e:
    raise OpenProteinSetError(f'{path}: entry {key!r} has release_date {value!r}, '
                              'not YYYY-MM-DD') from e


def load_chain_cache(path: str | pathlib.Path) -> dict[str, ChainMetadata]:
  """Per-chain metadata from an OpenFold chain-data cache or mmCIF cache JSON.

  The format is told per entry: a chain-data entry has "seq", an mmCIF entry has
  "chain_ids" and "seqs" and is expanded to one record per chain.
  """
  path = pathlib.Path(path)
  try:
    raw = json.loads(path.read_text())
  except FileNotFoundError as e:
    raise OpenProteinSetError(f'cache file {path} does not exist') from e
  except json.JSONDecodeError as e:
    raise OpenProteinSetError(f'cache file {path} is not valid JSON: {e}') from e
  if not isinstance(raw, dict):
    raise OpenProteinSetError(f'cache file {path} holds a {type(raw).__name__}, not an object')
  chains = {}
  for key, entry in raw.items():
    date = _parse_date(entry.get('release_date'), path, key)
    resolution = entry.get('resolution')
    if 'seq' in entry:
      records = [(key, entry['seq'], entry.get('cluster_size'))]
    elif 'chain_ids' in entry and 'seqs' in entry:
      cluster_sizes = entry.get('cluster_sizes') or [None] * len(entry['chain_ids'])
      if not len(entry['seqs']) == len(cluster_sizes) == len(entry['chain_ids']):
        raise OpenProteinSetError(f'{path}: entry {key!r} has {len(entry["chain_ids"])} chain_ids '
                                  f'but {len(entry["seqs"])} seqs / {len(cluster_sizes)} cluster_sizes')
      records = [(f'{key}_{c}', s, n) for c, s, n in
                 zip(entry['chain_ids'], entry['seqs'], cluster_sizes)]
    else:
      raise OpenProteinSetError(f'{path}: entry {key!r} has neither "seq" (chain-data cache) nor '
                                '"chain_ids" and "seqs" (mmCIF cache)')
    for chain_id, seq, cluster_size in records:
      chains[chain_id] = ChainMetadata(
          chain_id=chain_id, release_date=date,
          resolution=None if resolution is None else float(resolution), sequence=seq,
          cluster_size=None if cluster_size is None else int(cluster_size))
  return chains


class AlignmentStore:
  """Alignment files of many chains: `chain_ids()`, `file_names(chain)`, `read_file(chain, name)`."""

  def chain_ids(self) -> list[str]:
    raise NotImplementedError

  def file_names(self, chain_id: str) -> list[str]:
    raise NotImplementedError

  def read_file(self, chain_id: str, file_name: str) -> bytes:
    raise NotImplementedError

  def read(self, chain_id: str) -> dict[str, bytes]:
    """Every alignment file of `chain_id`: file name -> contents."""
    return {name: self.read_file(chain_id, name) for name in self.file_names(chain_id)}


class AlignmentFolder(AlignmentStore):
  """OpenProteinSet's folder tree: `<root>/<pdb>_<chain>/<file>`."""

  def __init__(self, root: str | pathlib.Path):
    self.root = pathlib.Path(root)
    if not self.root.is_dir():
      raise OpenProteinSetError(f'alignment folder {self.root} does not exist')

  def chain_ids(self) -> list[str]:
    return sorted(p.name for p in self.root.iterdir() if p.is_dir())

  def chain_dir(self, chain_id: str) -> pathlib.Path:
    path = self.root / chain_id
    if not path.is_dir():
      raise MissingChainError(f'chain {chain_id}: no alignment folder {path}')
    return path

  def paths(self, chain_id: str) -> dict[str, pathlib.Path]:
    """Alignment files of `chain_id` (suffix in ALIGNMENT_SUFFIXES): file name -> path."""
    return {p.name: p for p in sorted(self.chain_dir(chain_id).iterdir())
            if p.is_file() and p.suffix in ALIGNMENT_SUFFIXES}

  def file_names(self, chain_id: str) -> list[str]:
    return list(self.paths(chain_id))

  def read_file(self, chain_id: str, file_name: str) -> bytes:
    path = self.chain_dir(chain_id) / file_name
    if not path.is_file():
      raise MissingChainError(f'chain {chain_id}: no alignment file {path}')
    return path.read_bytes()


class AlignmentDB(AlignmentStore):
  """OpenFold's alignment database: a JSON `.index` beside the `.db` files it names."""

  def __init__(self, index_path: str | pathlib.Path):
    self.index_path = pathlib.Path(index_path)
    try:
      raw = json.loads(self.index_path.read_text())
    except FileNotFoundError as e:
      raise OpenProteinSetError(f'alignment index {self.index_path} does not exist') from e
    except json.JSONDecodeError as e:
      raise OpenProteinSetError(f'alignment index {self.index_path} is not valid JSON: {e}') from e
    # The per-db index of create_alignment_db.py lists files only; its db is `<index stem>.db`.
    default_db = self.index_path.with_suffix('.db').name
    self._entries: dict[str, tuple[str, dict[str, tuple[int, int]]]] = {}
    for chain_id, entry in raw.items():
      try:
        db, files = (default_db, entry) if isinstance(entry, list) else (entry['db'], entry['files'])
        self._entries[chain_id] = (db, {name: (int(start), int(size)) for name, start, size in files})
      except (KeyError, TypeError, ValueError) as e:
        raise OpenProteinSetError(f'alignment index {self.index_path}: entry {chain_id!r} is not '
                                  '{"db": name, "files": [[name, start, size], ...]}') from e

  def chain_ids(self) -> list[str]:
    return sorted(self._entries)

  def _entry(self, chain_id: str) -> tuple[str, dict[str, tuple[int, int]]]:
    if chain_id not in self._entries:
      raise MissingChainError(f'chain {chain_id}: no entry in alignment index {self.index_path}')
    return self._entries[chain_id]

  def db_path(self, chain_id: str) -> pathlib.Path:
    return self.index_path.parent / self._entry(chain_id)[0]

  def file_names(self, chain_id: str) -> list[str]:
    return list(self._entry(chain_id)[1])

  def read_file(self, chain_id: str, file_name: str) -> bytes:
    files = self._entry(chain_id)[1]
    if file_name not in files:
      raise MissingChainError(f'chain {chain_id}: no file {file_name!r} in alignment index '
                              f'{self.index_path} (has {sorted(files)})')
    start, size = files[file_name]
    db_path = self.db_path(chain_id)
    try:
      # Opened per read, so a store handed to forked loader workers shares no file offset.
      with open(db_path, 'rb') as f:
        f.seek(start)
        data = f.read(size)
    except FileNotFoundError as e:
      raise OpenProteinSetError(f'chain {chain_id}: alignment db {db_path} does not exist') from e
    if len(data) != size:
      raise OpenProteinSetError(f'chain {chain_id}: {db_path} ends at byte {db_path.stat().st_size}, '
                                f'before the end of {file_name!r} [{start}, {start + size})')
    return data


def open_alignments(path: str | pathlib.Path) -> AlignmentStore:
  """An `AlignmentDB` for a `.index` file, an `AlignmentFolder` for a folder."""
  path = pathlib.Path(path)
  return AlignmentDB(path) if path.suffix == '.index' else AlignmentFolder(path)


def write_alignment_db(alignments: AlignmentStore, output_dir: str | pathlib.Path, name: str,
                       num_shards: int = 1, chain_ids: Iterable[str] | None = None) -> pathlib.Path:
  """Writes `<name>_<i>.db` (i < num_shards) and the super index `<name>.index`; returns its path.

  Chains (sorted) go to shards round-robin, as OpenFold's create_alignment_db_sharded.py does,
  and each chain's files follow one another in file-name order.
  """
  if num_shards < 1:
    raise OpenProteinSetError(f'alignment db {name!r}: num_shards must be >= 1, got {num_shards}')
  output_dir = pathlib.Path(output_dir)
  output_dir.mkdir(parents=True, exist_ok=True)
  chains = sorted(alignments.chain_ids() if chain_ids is None else chain_ids)
  index = {}
  for shard in range(num_shards):
    db_name = f'{name}_{shard}.db'
    offset = 0
    with open(output_dir / db_name, 'wb') as db:
      for chain_id in chains[shard::num_shards]:
        files = []
        for file_name in sorted(alignments.file_names(chain_id)):
          data = alignments.read_file(chain_id, file_name)
          db.write(data)
          files.append([file_name, offset, len(data)])
          offset += len(data)
        index[chain_id] = {'db': db_name, 'files': files}
  index_path = output_dir / f'{name}.index'
  index_path.write_text(json.dumps(index, sort_keys=True))
  return index_path


class OpenProteinSet:
  """One training set: alignments (folder tree or db), the mmCIF folder and the chain cache.

  `duplicate_groups` lists groups of identical chains (OpenProteinSet's
  `duplicate_pdb_chains.txt`, read by `read_duplicate_chains`), whose alignments are stored
  for one chain only: as in OpenFold, each group's first chain that has alignments stands
  for the others; a group with none is ignored. `structures_dir` holds predicted structures
  (`structure_path`), for a self-distillation set.
  """

  def __init__(self, alignments: AlignmentStore, mmcif_dir: str | pathlib.Path | None = None,
               chain_cache: Mapping[str, ChainMetadata] | None = None,
               duplicate_groups: Iterable[Sequence[str]] = (),
               structures_dir: str | pathlib.Path | None = None):
    self.alignments = alignments
    self.mmcif_dir = None if mmcif_dir is None else pathlib.Path(mmcif_dir)
    self.structures_dir = None if structures_dir is None else pathlib.Path(structures_dir)
    self.chain_cache = dict(chain_cache or {})
    stored = set(alignments.chain_ids())
    self.duplicates = {}  # chain -> the chain whose alignment files it uses
    for group in duplicate_groups:
      representative = next((c for c in group if c in stored), None)
      if representative is not None:
        self.duplicates.update({c: representative for c in group if c not in stored})

  @classmethod
  def open(cls, alignments: str | pathlib.Path, mmcif_dir: str | pathlib.Path | None = None,
           cache: str | pathlib.Path | None = None,
           duplicates: str | pathlib.Path | None = None,
           structures_dir: str | pathlib.Path | None = None) -> 'OpenProteinSet':
    """From paths: an alignment folder or `.index`, the mmCIF folder, a cache, a duplicates
    file and a predicted-structures folder."""
    return cls(open_alignments(alignments), mmcif_dir,
               None if cache is None else load_chain_cache(cache),
               () if duplicates is None else read_duplicate_chains(duplicates), structures_dir)

  def chain_ids(self) -> list[str]:
    """Chains with alignments, their duplicates included, sorted."""
    return sorted(set(self.alignments.chain_ids()) | set(self.duplicates))

  def alignment_chain(self, chain_id: str) -> str:
    """The chain whose alignment files `chain_id` uses (itself unless a duplicate)."""
    return self.duplicates.get(chain_id, chain_id)

  def alignment_files(self, chain_id: str) -> dict[str, bytes]:
    """Every alignment file of the chain: file name -> contents."""
    return self.alignments.read(self.alignment_chain(chain_id))

  def alignment_paths(self, chain_id: str) -> dict[str, pathlib.Path]:
    """Alignment file paths of the chain; only a folder tree has them."""
    if not isinstance(self.alignments, AlignmentFolder):
      raise OpenProteinSetError(f'chain {chain_id}: alignments are in a database '
                                f'({type(self.alignments).__name__}), not files; use alignment_files')
    return self.alignments.paths(self.alignment_chain(chain_id))

  def mmcif_path(self, chain_id: str) -> pathlib.Path:
    """`<mmcif_dir>/<pdb>.cif` of the chain's PDB entry."""
    if self.mmcif_dir is None:
      raise OpenProteinSetError(f'chain {chain_id}: no mmCIF folder was given')
    pdb_id, _ = split_chain_id(chain_id)
    path = self.mmcif_dir / f'{pdb_id}.cif'
    if not path.is_file():
      raise MissingChainError(f'chain {chain_id}: no mmCIF file {path}')
    return path

  def structure_path(self, chain_id: str) -> pathlib.Path:
    """The chain's predicted structure in `structures_dir` (`STRUCTURE_FILE_NAMES`)."""
    if self.structures_dir is None:
      raise OpenProteinSetError(f'chain {chain_id}: no structures folder was given')
    paths = [self.structures_dir / name.format(chain_id) for name in STRUCTURE_FILE_NAMES]
    found = next((path for path in paths if path.is_file()), None)
    if found is None:
      raise MissingChainError(f'chain {chain_id}: no structure file {paths[0]} '
                              f'(nor {", ".join(p.name for p in paths[1:])})')
    return found

  def metadata(self, chain_id: str) -> ChainMetadata:
    if chain_id not in self.chain_cache:
      raise MissingChainError(f'chain {chain_id}: not in the chain cache '
                              f'({len(self.chain_cache)} chains)')
    return self.chain_cache[chain_id]

  def sampling_weights(self, chain_ids: Sequence[str]) -> np.ndarray:
    """[len(chain_ids)] Suppl. 1.2.5 weights from the chain cache."""
    return sampling_weights([self.metadata(c) for c in chain_ids])


def read_duplicate_chains(path: str | pathlib.Path) -> list[list[str]]:
  """OpenProteinSet's duplicate-chains file: one group of identical chains per line."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise OpenProteinSetError(f'duplicate-chains file {path} does not exist')
  return [line.split() for line in path.read_text().splitlines() if line.strip()]


def read_predicted_structure(path: str | pathlib.Path,
                             plddt_threshold: float | None = None) -> protein_lib.Protein:
  """The one chain of a PDB file, its pLDDT (B-factor column) applied as OpenFold does.

  plddt_threshold: a residue none of whose atoms has a pLDDT above it loses all its atoms
    from `atom_mask` (OpenFold's `make_pdb_features`; `DISTILLATION_PLDDT_THRESHOLD` for a
    self-distillation set); None keeps every atom.
  Raises OpenProteinSetError naming the file when it is unreadable, not a PDB structure or
  holds more than one chain.
  """
  path = pathlib.Path(path)
  try:
    prot = protein_lib.from_pdb_string(path.read_text())
  except (OSError, UnicodeDecodeError) as e:
    raise OpenProteinSetError(f'{path}: cannot read: {e}') from e
  except ValueError as e:
    # The reader's messages begin with its own label, 'PDB: '.
    raise OpenProteinSetError(f'{path}: not a readable PDB structure: '
                              f'{str(e).removeprefix("PDB: ")}') from e
  num_chains = len(np.unique(prot.chain_index))
  if num_chains != 1:
    raise OpenProteinSetError(f'{path}: holds {num_chains} chains; a predicted structure of a '
                              'training chain must have one')
  if plddt_threshold is None:
    return prot
  # B-factors of absent atoms are 0, so "any atom above" reads the residue's present atoms.
  confident = np.any(prot.b_factors > plddt_threshold, axis=-1)
  return dataclasses.replace(prot, atom_mask=prot.atom_mask * confident[:, None])
