"""Inference: the student's speed-up over its teacher, at batch 1 and batched.

    python benchmarks/inference_speed.py                         # BERT-base vs 6 layers, L128
    python benchmarks/inference_speed.py --impl jax,torch --batch 32 --seq_len 128
    python benchmarks/inference_speed.py --teacher_layers 2 --student_layers 1 --hidden 128 \
        --heads 2 --ffn 512 --vocab 1000 --seq_len 128 --batch 8   # small CPU shape

Times the encoder forward (embeddings + layers, last hidden state: what a
downstream task runs before its small head) of the teacher and of the student
at batch 1 and at --batch, with the weights stored in the compute dtype, as an
inference deployment would. Same timing rules as the step benchmarks: warm-up
(and JAX compilation) excluded, each call waited for, median of --steps.
speed-up = teacher time / student time (the paper's Table 3: 1.6x on CPU, batch 1).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_common as common  # noqa: E402


def _median_times(fns: dict, steps: int, warmup: int) -> dict[str, float]:
    """Median seconds of each fn() (each blocks until its result is ready).

    The models take turns call by call, so a busy spell of a shared machine
    slows both rather than skewing their ratio.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {name: [] for name in fns}
    for _ in range(steps):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def _jax_forward_fns(shape: common.Shape, weights, batch: int):
    """{'teacher': fn, 'student': fn}, each running one jitted encoder forward."""
    import jax
    import jax.numpy as jnp

    from distil_jax.models import DTYPES, MaskedLM

    dtype = DTYPES[shape.dtype]
    ids, mask = common.make_batch(dataclasses.replace(shape, batch=batch))
    ids, mask = jax.device_put(ids), jax.device_put(mask)
    fns = {}
    for name, cfg, params in zip(
        ("teacher", "student"), common.model_configs(shape), weights, strict=True
    ):
        model = MaskedLM(cfg, dtype=dtype, param_dtype=dtype)
        params = jax.device_put(jax.tree.map(lambda x: jnp.asarray(x, dtype), params))
        forward = jax.jit(
            lambda p, i, m, model=model: model.apply({"params": p}, i, m, compute_logits=False)
        )
        fns[name] = lambda f=forward, p=params: jax.block_until_ready(f(p, ids, mask))
    return fns


def _torch_forward_fns(shape: common.Shape, weights, batch: int):
    import torch
    import torch_reference

    device = torch_reference.torch_device()
    dtype = torch_reference.TORCH_DTYPES[shape.dtype]
    teacher, student = torch_reference.build_models(shape, weights, "sdpa")
    ids, mask = common.make_batch(dataclasses.replace(shape, batch=batch))
    ids = torch.from_numpy(ids).long().to(device)
    mask = torch.from_numpy(mask).long().to(device)
    fns = {}
    # The encoders alone (BertModel / DistilBertModel), as a fine-tuned model runs them.
    for name, encoder in (("teacher", teacher.bert), ("student", student.distilbert)):
        encoder = encoder.to(device=device, dtype=dtype).eval()

        def run(encoder=encoder):
            with torch.inference_mode():
                encoder(input_ids=ids, attention_mask=mask)
            torch_reference.synchronize(device)

        fns[name] = run
    return fns


def benchmark(
    shape: common.Shape, impls=("jax",), steps: int = 20, warmup: int = 3, weights=None
) -> list[dict]:
    """One result per (implementation, batch size in {1, shape.batch})."""
    if weights is None and "jax" in impls:
        weights = common.make_weights(shape)
    results = []
    for impl in impls:
        for batch in sorted({1, shape.batch}):
            make = _jax_forward_fns if impl == "jax" else _torch_forward_fns
            fns = make(shape, weights, batch)
            t = _median_times(fns, steps, warmup)
            results.append(
                {
                    "kind": "inference",
                    "impl": impl,
                    "label": dataclasses.replace(shape, batch=batch).label(),
                    "batch": batch,
                    "seq_len": shape.seq_len,
                    "dtype": shape.dtype,
                    "teacher_s": t["teacher"],
                    "student_s": t["student"],
                    "teacher_seqs_per_s": batch / t["teacher"],
                    "student_seqs_per_s": batch / t["student"],
                    "speedup": t["teacher"] / t["student"],
                }
            )
    return results


def report_line(r: dict) -> str:
    return (
        f"{r['impl']:<6} {r['label']:<44} | inference teacher {1e3 * r['teacher_s']:8.2f} ms"
        f" ({r['teacher_seqs_per_s']:8.1f} seq/s) | student {1e3 * r['student_s']:8.2f} ms"
        f" ({r['student_seqs_per_s']:8.1f} seq/s) | speed-up {r['speedup']:.2f}x"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_shape_args(parser)
    common.add_option_args(parser)  # only --torch_threads is read; the rest are accepted
    parser.add_argument("--impl", default="jax", help="jax, torch or jax,torch")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)
    impls = [i for i in args.impl.split(",") if i]
    if "jax" in impls:
        import jax

        accelerator = jax.default_backend() != "cpu"
    else:
        import torch

        accelerator = torch.cuda.is_available()
    results = []
    for shape in common.shapes_from_args(args, accelerator):
        # Weights from the jax initialiser only where jax runs anyway; torch alone
        # keeps its own init so it never starts (and pre-allocates on) a jax GPU backend.
        weights = common.make_weights(shape, args.seed) if "jax" in impls else None
        for r in benchmark(shape, impls, args.steps, args.warmup, weights):
            results.append(r)
            print(report_line(r), flush=True)
    common.write_json(args.json_out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
