#!/usr/bin/env bash
# Installs distil_jax's dependencies into a virtual environment for one accelerator.
# The other launch scripts call it (on TPU workers, SLURM nodes, a GPU machine);
# it can also be run by hand.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: launch/install.sh [-e VENV] ACCEL

Creates (or updates) the virtual environment VENV and installs requirements.txt
plus the JAX build for ACCEL:

  cpu      jax as in requirements.txt (tests, CPU-only machines)
  cuda12   jax[cuda12]: NVIDIA GPUs. CUDA 12, not 13: CUDA 13 dropped Volta, so
           these are the wheels that run on V100s (sm_70); A100/H100 run them too
  tpu      jax[tpu]: Cloud TPU VMs (libtpu comes from PyPI)

Options:
  -e VENV  environment directory (default: .venv in the repository)
  -h       this help

Needs Python >= 3.11 (3.12 for jax 0.11). Uses `uv` when it is on PATH (and
then fetches a Python 3.12 if the system has none), else python3.12/3.11.
Run from anywhere; paths are relative to the repository.
EOF
}

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO/.venv"
while getopts "e:h" opt; do
  case "$opt" in
    e) VENV="$OPTARG" ;;
    h) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
if [[ $# -ne 1 ]]; then
  usage >&2
  exit 2
fi
ACCEL="$1"
# The same upper bound as requirements.txt: both jax versions the code is tested on.
JAX_RANGE=">=0.10,<0.12"
case "$ACCEL" in
  cpu) JAX_SPEC="" ;;
  cuda12) JAX_SPEC="jax[cuda12]$JAX_RANGE" ;;
  tpu) JAX_SPEC="jax[tpu]$JAX_RANGE" ;;
  *) echo "unknown ACCEL '$ACCEL' (cpu, cuda12 or tpu)" >&2; exit 2 ;;
esac

if command -v uv >/dev/null 2>&1; then
  # uv brings its own Python when the system's is too old (Ubuntu 22.04 TPU images: 3.10).
  [[ -x "$VENV/bin/python" ]] || uv venv --python 3.12 "$VENV"
  pip_install() { uv pip install --python "$VENV/bin/python" "$@"; }
else
  if [[ ! -x "$VENV/bin/python" ]]; then
    PY=""
    for candidate in python3.12 python3.11 python3; do
      if command -v "$candidate" >/dev/null 2>&1 &&
        "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        PY="$candidate"
        break
      fi
    done
    if [[ -z "$PY" ]]; then
      echo "no Python >= 3.11 found; install uv (https://docs.astral.sh/uv/) or python3.12" >&2
      exit 1
    fi
    "$PY" -m venv "$VENV"
  fi
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  pip_install() { "$VENV/bin/python" -m pip install "$@"; }
fi

# torch only serves the Hugging Face boundary (teacher import, export): the CPU build
# from PyTorch's own index, since PyPI's Linux wheel drags in gigabytes of CUDA libraries.
TORCH_PIN="$(grep -E '^torch==' "$REPO/requirements.txt" || echo torch)"
pip_install "$TORCH_PIN" --index-url https://download.pytorch.org/whl/cpu
pip_install -r "$REPO/requirements.txt"
if [[ -n "$JAX_SPEC" ]]; then
  pip_install "$JAX_SPEC"
fi
"$VENV/bin/python" -c 'import jax, flax, orbax.checkpoint; print("jax", jax.__version__, "flax", flax.__version__)'
echo "installed into $VENV ($ACCEL); activate with: source $VENV/bin/activate"
