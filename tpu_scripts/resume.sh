#!/usr/bin/env bash
# Restarts a training run after its slice was preempted: recreate, reinstall, relaunch.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"

usage() {
  cat <<'USAGE'
Usage: resume.sh CREATE_OPTIONS INSTALL_OPTIONS LAUNCH_OPTIONS [--assume-state STATE]
                 [--dry-run] [-- JAXFOLD_TRAIN_ARGS...]

Takes the options of create.sh, install.sh and launch.sh together (the ones the run was started
with) and reads the slice's state (gcloud compute tpus tpu-vm describe --format='value(state)'):
  READY                   nothing to do (the run goes on; see logs.sh);
  PREEMPTED, TERMINATED   deletes the slice, then as below;
  gone (NOT_FOUND)        creates it again, installs jaxfold and launches the same jaxfold train
                          command, which resumes from the latest checkpoint in --workdir;
  anything else           (CREATING, REPAIRING, ...) exits 1: try again later.
Meant to be rerun by hand or from cron; with --spot the queued resource is deleted and requested
again.

  --name --zone --type --runtime-version --spot --preemptible --project     as create.sh
  --repo --ref --python --venv --check                                       as install.sh
  --config --workdir --data --copy-data --log -- JAXFOLD_TRAIN_ARGS          as launch.sh
  --assume-state STATE   with --dry-run (which reads nothing): the state to act on, e.g.
                         PREEMPTED, READY or NOT_FOUND
  --dry-run              print the gcloud commands, one per line, instead of running them
USAGE
}

read_state() {  # STATE = the node's state, NOT_FOUND if it does not exist
  local err
  tpu_command tpu-vm describe "$NAME"
  CMD+=('--format=value(state)')
  if ((DRY_RUN)); then
    quote "${CMD[@]}"
    STATE=$ASSUME_STATE
    return
  fi
  err=$(mktemp)
  if STATE=$("${CMD[@]}" 2>"$err"); then
    rm -f "$err"
    return
  fi
  if grep -q -i -e NOT_FOUND -e 'not found' "$err"; then
    STATE=NOT_FOUND
    rm -f "$err"
    return
  fi
  cat "$err" >&2
  rm -f "$err"
  fail "could not read the state of $NAME"
}

slice_options
create_options
install_options
launch_options
VALUE_OPTIONS+=([--assume-state]=ASSUME_STATE)
parse_args "$@"
check_create
check_install
check_launch
if ((DRY_RUN)); then
  require "$ASSUME_STATE" '--assume-state (--dry-run reads no state)'
  [[ $ASSUME_STATE =~ ^[A-Z_]+$ ]] ||
    die "--assume-state must be a state such as PREEMPTED, READY or NOT_FOUND (got '$ASSUME_STATE')"
elif [[ -n $ASSUME_STATE ]]; then
  die "--assume-state goes with --dry-run only"
fi

read_state
case $STATE in
  READY)
    note "$NAME is READY: nothing to resume (logs.sh shows the run; launch.sh restarts it)"
    exit 0
    ;;
  PREEMPTED | TERMINATED)
    note "$NAME is $STATE: deleting it, then creating, installing and launching again"
    delete_slice
    ;;
  NOT_FOUND)
    note "$NAME does not exist: creating, installing and launching again"
    if ((SPOT)); then  # the request may outlive its node
      delete_slice || note "no queued resource $NAME to delete"
    fi
    ;;
  *)
    fail "$NAME is ${STATE:-in no state}: not resuming now; run resume.sh again later"
    ;;
esac
create_slice
install_jaxfold
launch_training
