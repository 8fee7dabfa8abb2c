# shellcheck shell=bash
# Shared by the tpu_scripts (sourced, never run): option parsing, the dry-run aware `run`, and
# the gcloud steps the scripts are made of, so that resume.sh repeats exactly what create.sh,
# install.sh and launch.sh do.
#
# Conventions: with --dry-run a script prints each gcloud command it would run, one per line,
# ready to paste into a shell, and runs nothing; notes go to stderr. A bad argument stops a
# script with exit status 2 and one line on stderr.

SCRIPT=$(basename "$0")

# Every option's variable, with its default. A script registers the options it takes (the
# *_options functions below) and parse_args fills these in.
# shellcheck disable=SC2034  # each variable is used by some of the scripts, not by all
{
  DRY_RUN=0
  NAME='' ZONE='' PROJECT=''
  TYPE='' RUNTIME_VERSION='' SPOT=0 PREEMPTIBLE=0
  REPO='' REF=main PYTHON=python3.11 VENV=jaxfold-venv CHECK=0
  CONFIG='' WORKDIR='' DATA='' LOG=jaxfold-train.log COPY_DATA=0
  WORKER=0 SRC='' DST='' ASSUME_STATE=''
  TRAIN_ARGS=()  # what follows `--`: jaxfold train's own options, passed through unchanged
}
declare -A VALUE_OPTIONS=() FLAG_OPTIONS=()
PASSTHROUGH=0

# Where launch.sh puts the config file and the run's process id on every worker (relative paths
# are in the worker's home directory, where `gcloud compute tpus tpu-vm ssh` commands start).
REMOTE_CONFIG=jaxfold-config.py
REMOTE_PID=jaxfold-train.pid

die() {  # a usage error: one line, exit status 2
  printf '%s: error: %s\n' "$SCRIPT" "$*" >&2
  exit 2
}

fail() {  # a failure while running: one line, exit status 1
  printf '%s: %s\n' "$SCRIPT" "$*" >&2
  exit 1
}

note() {
  printf '%s: %s\n' "$SCRIPT" "$*" >&2
}

quote() {  # the arguments as one line of shell words (quoted only where needed)
  local arg q="'\\''" words=()
  for arg in "$@"; do
    if [[ $arg =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then
      words+=("$arg")
    elif [[ $arg =~ ^(--[a-z][-a-z]*=)(.*)$ ]]; then  # --flag='value' reads better
      words+=("${BASH_REMATCH[1]}'${BASH_REMATCH[2]//\'/$q}'")
    else
      words+=("'${arg//\'/$q}'")
    fi
  done
  printf '%s\n' "${words[*]}"
}

run() {  # runs a command, or with --dry-run prints it
  if ((DRY_RUN)); then
    quote "$@"
  else
    printf '+ %s\n' "$(quote "$@")" >&2
    "$@"
  fi
}

# --- options -------------------------------------------------------------------------------

slice_options() {
  VALUE_OPTIONS+=([--name]=NAME [--zone]=ZONE [--project]=PROJECT)
}
create_options() {
  VALUE_OPTIONS+=([--type]=TYPE [--runtime-version]=RUNTIME_VERSION)
  FLAG_OPTIONS+=([--spot]=SPOT [--preemptible]=PREEMPTIBLE)
}
install_options() {
  VALUE_OPTIONS+=([--repo]=REPO [--ref]=REF [--python]=PYTHON [--venv]=VENV)
  FLAG_OPTIONS+=([--check]=CHECK)
}
launch_options() {
  VALUE_OPTIONS+=([--config]=CONFIG [--workdir]=WORKDIR [--data]=DATA [--log]=LOG)
  VALUE_OPTIONS+=([--venv]=VENV)
  FLAG_OPTIONS+=([--copy-data]=COPY_DATA)
  PASSTHROUGH=1
}

parse_args() {  # fills the registered options' variables from the command line
  local option
  while (($# > 0)); do
    case $1 in
      -h | --help)
        usage
        exit 0
        ;;
      --dry-run) DRY_RUN=1 ;;
      --)
        shift
        ((PASSTHROUGH)) || die "unexpected arguments after --: $*"
        TRAIN_ARGS=("$@")
        break
        ;;
      --*=*)
        option=${1%%=*}
        [[ -v VALUE_OPTIONS[$option] ]] || unknown_option "$option"
        printf -v "${VALUE_OPTIONS[$option]}" '%s' "${1#*=}"
        ;;
      --*)
        if [[ -v FLAG_OPTIONS[$1] ]]; then
          printf -v "${FLAG_OPTIONS[$1]}" '%s' 1
        elif [[ -v VALUE_OPTIONS[$1] ]]; then
          (($# > 1)) || die "$1 needs a value"
          printf -v "${VALUE_OPTIONS[$1]}" '%s' "$2"
          shift
        else
          unknown_option "$1"
        fi
        ;;
      *) die "unexpected argument '$1' (see --help)" ;;
    esac
    shift
  done
}

unknown_option() {
  if ((PASSTHROUGH)); then
    die "unknown option $1 (jaxfold train's own options go after --)"
  fi
  die "unknown option $1 (see --help)"
}

require() {  # require VALUE OPTION: OPTION must have been given
  [[ -n $1 ]] || die "missing $2 (see --help)"
}

# --- checks --------------------------------------------------------------------------------

check_slice() {
  require "$NAME" --name
  require "$ZONE" --zone
  [[ $NAME =~ ^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$ ]] ||
    die "--name must be lowercase letters, digits and hyphens, starting with a letter (got '$NAME')"
  [[ $ZONE =~ ^[a-z]+-[a-z]+[0-9]+-[a-z]$ ]] ||
    die "--zone must be a zone such as us-central2-b (got '$ZONE')"
  [[ -z $PROJECT || $PROJECT =~ ^[a-z][-a-z0-9:.]{4,61}[a-z0-9]$ ]] ||
    die "--project must be a project ID such as my-project (got '$PROJECT')"
}

default_runtime_version() {  # the TPU software version Cloud TPU documents for JAX, per generation
  case $1 in
    v2-* | v3-* | v4-*) echo tpu-ubuntu2204-base ;;
    v5litepod-*) echo v2-alpha-tpuv5-lite ;;
    v5p-*) echo v2-alpha-tpuv5 ;;
    v6e-*) echo v2-alpha-tpuv6e ;;
  esac
}

check_create() {
  check_slice
  require "$TYPE" --type
  # gcloud calls v5e slices v5litepod-N; v5e-N is accepted as the same.
  [[ $TYPE =~ ^v5e-([0-9]+)$ ]] && TYPE=v5litepod-${BASH_REMATCH[1]}
  [[ $TYPE =~ ^v(2|3|4|5litepod|5p|6e)-[0-9]+$ ]] ||
    die "--type must be an accelerator type such as v4-32 or v5litepod-64 (got '$TYPE')"
  [[ -n $RUNTIME_VERSION ]] || RUNTIME_VERSION=$(default_runtime_version "$TYPE")
  ((!(SPOT && PREEMPTIBLE))) || die "--spot and --preemptible exclude each other"
}

check_install() {
  check_slice
  require "$REPO" --repo
  # pip's git+ URLs: scp-like git@host:path is written ssh://git@host/path.
  [[ $REPO =~ ^(https|ssh|file)://[^[:space:]\'\"\$\`\\]+$ ]] ||
    die "--repo must be an https://, ssh:// or file:// git URL (got '$REPO')"
  [[ $REF =~ ^[A-Za-z0-9._/-]+$ ]] || die "--ref must be a branch, tag or commit (got '$REF')"
  [[ $PYTHON =~ ^python3\.[0-9]+$ ]] || die "--python must be like python3.11 (got '$PYTHON')"
  check_venv
}

check_venv() {
  [[ $VENV =~ ^[A-Za-z0-9_./-]+$ ]] || die "--venv must be a plain path (got '$VENV')"
}

check_launch() {
  check_slice
  check_venv
  require "$CONFIG" --config
  require "$WORKDIR" --workdir
  require "$DATA" --data
  [[ -f $CONFIG ]] || die "--config: no such file: $CONFIG"
  # Every worker writes its part of each checkpoint: the workdir must be storage they share.
  [[ $WORKDIR =~ ^gs://[a-z0-9][-a-z0-9_.]*[a-z0-9](/.*)?$ ]] ||
    die "--workdir must be a gs:// path that all workers share (got '$WORKDIR')"
  DATA=${DATA%/}
  [[ $DATA =~ ^gs://[a-z0-9][-a-z0-9_.]*[a-z0-9](/.*)?$ ]] ||
    die "--data must be a gs:// path, the dataset stage_data.sh copied (got '$DATA')"
  [[ $LOG =~ ^[A-Za-z0-9_./-]+$ ]] || die "--log must be a plain path (got '$LOG')"
  local arg
  for arg in "${TRAIN_ARGS[@]}"; do
    case $arg in
      --config | --config=* | --workdir | --workdir=* | --data | --data=*)
        die "give ${arg%%=*} to $SCRIPT itself, not after --" ;;
    esac
  done
}

# --- gcloud steps ----------------------------------------------------------------------------

tpu_command() {  # CMD = gcloud compute tpus ARGS... --zone=ZONE [--project=PROJECT]
  CMD=(gcloud compute tpus "$@" "--zone=$ZONE")
  [[ -z $PROJECT ]] || CMD+=("--project=$PROJECT")
}

on_every_worker() {  # runs the shell command $1 on all workers of the slice at once
  tpu_command tpu-vm ssh "$NAME"
  CMD+=(--worker=all "--command=$1")
  run "${CMD[@]}"
}

create_slice() {
  if ((SPOT)); then
    # Spot capacity is requested through a queued resource holding one node of the same name.
    tpu_command queued-resources create "$NAME"
    CMD+=("--node-id=$NAME" "--accelerator-type=$TYPE" "--runtime-version=$RUNTIME_VERSION" --spot)
    run "${CMD[@]}"
    wait_for_queued_resource
  else
    tpu_command tpu-vm create "$NAME"
    CMD+=("--accelerator-type=$TYPE" "--version=$RUNTIME_VERSION")
    ((!PREEMPTIBLE)) || CMD+=(--preemptible)
    run "${CMD[@]}"
  fi
}

wait_for_queued_resource() {  # until the spot request is ACTIVE (its node then is READY)
  local state
  tpu_command queued-resources describe "$NAME"
  CMD+=('--format=value(state.state)')
  if ((DRY_RUN)); then
    printf '%s  # every 60 s until ACTIVE\n' "$(quote "${CMD[@]}")"
    return
  fi
  while :; do
    state=$("${CMD[@]}")
    case $state in
      ACTIVE) return ;;
      FAILED | SUSPENDING | SUSPENDED) fail "queued resource $NAME is $state" ;;
    esac
    note "queued resource $NAME is ${state:-not visible yet}; waiting"
    sleep 60
  done
}

delete_slice() {
  if ((SPOT)); then
    tpu_command queued-resources delete "$NAME"
    CMD+=(--force --quiet)  # --force deletes the node along with the request
  else
    tpu_command tpu-vm delete "$NAME"
    CMD+=(--quiet)
  fi
  run "${CMD[@]}"
}

install_jaxfold() {  # a venv with jaxfold[tpu] from the repository, on every worker
  local python package remote
  python=$PYTHON
  package="\"jaxfold[tpu] @ git+$REPO@$REF\""
  remote="set -eu"
  # The runtime images' own python3 is older than jaxfold needs; Ubuntu's apt has newer ones.
  remote+="; if ! $python -c \"import ensurepip\" 2>/dev/null; then"
  remote+=" sudo apt-get -qq -o DPkg::Lock::Timeout=600 update"
  remote+=" && sudo DEBIAN_FRONTEND=noninteractive apt-get -qq -o DPkg::Lock::Timeout=600"
  remote+=" install -y $python $python-venv git; fi"
  remote+="; [ -x $VENV/bin/python ] || $python -m venv $VENV"
  remote+="; $VENV/bin/pip install --quiet --upgrade pip"
  remote+="; $VENV/bin/pip install --quiet --upgrade $package"
  remote+="; $VENV/bin/jaxfold --help >/dev/null"
  if ((CHECK)); then
    remote+="; $VENV/bin/python -c \"import jax; print(jax.process_index(), jax.device_count())\""
  fi
  on_every_worker "$remote"
}

launch_training() {  # jaxfold train on every worker at once, in the background
  local data=$DATA train remote
  tpu_command tpu-vm scp "$CONFIG" "$NAME:$REMOTE_CONFIG"
  CMD+=(--worker=all)
  run "${CMD[@]}"
  if ((COPY_DATA)); then
    # ArrayRecord shards are read with local file I/O: give every worker its own copy, kept
    # (and only brought up to date) across launches on the same slice.
    data=jaxfold-data/$(basename "$(dirname "$DATA")")/$(basename "$DATA")
    remote="set -eu; mkdir -p $(quote "$data")"
    remote+="; gcloud storage rsync -r $(quote "$DATA") $(quote "$data")"
    on_every_worker "$remote"
  fi
  train=$(quote "$VENV/bin/jaxfold" train --config "$REMOTE_CONFIG" --workdir "$WORKDIR" \
    --data "$data" "${TRAIN_ARGS[@]}")
  remote="set -eu"
  remote+="; if [ -f $REMOTE_PID ] && kill -0 \"\$(cat $REMOTE_PID)\" 2>/dev/null; then"
  remote+=" echo \"jaxfold train already runs on \$(hostname); not starting another\" >&2;"
  remote+=" exit 1; fi"
  remote+="; setsid nohup $train >>$LOG 2>&1 </dev/null &"
  remote+=" echo \$! >$REMOTE_PID"
  remote+="; echo \"\$(hostname): jaxfold train started, pid \$!, log ~/$LOG\""
  on_every_worker "$remote"
}
