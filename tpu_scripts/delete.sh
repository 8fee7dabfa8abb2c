#!/usr/bin/env bash
# Deletes a TPU VM slice (without asking).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"

usage() {
  cat <<'USAGE'
Usage: delete.sh --name NAME --zone ZONE [--spot] [--project PROJECT] [--dry-run]

Deletes the slice without asking (--quiet). A slice made with `create.sh --spot` is a queued
resource: pass --spot here too, to delete the request together with its node.

  --name NAME            the slice's name
  --zone ZONE            its zone
  --spot                 the slice was created with --spot
  --project PROJECT      Google Cloud project (default: gcloud's configured project)
  --dry-run              print the gcloud command instead of running it
USAGE
}

slice_options
FLAG_OPTIONS+=([--spot]=SPOT)
parse_args "$@"
check_slice
delete_slice
