#!/usr/bin/env bash
# Copies a training set built by `jaxfold data build` to Google Cloud Storage.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"

usage() {
  cat <<'USAGE'
Usage: stage_data.sh --src DIR --dst gs://BUCKET/PATH [--project PROJECT] [--dry-run]

Copies DIR, the --output folder of `jaxfold data build` (a TFDS data directory holding
chain_features/<version>/), to gs://BUCKET/PATH/ with `gcloud storage cp -r`, and prints the
path to give launch.sh --data: gs://BUCKET/PATH/chain_features/<version>.

  --src DIR              the built dataset folder (jaxfold data build --output)
  --dst gs://...         where to put its contents (created if absent)
  --project PROJECT      Google Cloud project (default: gcloud's configured project)
  --dry-run              print the gcloud command instead of running it
USAGE
}

VALUE_OPTIONS+=([--src]=SRC [--dst]=DST [--project]=PROJECT)
parse_args "$@"
require "$SRC" --src
require "$DST" --dst
[[ -d $SRC ]] || die "--src: no such folder: $SRC"
DST=${DST%/}
[[ $DST =~ ^gs://[a-z0-9][-a-z0-9_.]*[a-z0-9](/.*)?$ ]] ||
  die "--dst must be a gs:// path such as gs://my-bucket/datasets/pdb (got '$DST')"
[[ -z $PROJECT || $PROJECT =~ ^[a-z][-a-z0-9:.]{4,61}[a-z0-9]$ ]] ||
  die "--project must be a project ID such as my-project (got '$PROJECT')"
shopt -s nullglob
infos=("$SRC"/*/*/dataset_info.json)
((${#infos[@]} > 0)) ||
  die "--src: no dataset in $SRC (no <name>/<version>/dataset_info.json): see jaxfold data build"
# Each entry of SRC by name, into DST/ as a folder: the objects land at DST/<entry>/...
entries=("$SRC"/*)
CMD=(gcloud storage cp -r "${entries[@]}" "$DST/")
[[ -z $PROJECT ]] || CMD+=("--project=$PROJECT")
run "${CMD[@]}"
for info in "${infos[@]}"; do
  version=$(dirname "$info")
  note "launch.sh --data $DST/$(basename "$(dirname "$version")")/$(basename "$version")"
done
