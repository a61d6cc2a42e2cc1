#!/usr/bin/env bash
# Distillation on a Cloud TPU VM slice (single host or pod slice) with gcloud.
#
#   launch/tpu_pod.sh -n distil -z us-central2-b -t v4-32 -b my-bucket all   # create, install, train
#   launch/tpu_pod.sh -n distil -z us-central2-b -b my-bucket logs            # follow worker 0
#   launch/tpu_pod.sh -n distil -z us-central2-b -b my-bucket train           # resume after a stop
#   launch/tpu_pod.sh -h
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: launch/tpu_pod.sh -n NAME -z ZONE [options] COMMAND [-- MAIN FLAGS]

Commands:
  up        create the TPU VM unless it exists, copy this checkout to every
            worker, install the dependencies (jax[tpu], Python 3.12 via uv) and,
            with -b, mount the bucket on every worker
  prepare   tokenise the corpus once, on worker 0, into the shared prepared dir
            (train does it too when needed; this keeps the other hosts from waiting)
  train     start `python -m distil_jax.main --distributed` on all workers, in the
            background (jax.distributed finds the pod's hosts by itself); a
            workdir that holds a checkpoint resumes from it
  logs      follow worker 0's training log (Ctrl-C stops following, not training)
  stop      SIGTERM the training on all workers: they save a checkpoint and exit
  delete    delete the TPU VM (the bucket and its checkpoints stay)
  all       up, then train

Options:
  -n NAME      TPU VM name (or $TPU_NAME)
  -z ZONE      zone (or $TPU_ZONE)
  -p PROJECT   GCP project (default: gcloud's configured project)
  -t TYPE      accelerator type for `up` (default: v4-32: 16 chips, 4 hosts)
  -v VERSION   TPU software version for `up` (default: tpu-ubuntu2204-base)
  -s           create a Spot VM (cheaper, may be preempted: `up` + `train` resume)
  -b BUCKET    GCS bucket mounted with gcsfuse at /mnt/BUCKET on every worker;
               default workdir /mnt/BUCKET/distil_jax/<config name>, prepared data
               /mnt/BUCKET/distil_jax/prepared
  -c CONFIG    training config (default: configs/tpu.py)
  -w WORKDIR   run directory; must be one filesystem shared by all workers (a
               bucket mount, Filestore/NFS): Orbax writes each host's shards there
  -h           this help
  -- ...       further flags for distil_jax.main (train) or prepare_data (prepare),
               e.g. --config.num_train_steps=1000

The code on the workers is this checkout's tracked and untracked (not ignored)
files as they are now; run `up` again after changing it.
EOF
}

NAME="${TPU_NAME:-}"
ZONE="${TPU_ZONE:-}"
PROJECT=""
TYPE="v4-32"
VERSION="tpu-ubuntu2204-base"
SPOT=0
BUCKET=""
CONFIG="configs/tpu.py"
WORKDIR=""
while getopts "n:z:p:t:v:sb:c:w:h" opt; do
  case "$opt" in
    n) NAME="$OPTARG" ;;
    z) ZONE="$OPTARG" ;;
    p) PROJECT="$OPTARG" ;;
    t) TYPE="$OPTARG" ;;
    v) VERSION="$OPTARG" ;;
    s) SPOT=1 ;;
    b) BUCKET="$OPTARG" ;;
    c) CONFIG="$OPTARG" ;;
    w) WORKDIR="$OPTARG" ;;
    h) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
if [[ $# -lt 1 || -z "$NAME" || -z "$ZONE" ]]; then
  usage >&2
  exit 2
fi
COMMAND="$1"
shift
[[ "${1:-}" != "--" ]] || shift
EXTRA=("$@")

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REMOTE_DIR="distil_jax"  # the checkout on each worker, under the login's home
REMOTE_VENV="\$HOME/distil_jax/.venv"
LOG="\$HOME/distil_jax.log"
PIDFILE="\$HOME/distil_jax.pid"
CONFIG_NAME="$(basename "$CONFIG" .py)"
SHARED_FLAGS=()
if [[ -n "$BUCKET" ]]; then
  WORKDIR="${WORKDIR:-/mnt/$BUCKET/distil_jax/$CONFIG_NAME}"
  SHARED_FLAGS=(--config.data.prepared_dir="/mnt/$BUCKET/distil_jax/prepared")
fi
if [[ -z "$WORKDIR" && ("$COMMAND" == train || "$COMMAND" == all) ]]; then
  echo "give -b BUCKET or -w WORKDIR (a directory shared by every worker)" >&2
  exit 2
fi

GCLOUD=(gcloud compute tpus tpu-vm)
LOCATION=(--zone="$ZONE")
if [[ -n "$PROJECT" ]]; then
  LOCATION+=(--project="$PROJECT")
fi

# Runs a shell command on one worker (0, 1, ...) or on all of them at once.
on_workers() {
  local worker="$1"
  shift
  "${GCLOUD[@]}" ssh "$NAME" "${LOCATION[@]}" --worker="$worker" --command="$*"
}

# Quotes arguments for the remote shell (paths and --config.x=y flags may hold spaces).
quoted() {
  local out=""
  for arg in "$@"; do
    out+=" $(printf '%q' "$arg")"
  done
  printf '%s' "$out"
}

cmd_up() {
  if "${GCLOUD[@]}" describe "$NAME" "${LOCATION[@]}" >/dev/null 2>&1; then
    echo "reusing TPU VM $NAME"
  else
    local create=("${GCLOUD[@]}" create "$NAME" "${LOCATION[@]}" --accelerator-type="$TYPE"
      --version="$VERSION")
    if ((SPOT)); then
      create+=(--spot)
    fi
    echo "creating TPU VM $NAME ($TYPE, $VERSION)"
    "${create[@]}"
  fi

  # The checkout as it is now, uncommitted edits included; not ignored files, nor local
  # virtual environments (the workers build their own).
  local archive
  archive="$(mktemp -t distil_jax.XXXXXX.tar.gz)"
  (cd "$REPO" && git ls-files -z --cached --others --exclude-standard |
    grep -zv '^\.venv' | tar --null -czf "$archive" -T -)
  "${GCLOUD[@]}" scp "$archive" "$NAME:distil_jax.tar.gz" "${LOCATION[@]}" --worker=all
  rm -f "$archive"
  on_workers all "mkdir -p $REMOTE_DIR && tar -xzf distil_jax.tar.gz -C $REMOTE_DIR"

  # uv provides Python 3.12: the TPU images' system Python (3.10) is too old.
  on_workers all "command -v uv >/dev/null || curl -LsSf https://astral.sh/uv/install.sh | sh;" \
    "export PATH=\$HOME/.local/bin:\$PATH; bash $REMOTE_DIR/launch/install.sh -e $REMOTE_VENV tpu"

  if [[ -n "$BUCKET" ]]; then
    # gcsfuse from Google's apt repository; the VM's service account needs access to the bucket.
    on_workers all "set -e; if ! command -v gcsfuse >/dev/null; then" \
      "echo \"deb [signed-by=/usr/share/keyrings/cloud.google.asc]" \
      "https://packages.cloud.google.com/apt gcsfuse-\$(lsb_release -cs) main\" |" \
      "sudo tee /etc/apt/sources.list.d/gcsfuse.list >/dev/null;" \
      "curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg |" \
      "sudo tee /usr/share/keyrings/cloud.google.asc >/dev/null;" \
      "sudo apt-get update -qq && sudo apt-get install -y -qq gcsfuse; fi;" \
      "sudo mkdir -p /mnt/$BUCKET && sudo chown \$USER /mnt/$BUCKET;" \
      "mountpoint -q /mnt/$BUCKET || gcsfuse --implicit-dirs $BUCKET /mnt/$BUCKET"
  fi
}

cmd_prepare() {
  local args
  args="$(quoted --config="$CONFIG" ${SHARED_FLAGS[@]+"${SHARED_FLAGS[@]}"} \
    ${EXTRA[@]+"${EXTRA[@]}"})"
  on_workers 0 "cd $REMOTE_DIR && $REMOTE_VENV/bin/python -m distil_jax.prepare_data$args"
}

cmd_train() {
  local args
  args="$(quoted --distributed --config="$CONFIG" --workdir="$WORKDIR" \
    ${SHARED_FLAGS[@]+"${SHARED_FLAGS[@]}"} ${EXTRA[@]+"${EXTRA[@]}"})"
  # setsid + nohup: the run outlives the ssh sessions. Every worker must start, or
  # jax.distributed waits (initialization timeout) and then fails on all of them.
  on_workers all "cd $REMOTE_DIR && setsid nohup $REMOTE_VENV/bin/python -m distil_jax.main$args" \
    ">>$LOG 2>&1 </dev/null & echo \$! >$PIDFILE"
  echo "training started on all workers of $NAME; workdir $WORKDIR"
  echo "follow it with: $0 -n $NAME -z $ZONE logs"
}

cmd_logs() {
  on_workers 0 "tail -n 100 -F $LOG"
}

cmd_stop() {
  # SIGTERM, not SIGKILL: every process reaches the same optimiser step, saves, exits 75.
  on_workers all "test -f $PIDFILE && kill -TERM \$(cat $PIDFILE) 2>/dev/null || true"
}

case "$COMMAND" in
  up) cmd_up ;;
  prepare) cmd_prepare ;;
  train) cmd_train ;;
  logs) cmd_logs ;;
  stop) cmd_stop ;;
  delete) "${GCLOUD[@]}" delete "$NAME" "${LOCATION[@]}" --quiet ;;
  all)
    cmd_up
    cmd_train
    ;;
  *)
    echo "unknown command '$COMMAND'" >&2
    usage >&2
    exit 2
    ;;
esac
