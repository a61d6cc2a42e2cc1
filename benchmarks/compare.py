"""Ours vs the PyTorch reference in one invocation: same weights, batch and shapes, alternating.

    python benchmarks/compare.py --seq_len 128,512 --batch 64 --dtype bfloat16   # BERT-base
    python benchmarks/compare.py --teacher_layers 2 --student_layers 1 --hidden 128 --heads 2 \
        --ffn 512 --vocab 1000 --seq_len 128 --batch 8                         # small CPU shape

For each (seq_len, batch) point both steps are built on the same random
weights and the same batch, warmed up, then timed in --rounds alternating
rounds (jax, torch, jax, torch, ...) of --steps/--rounds steps each, so a
slow spell of a shared machine lands on both. Prints both report lines and
ratio = our tokens/s ÷ the reference's.

Before timing, a loss-agreement check: one masked batch (our masking, fixed
key), fed to our `steps.student_loss` and to the reference's loss, float32,
dropout off; every term (total, ce, mlm, cos) must agree within --check_tol
(1e-4), or the exit status is 1: otherwise the two would not be doing the same work.
It runs at the first point's shape with the batch capped at --check_batch.

Both frameworks share the GPU in-process: JAX's pre-allocation is switched off
(XLA_PYTHON_CLIENT_PREALLOCATE=false) so PyTorch has room, and PyTorch's cache
is emptied after its rounds. --isolate instead runs every round in a fresh
subprocess of train_throughput.py / torch_reference.py (each with the whole
device; compilation is repeated but never timed): use it for the largest
batches, or if the two CUDA stacks do not coexist in one process.
"""

from __future__ import annotations

import os
import sys

# Before jax is imported: JAX must not reserve 75% of the GPU that PyTorch shares.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import shlex  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import bench_common as common  # noqa: E402
import jax  # noqa: E402

if __name__ == "__main__":
    # Start JAX's GPU backend before PyTorch is imported: JAX checks the cuDNN version it
    # loads against the one it was built with, so it must load its own first. (Not on
    # import, where a host process may still have backend settings to make.)
    jax.devices()

import torch  # noqa: E402
import torch_reference  # noqa: E402
import train_throughput  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
TERMS = ("loss", "ce", "mlm", "cos")


def check_losses(shape: common.Shape, opts, seed: int = 0) -> dict[str, dict[str, float]]:
    """Both implementations' loss terms on the same weights and masked batch (float32)."""
    shape = dataclasses.replace(shape, dtype="float32")
    weights = common.make_weights(shape, seed)
    ids, mask = common.make_batch(shape, seed)
    masked_ids, labels = train_throughput.mask_once(shape, ids, mask, seed)
    ours = train_throughput.our_losses(shape, weights, masked_ids, mask, labels, opts)
    ref = torch_reference.reference_losses(shape, weights, masked_ids, mask, labels, opts)
    return {k: {"jax": ours[k], "torch": ref[k], "abs_diff": abs(ours[k] - ref[k])} for k in TERMS}


def _release_torch() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def compare_in_process(shape: common.Shape, opts) -> tuple[dict, dict]:
    weights = common.make_weights(shape, opts.seed)
    runners = []
    try:
        runners.append(train_throughput.JaxStep(shape, opts, weights, seed=opts.seed))
        runners.append(torch_reference.TorchStep(shape, opts, weights, seed=opts.seed))
        del weights
        for r in runners:
            r.time_steps(opts.warmup)
        per_round = max(1, opts.steps // opts.rounds)
        times = {r.impl: [] for r in runners}
        for _ in range(opts.rounds):
            for r in runners:
                times[r.impl] += r.time_steps(per_round)
        return tuple(r.result(times[r.impl]) for r in runners)
    except Exception as e:
        if not common.is_oom(e):
            raise
        # Both share the device here, so neither figure would stand alone.
        error = "OOM with both in one process (try --isolate)"
        return tuple(common.error_result(impl, "", shape, error) for impl in ("jax", "torch"))
    finally:
        runners.clear()
        _release_torch()


def _script_argv(args: argparse.Namespace, shape: common.Shape, steps: int) -> list[str]:
    """The command line that makes a single-implementation script time this point."""
    argv = [f"--{k}={v}" for k, v in dataclasses.asdict(shape).items()]
    argv += [f"--steps={steps}", f"--warmup={args.warmup}", f"--seed={args.seed}"]
    if args.peak_tflops:
        argv.append(f"--peak_tflops={args.peak_tflops}")
    probe = argparse.ArgumentParser()
    common.add_option_args(probe)
    for name, default in vars(probe.parse_args([])).items():
        value = getattr(args, name)
        if isinstance(default, bool):
            argv += [f"--{name}"] if value else []
        else:
            argv.append(f"--{name}={value}")
    return argv


def compare_isolated(shape: common.Shape, opts) -> tuple[dict, dict]:
    """Every round a fresh process per implementation; the step times are pooled."""
    scripts = {"jax": "train_throughput.py", "torch": "torch_reference.py"}
    base = _script_argv(opts, shape, max(1, opts.steps // opts.rounds))
    rounds: dict[str, list[dict]] = {impl: [] for impl in scripts}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(opts.rounds):
            for impl, script in scripts.items():
                out = os.path.join(tmp, f"{impl}_{i}.json")
                cmd = [sys.executable, os.path.join(HERE, script), *base, f"--json_out={out}"]
                subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
                with open(out) as f:
                    rounds[impl].append(json.load(f)[0])
    results = []
    for impl, rs in rounds.items():
        if any("error" in r for r in rs):
            results.append(next(r for r in rs if "error" in r))
            continue
        # Each round reports its median step; the figure is the median of those.
        step_times = [r["step_time_s"] for r in rs]
        first = rs[0]
        merged = common.summarise(
            impl,
            first["device"],
            shape,
            step_times,
            first["flops"],
            None if first["peak_tflops"] is None else first["peak_tflops"] * 1e12,
            max((r["peak_mem_bytes"] or 0) for r in rs) or None,
            rs[-1]["losses"],
        )
        merged["timed_steps"] = sum(r["timed_steps"] for r in rs)
        results.append(merged)
    return tuple(results)


def markdown_report(output: dict, header: str, command: str) -> str:
    """The run as markdown: machine and command, loss agreement, one row per point."""
    lines = [f"# Ours vs the PyTorch reference\n\n{header}\n\n    {command}\n"]
    agreement = output.get("loss_agreement")
    if agreement:
        lines += [
            f"Loss agreement at {agreement['label']} (float32, dropout off): "
            f"{'ok' if agreement['ok'] else 'FAILED'}\n",
            "| term | ours | reference | abs diff |",
            "|---|---|---|---|",
        ]
        for k, v in agreement["terms"].items():
            lines.append(f"| {k} | {v['jax']:.6f} | {v['torch']:.6f} | {v['abs_diff']:.1e} |")
        lines.append("")
    lines += [
        "| shape | impl | step median (min-max) ms | seq/s | tokens/s | TFLOP/s | MFU "
        "| peak mem GiB | ratio ours/ref |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    ratios = {r["label"]: r["ratio"] for r in output["ratios"]}
    for r in output["results"]:
        if "error" in r:
            lines.append(f"| {r['label']} | {r['impl']} | {r['error']} | | | | | | |")
            continue
        mfu = "n/a" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"
        mem = "n/a" if r["peak_mem_bytes"] is None else f"{r['peak_mem_bytes'] / 2**30:.2f}"
        has_ratio = r["impl"] == "torch" and r["label"] in ratios  # none if ours failed
        ratio = f"**{ratios[r['label']]:.2f}x**" if has_ratio else ""
        lines.append(
            f"| {r['label']} | {r['impl']} | {1e3 * r['step_time_s']:.1f} "
            f"({1e3 * r['step_time_min_s']:.1f}-{1e3 * r['step_time_max_s']:.1f}) "
            f"| {r['seqs_per_s']:.1f} | {r['tokens_per_s']:.0f} | {r['tflops_per_s']:.2f} "
            f"| {mfu} | {mem} | {ratio} |"
        )
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_shape_args(parser)
    common.add_option_args(parser)
    p = parser.add_argument
    p("--rounds", type=int, default=4, help="alternating timing rounds per implementation")
    p("--isolate", action="store_true", help="each round in a fresh subprocess")
    p("--no_check", action="store_true", help="skip the loss-agreement check")
    p("--check_tol", type=float, default=1e-4)
    p("--check_batch", type=int, default=8, help="batch cap of the loss-agreement check")
    p("--md_out", help="also write the run as a markdown table (machine, command, figures)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.torch_threads:  # before the header names the thread count
        torch.set_num_threads(args.torch_threads)
    accelerator = jax.default_backend() != "cpu"
    shapes = common.shapes_from_args(args, accelerator)
    header = (
        f"jax {jax.__version__} on {train_throughput.device_name()} | torch {torch.__version__} "
        f"on {torch_reference.device_name(torch_reference.torch_device())}"
    )
    print(header)
    output: dict = {"results": [], "ratios": []}
    check_ok = True

    if not args.no_check:
        check_shape = dataclasses.replace(shapes[0], batch=min(shapes[0].batch, args.check_batch))
        agreement = check_losses(check_shape, args, args.seed)
        worst = max(v["abs_diff"] for v in agreement.values())
        print(f"loss agreement at {check_shape.label()} (float32, dropout off):")
        for k, v in agreement.items():
            diff = v["abs_diff"]
            print(f"  {k:<4} jax {v['jax']:.6f}  torch {v['torch']:.6f}  |diff| {diff:.2e}")
        output["loss_agreement"] = {"label": check_shape.label(), "terms": agreement}
        # A failed check is reported (and fails the exit status) but does not stop the
        # timing: on a borrowed accelerator the figures are still worth having.
        check_ok = worst <= args.check_tol
        output["loss_agreement"]["ok"] = check_ok
        if not check_ok:
            print(f"FAIL: the losses differ by {worst:.2e} > {args.check_tol}")

    ok = check_ok
    for shape in shapes:
        if args.isolate:
            ours, ref = compare_isolated(shape, args)
        else:
            ours, ref = compare_in_process(shape, args)
        output["results"] += [ours, ref]
        print(common.report_line(ours))
        print(common.report_line(ref))
        if "error" in ours or "error" in ref:
            continue
        ratio = ours["tokens_per_s"] / ref["tokens_per_s"]
        ok = ok and common.all_finite(ours) and common.all_finite(ref)
        output["ratios"].append({"label": shape.label(), "ratio": ratio})
        print(f"{'ratio':<6} {shape.label():<44} | jax / torch = {ratio:.2f}x", flush=True)
    common.write_json(args.json_out, output)
    if args.md_out:
        command = "python benchmarks/compare.py " + " ".join(shlex.quote(a) for a in argv)
        with open(args.md_out, "w") as f:
            f.write(markdown_report(output, f"{header} | {time.strftime('%Y-%m-%d')}", command))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
