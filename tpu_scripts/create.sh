#!/usr/bin/env bash
# Creates a TPU VM slice for a jaxfold training run.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"

usage() {
  cat <<'USAGE'
Usage: create.sh --name NAME --zone ZONE --type TYPE [--runtime-version VERSION]
                 [--spot | --preemptible] [--project PROJECT] [--dry-run]

Creates a TPU VM slice: `gcloud compute tpus tpu-vm create`, or with --spot a queued resource
(`gcloud compute tpus queued-resources create`), waiting until it is ACTIVE.

  --name NAME            the slice's name (lowercase letters, digits, hyphens)
  --zone ZONE            a zone offering TYPE, e.g. us-central2-b (v4), us-west4-a (v5e)
  --type TYPE            accelerator type: v4-32, v5litepod-64 (v5e-64 is accepted), v5p-128,
                         v6e-64, ...
  --runtime-version V    TPU software version; default by generation, as Cloud TPU documents
                         for JAX: v2-v4 tpu-ubuntu2204-base, v5e v2-alpha-tpuv5-lite,
                         v5p v2-alpha-tpuv5, v6e v2-alpha-tpuv6e
  --spot                 Spot capacity (cheaper, preemptible at any time; resume.sh restarts)
  --preemptible          legacy preemptible TPU (tpu-vm create --preemptible)
  --project PROJECT      Google Cloud project (default: gcloud's configured project)
  --dry-run              print the gcloud commands, one per line, instead of running them
USAGE
}

slice_options
create_options
parse_args "$@"
check_create
create_slice
