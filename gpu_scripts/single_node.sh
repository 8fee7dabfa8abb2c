#!/usr/bin/env bash
# jaxfold training on one machine with all its GPUs: one process, the unchanged train command.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: single_node.sh [--dry-run] JAXFOLD_TRAIN_ARGS...

Runs `jaxfold train JAXFOLD_TRAIN_ARGS...` as one process that drives every GPU of this machine
(JAX sees them all; restrict with CUDA_VISIBLE_DEVICES). The arguments are those of jaxfold
train, unchanged, e.g.
  gpu_scripts/single_node.sh --config configs/train/initial.py --workdir runs/initial \
      --data data/pdb/chain_features/1.0.0 --mesh data=-1 --sharding fsdp
Running it again resumes from the latest checkpoint in the workdir; SIGTERM / Ctrl-C save a
checkpoint and stop. JAXFOLD names the jaxfold command (default: jaxfold, from PATH).

  --dry-run   print the command instead of running it
USAGE
}

quote() {  # the arguments as one line of shell words (quoted only where needed)
  local arg q="'\\''" words=()
  for arg in "$@"; do
    if [[ $arg =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then
      words+=("$arg")
    else
      words+=("'${arg//\'/$q}'")
    fi
  done
  printf '%s\n' "${words[*]}"
}

dry_run=0
case ${1-} in
  -h | --help)
    usage
    exit 0
    ;;
  --dry-run)
    dry_run=1
    shift
    ;;
esac
(($# > 0)) || {
  echo "single_node.sh: error: no jaxfold train arguments (see --help)" >&2
  exit 2
}
command=("${JAXFOLD:-jaxfold}" train "$@")
if ((dry_run)); then
  quote "${command[@]}"
  exit 0
fi
exec "${command[@]}"
