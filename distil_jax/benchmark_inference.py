"""Table 3: parameters and inference time of teacher and student on the same inputs.

    python -m distil_jax.benchmark_inference --models TEACHER_DIR,STUDENT_DIR \
        [--batch_sizes=1,32] [--seq_len=128] [--runs=20] [--output=table3.md]

Each model is a Hugging Face BERT/DistilBERT directory (an MLM checkpoint, an
export, or a fine-tuned model) run as the paper timed it: a sequence
regression head (STS-B) on top of the encoder, with whatever head the
checkpoint holds or a random one. Inputs are random token ids of the given
shape, the same for every model (no tokenizer involved). Each forward is
jitted once; compilation and `--warmup` calls are excluded; the figure is the
median of `--runs` timed calls, each waited on with `block_until_ready`, the
models' calls interleaved so that background load hits them alike.
The paper measured batch 1 on CPU; larger batches show throughput. Speed-up
is the first model's time divided by each model's.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time

import numpy as np
from absl import app, flags

flags.DEFINE_list("models", None, "Model directories; the first is the reference (teacher).")
flags.DEFINE_list("batch_sizes", ["1", "32"], "Batch sizes to time.")
flags.DEFINE_integer("seq_len", 128, "Tokens per sequence.")
flags.DEFINE_integer("runs", 20, "Timed calls per (model, batch size); the median is reported.")
flags.DEFINE_integer("warmup", 2, "Untimed calls after compilation.")
flags.DEFINE_string("output", None, "Also write the markdown table to this file.")
flags.DEFINE_string("json_output", None, "Also write the raw figures as JSON to this file.")
flags.DEFINE_string("dtype", "float32", "Compute dtype: float32, bfloat16 or float16.")

STSB_DEV_SIZE = 1500  # sequences in STS-B dev, the set the paper timed


def random_inputs(batch: int, length: int, vocab_size: int, seed: int = 0):
    """ids [B, L] drawn above the usual special-token ids, full attention."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(min(1000, vocab_size - 1), vocab_size, size=(batch, length), dtype=np.int32)
    return ids, np.ones_like(ids)


def load_model(model_dir: str, dtype: str):
    """(jitted forward, device params, parameter count, config) of a regression model."""
    import jax

    from distil_jax import hf
    from distil_jax.eval.heads import count_params, make_task_model
    from distil_jax.eval.hf_heads import draw_fresh, load_task_model
    from distil_jax.models import DTYPES

    loaded = load_task_model(hf.resolve_model_dir(model_dir), "regression", 1)
    model = make_task_model(loaded.cfg, loaded.head, DTYPES[dtype])
    params = jax.device_put(draw_fresh(loaded, seed=0))

    @jax.jit
    def forward(params, ids, mask):  # [B, L] -> [B, 1]
        return model.apply({"params": params}, ids, mask)

    return forward, params, count_params(params), loaded.cfg


def time_forwards(models, ids, mask, runs: int, warmup: int) -> list[dict[str, float]]:
    """Median and min ms per call of each (forward, params), timed round-robin.

    Interleaving the models' calls exposes them to the same background load, so
    a busy moment on a shared machine does not land on one model only.
    """
    for forward, params in models:
        forward(params, ids, mask).block_until_ready()  # compile: not timed
        for _ in range(warmup):
            forward(params, ids, mask).block_until_ready()
    times: list[list[float]] = [[] for _ in models]
    for _ in range(runs):
        for i, (forward, params) in enumerate(models):
            t0 = time.perf_counter()
            forward(params, ids, mask).block_until_ready()
            times[i].append(time.perf_counter() - t0)
    return [{"median_ms": 1e3 * statistics.median(t), "min_ms": 1e3 * min(t)} for t in times]


def benchmark(
    model_dirs: list[str],
    batch_sizes: list[int],
    seq_len: int,
    runs: int = 20,
    warmup: int = 2,
    dtype: str = "float32",
) -> list[dict]:
    """One row per (model, batch size); `speedup` relative to the first model."""
    if len(model_dirs) < 1:
        raise ValueError("give at least one model directory (--models A,B)")
    if runs < 1 or seq_len < 1 or any(b < 1 for b in batch_sizes):
        raise ValueError("runs, seq_len and batch sizes must be >= 1")
    loaded = [(d, *load_model(d, dtype)) for d in model_dirs]
    vocab = min(cfg.vocab_size for *_, cfg in loaded)  # ids valid for every model
    for d, *_, cfg in loaded:
        if seq_len > cfg.max_position_embeddings:
            raise ValueError(
                f"seq_len {seq_len} exceeds {d}'s max_position_embeddings "
                f"{cfg.max_position_embeddings}"
            )
    rows = []
    for batch in batch_sizes:
        ids, mask = random_inputs(batch, seq_len, vocab)
        timings = time_forwards([(f, p) for _, f, p, _, _ in loaded], ids, mask, runs, warmup)
        for (d, _, _, n_params, cfg), t in zip(loaded, timings, strict=True):
            rows.append(
                {
                    "model": d,
                    "arch": cfg.arch,
                    "layers": cfg.num_layers,
                    "parameters": n_params,
                    "batch_size": batch,
                    "seq_len": seq_len,
                    **t,
                    "sequences_per_s": 1e3 * batch / t["median_ms"],
                    "stsb_dev_s": t["median_ms"] * STSB_DEV_SIZE / batch / 1e3,
                    "speedup": timings[0]["median_ms"] / t["median_ms"],
                }
            )
    return rows


def render(rows: list[dict]) -> str:
    import jax

    device = jax.devices()[0]
    lines = [
        f"Inference time, seq_len {rows[0]['seq_len']}, {device.platform} "
        f"({device.device_kind}; {os.cpu_count()} CPU cores, {platform.machine()}); "
        "median of timed calls after compilation.",
        "",
        "| model | arch | layers | params (M) | batch | ms / batch | sequences / s "
        f"| s per STS-B dev ({STSB_DEV_SIZE}) | speed-up |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        name = os.path.basename(os.path.normpath(r["model"]))
        lines.append(
            f"| {name} | {r['arch']} | {r['layers']} | {r['parameters'] / 1e6:.2f} "
            f"| {r['batch_size']} | {r['median_ms']:.2f} | {r['sequences_per_s']:.1f} "
            f"| {r['stsb_dev_s']:.1f} | {r['speedup']:.2f}x |"
        )
    return "\n".join(lines)


def main(argv):
    del argv
    flags_ = flags.FLAGS
    if not flags_.models:
        raise app.UsageError("--models is required: comma-separated model directories")
    rows = benchmark(
        flags_.models,
        [int(b) for b in flags_.batch_sizes],
        flags_.seq_len,
        flags_.runs,
        flags_.warmup,
        flags_.dtype,
    )
    table = render(rows)
    print(table)
    if flags_.output:
        with open(flags_.output, "w") as f:
            f.write(table + "\n")
    if flags_.json_output:
        with open(flags_.json_output, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    app.run(main)
