#!/usr/bin/env bash
# Streams a worker's training log (worker 0, the one that writes summaries, by default).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"

usage() {
  cat <<'USAGE'
Usage: logs.sh --name NAME --zone ZONE [--worker N] [--log FILE] [--project PROJECT]
               [--dry-run]

Follows the log launch.sh writes (`tail -F` over ssh; Ctrl-C stops watching, not training).

  --name NAME            the slice's name
  --zone ZONE            its zone
  --worker N             which worker (default: 0)
  --log FILE             the log file launch.sh was given (default: jaxfold-train.log)
  --project PROJECT      Google Cloud project (default: gcloud's configured project)
  --dry-run              print the gcloud command instead of running it
USAGE
}

slice_options
VALUE_OPTIONS+=([--worker]=WORKER [--log]=LOG)
parse_args "$@"
check_slice
[[ $WORKER =~ ^[0-9]+$ ]] || die "--worker must be a worker number such as 0 (got '$WORKER')"
[[ $LOG =~ ^[A-Za-z0-9_./-]+$ ]] || die "--log must be a plain path (got '$LOG')"
tpu_command tpu-vm ssh "$NAME"
CMD+=("--worker=$WORKER" "--command=tail -n 200 -F $LOG")
run "${CMD[@]}"
