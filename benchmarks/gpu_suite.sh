#!/usr/bin/env bash
# Every GPU figure of benchmarks/README.md in one command, written to one folder.
#
#   benchmarks/gpu_suite.sh [OUT_DIR]     (default: benchmarks/results/DATE-HOST)
#
# BERT-base -> 6 layers in bfloat16: ours vs the PyTorch reference at L=128 and
# L=512 (markdown tables + JSON), our step's micro-batch sweep, one A/B per
# optimisation (each option against the step without it, alternating in one
# process), and student vs teacher inference. OUT_DIR/summary.md collects the
# tables; every run's full output is in OUT_DIR/NAME.log.
# PYTHON (default: python) is the interpreter; STEPS (default 40) the timed steps.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out=${1:-"$here/results/$(date +%Y%m%d-%H%M)-$(hostname -s)"}
python=${PYTHON:-python}
steps=${STEPS:-40}
mkdir -p "$out"

failed=()
run() { # NAME SCRIPT ARGS...: one benchmark, its output kept in NAME.log
    local name=$1 script=$2
    shift 2
    echo "== $name: $script $*"
    if ! "$python" "$here/$script" "$@" 2>&1 | tee "$out/$name.log"; then
        failed+=("$name")
    fi
}

bf16=(--dtype bfloat16 --steps "$steps")
for point in "128 64" "512 16"; do
    read -r len batch <<<"$point"
    run "compare_L$len" compare.py "${bf16[@]}" --seq_len "$len" --batch "$batch" --rounds 4 \
        --json_out "$out/compare_L$len.json" --md_out "$out/compare_L$len.md"
done
run sweep_L128 train_throughput.py "${bf16[@]}" --seq_len 128 --batch 64,128,256 \
    --json_out "$out/sweep_L128.json"
run sweep_L512 train_throughput.py "${bf16[@]}" --seq_len 512 --batch 16,32,64 \
    --json_out "$out/sweep_L512.json"
run ab_fused_vocab_grad train_throughput.py "${bf16[@]}" --seq_len 128 --batch 64 \
    --ab=--no_fused_vocab_grad --json_out "$out/ab_fused_vocab_grad.json"
run ab_cudnn_attention train_throughput.py "${bf16[@]}" --seq_len 512 --batch 16 \
    --no_attention_dropout --attention xla --ab=--attention=cudnn \
    --json_out "$out/ab_cudnn_attention.json"
run ab_no_attention_dropout train_throughput.py "${bf16[@]}" --seq_len 512 --batch 16 \
    --ab=--no_attention_dropout --json_out "$out/ab_no_attention_dropout.json"
run ab_remat train_throughput.py "${bf16[@]}" --seq_len 512 --batch 64 \
    --ab=--remat --json_out "$out/ab_remat.json"
run inference inference_speed.py --impl jax,torch --dtype bfloat16 --seq_len 128 --batch 32 \
    --json_out "$out/inference.json"

{
    echo "# GPU suite, $(date +%Y-%m-%d)"
    echo
    for f in "$out"/compare_L*.md; do
        [[ -f $f ]] && sed 's/^# /## /' "$f" && echo
    done
    echo "## Our step and its options (report lines)"
    echo
    for name in sweep_L128 sweep_L512 ab_fused_vocab_grad ab_cudnn_attention \
        ab_no_attention_dropout ab_remat inference; do
        [[ -f $out/$name.log ]] || continue
        echo "### $name"
        echo
        grep -E '^(A: |B: |A/B|jax |torch )' "$out/$name.log" | sed 's/^/    /' || true
        echo
    done
    if ((${#failed[@]})); then
        echo "Failed: ${failed[*]} (see their .log files)"
    fi
} >"$out/summary.md"
echo "summary: $out/summary.md"
((${#failed[@]} == 0))
