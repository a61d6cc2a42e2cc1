#!/usr/bin/env bash
# Distillation on one machine with several GPUs (no scheduler).
#
#   launch/single_host_gpu.sh                                  # all GPUs, one process, V100 preset
#   launch/single_host_gpu.sh -c configs/base.py -w workdirs/a100
#   launch/single_host_gpu.sh -p                               # one process per GPU
#   launch/single_host_gpu.sh -- --config.batch.accumulation_steps=64
#   launch/single_host_gpu.sh -h
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: launch/single_host_gpu.sh [-c CONFIG] [-w WORKDIR] [-g N] [-p] [-e VENV] [-i] [-- MAIN FLAGS]

Runs `python -m distil_jax.main` on this machine's GPUs. By default one process
drives all of them: on one host that is the simplest and fastest layout, and it
needs no jax.distributed. With -p, one process per GPU joins a local
jax.distributed job (127.0.0.1, a free port): the same code path as a multi-node
job, handy to try it out before a cluster run. Run it again with the same
WORKDIR to resume from the latest checkpoint.

Options:
  -c CONFIG   training config (default: configs/v100.py)
  -w WORKDIR  run directory (default: workdirs/<config name>)
  -g N        use the first N GPUs (default: all that nvidia-smi lists)
  -p          one process per GPU instead of one for all
  -e VENV     virtual environment to run in (default: .venv-cuda12 if it exists,
              else the current python)
  -i          create/update VENV with the CUDA-12 JAX wheels first
  -h          this help
  -- ...      further flags for distil_jax.main, e.g. --config.num_train_steps=1000

Exit status 75: stopped by SIGTERM after writing a checkpoint; run again to resume.
With -p the processes' logs are WORKDIR/logs/process_<i>.log (process 0 also prints).
EOF
}

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
CONFIG="configs/v100.py"
WORKDIR=""
NUM_GPUS=""
PER_GPU=0
VENV="$REPO/.venv-cuda12"
INSTALL=0
while getopts "c:w:g:pe:ih" opt; do
  case "$opt" in
    c) CONFIG="$OPTARG" ;;
    w) WORKDIR="$OPTARG" ;;
    g) NUM_GPUS="$OPTARG" ;;
    p) PER_GPU=1 ;;
    e) VENV="$OPTARG" ;;
    i) INSTALL=1 ;;
    h) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))  # getopts has consumed a "--"; the rest goes to distil_jax.main
EXTRA=("$@")
WORKDIR="${WORKDIR:-workdirs/$(basename "$CONFIG" .py)}"

if ((INSTALL)); then
  bash launch/install.sh -e "$VENV" cuda12
fi
PYTHON="python3"
if [[ -x "$VENV/bin/python" ]]; then
  PYTHON="$VENV/bin/python"
fi
if [[ -z "$NUM_GPUS" ]]; then
  NUM_GPUS="$(nvidia-smi --list-gpus | wc -l)"
fi
if ((NUM_GPUS < 1)); then
  echo "no GPU found (nvidia-smi --list-gpus is empty)" >&2
  exit 1
fi
GPU_LIST="$(seq -s, 0 $((NUM_GPUS - 1)))"
# 16 GB V100s: let XLA take more than its default 75% of GPU memory up front.
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}"
MAIN=("$PYTHON" -m distil_jax.main --config="$CONFIG" --workdir="$WORKDIR")
MAIN+=(${EXTRA[@]+"${EXTRA[@]}"})

if ((!PER_GPU)); then
  echo "$NUM_GPUS GPUs, one process; config $CONFIG, workdir $WORKDIR"
  CUDA_VISIBLE_DEVICES="$GPU_LIST" exec "${MAIN[@]}"
fi

PORT="$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
mkdir -p "$WORKDIR/logs"
echo "$NUM_GPUS processes, one per GPU, coordinator 127.0.0.1:$PORT; logs in $WORKDIR/logs"
PIDS=()
stop_all() {
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
}
# Ctrl-C or a SIGTERM from outside reaches every process, so all save the same step.
trap 'stop_all' INT TERM
for ((i = 0; i < NUM_GPUS; i++)); do
  ARGS=(--coordinator_address="127.0.0.1:$PORT" --num_processes="$NUM_GPUS" --process_id="$i")
  LOG="$WORKDIR/logs/process_$i.log"
  touch "$LOG"  # appended to: a resumed run keeps the earlier runs' lines
  if ((i == 0)); then
    CUDA_VISIBLE_DEVICES="$i" "${MAIN[@]}" "${ARGS[@]}" > >(tee -a "$LOG") 2>&1 &
  else
    CUDA_VISIBLE_DEVICES="$i" "${MAIN[@]}" "${ARGS[@]}" >>"$LOG" 2>&1 &
  fi
  PIDS+=("$!")
done

# The first process to fail stops the others: they would otherwise wait in a
# collective until the coordinator's heartbeat timeout. (Polling rather than
# `wait -n`, which would also return for process 0's tee.)
status=0
remaining=("${PIDS[@]}")
while ((${#remaining[@]})); do
  still=()
  for pid in "${remaining[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      still+=("$pid")
      continue
    fi
    code=0
    wait "$pid" || code=$?
    if ((code != 0 && status == 0)); then
      status=$code
      # 75: a SIGTERM-ed process that saved; its peers are saving the same step.
      ((code == 75)) || stop_all
    fi
  done
  remaining=(${still[@]+"${still[@]}"})
  ((${#remaining[@]})) && sleep 2
done
if ((status == 75)); then
  echo "stopped by SIGTERM after a checkpoint; run the same command again to resume"
elif ((status != 0)); then
  echo "a process failed (exit $status); see $WORKDIR/logs" >&2
fi
exit "$status"
