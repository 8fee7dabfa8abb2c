#!/usr/bin/env bash
# Installs jaxfold on every worker of a TPU VM slice.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"

usage() {
  cat <<'USAGE'
Usage: install.sh --name NAME --zone ZONE --repo URL [--ref REF] [--python PYTHON]
                  [--venv DIR] [--check] [--project PROJECT] [--dry-run]

On every worker at once (--worker=all): installs PYTHON from apt if the image lacks it, makes
a virtual environment DIR and runs pip install "jaxfold[tpu] @ git+URL@REF" in it (the tpu
extra brings jax[tpu] at the version jaxfold pins). Running it again upgrades to REF.

  --name NAME            the slice's name
  --zone ZONE            its zone
  --repo URL             jaxfold's git repository: an https://, ssh:// or file:// URL
                         (ssh://git@github.com/OWNER/jaxfold.git, not git@github.com:...)
  --ref REF              branch, tag or commit (default: main)
  --python PYTHON        interpreter for the venv (default: python3.11)
  --venv DIR             the venv, relative to each worker's home (default: jaxfold-venv)
  --check                afterwards print each worker's process index and the device count
                         JAX sees (all workers must show the slice's total)
  --project PROJECT      Google Cloud project (default: gcloud's configured project)
  --dry-run              print the gcloud command instead of running it
USAGE
}

slice_options
install_options
parse_args "$@"
check_install
install_jaxfold
