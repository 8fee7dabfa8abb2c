#!/usr/bin/env bash
# Starts `jaxfold train` on every worker of a TPU VM slice.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"

usage() {
  cat <<'USAGE'
Usage: launch.sh --name NAME --zone ZONE --config FILE --workdir gs://BUCKET/RUN
                 --data gs://BUCKET/.../chain_features/1.0.0 [--copy-data] [--log FILE]
                 [--venv DIR] [--project PROJECT] [--dry-run] [-- JAXFOLD_TRAIN_ARGS...]

Copies the config FILE (a local file, e.g. configs/train/initial.py) to every worker and starts
`jaxfold train --config FILE --workdir WORKDIR --data DATA JAXFOLD_TRAIN_ARGS...` on all of
them at once, in the background (nohup), appending its output to FILE in each worker's home.
On a TPU slice jax.distributed initialises itself: no coordinator flags are needed. A worker
where the previous launch still runs refuses to start a second one. Running the same command
again after the run stopped resumes it from the latest checkpoint in WORKDIR.

  --name NAME            the slice's name
  --zone ZONE            its zone
  --config FILE          training config (a local file defining get_config())
  --workdir gs://...     the run's directory, shared by all workers: checkpoints, TensorBoard
  --data gs://...        the training set stage_data.sh copied (.../chain_features/1.0.0)
  --copy-data            first copy DATA to each worker's disk (gcloud storage rsync, into
                         ~/jaxfold-data/chain_features/1.0.0) and train from that copy:
                         ArrayRecord files are read with local file I/O, not from gs://
  --log FILE             log file on each worker, relative to its home (jaxfold-train.log)
  --venv DIR             the venv install.sh made (default: jaxfold-venv)
  --project PROJECT      Google Cloud project (default: gcloud's configured project)
  --dry-run              print the gcloud commands, one per line, instead of running them
  -- ARGS                passed to jaxfold train unchanged, e.g.
                         -- --mesh data=-1 --sharding fsdp --set optimizer.learning_rate=5e-4
USAGE
}

slice_options
launch_options
parse_args "$@"
check_launch
launch_training
