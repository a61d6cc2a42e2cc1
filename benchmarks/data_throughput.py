"""Data throughput: prepare one real Wikipedia shard, then stream training batches.

    python benchmarks/data_throughput.py [--path FILE] [--num_workers 2] [--global_batch 32]

Prints preparation tokens/s (wall, and per tokenising process) and the loader's
batches/s, sequences/s and padding at bucket lengths 128/256/512. Needs the
shared data (../shared/data from the repository root); exits with a message,
status 0, when it is absent. The prepared directory goes under --workdir and is
rebuilt unless --reuse is given.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import os
import shutil
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(REPO, "..", "shared", "data")
DEFAULT_PATH = os.path.join(SHARED, "pretrain", "wikipedia_en_2019_chinapedia", "train.00.txt.gz")
DEFAULT_TOKENIZER = os.path.join(SHARED, "tokenizers", "bert-base-uncased")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", default=DEFAULT_PATH, help="text file (paragraph layout)")
    parser.add_argument("--tokenizer", default=DEFAULT_TOKENIZER, help="HF tokenizer directory")
    parser.add_argument("--workdir", default=os.path.join(REPO, "out", "bench_data"))
    parser.add_argument("--num_workers", type=int, default=2, help="tokenising processes")
    parser.add_argument("--global_batch", type=int, default=32)
    parser.add_argument("--process_count", type=int, default=1, help="simulated processes")
    parser.add_argument("--steps", type=int, default=300, help="batches timed")
    parser.add_argument("--loader_threads", type=int, default=2)
    parser.add_argument("--reuse", action="store_true", help="keep an existing preparation")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    for what, path in (("corpus", args.path), ("tokenizer", args.tokenizer)):
        if not os.path.exists(path):
            print(f"SKIP: {what} not found at {path} (the shared data is not present)")
            return 0
    sys.path.insert(0, REPO)
    from distil_jax.data import data_config, load_summary, make_train_loader, prepare
    from distil_jax.data.config import text_files_source

    cfg = data_config()
    cfg.sources = [text_files_source(os.path.abspath(args.path))]
    cfg.prepared_dir = os.path.join(args.workdir, "prepared")
    cfg.num_workers = args.num_workers
    cfg.loader_threads = args.loader_threads
    if not args.reuse:
        shutil.rmtree(cfg.prepared_dir, ignore_errors=True)

    start = time.perf_counter()
    prepared_dir = prepare(cfg, args.tokenizer)
    wall = time.perf_counter() - start
    summary = load_summary(prepared_dir)
    timing = summary["timing"]
    print(f"\n== preparation of {args.path}")
    print(
        f"documents {summary['documents']:,}  paragraphs {summary['paragraphs']:,}  "
        f"sequences {summary['num_sequences']:,}  tokens {summary['num_tokens']:,}"
    )
    print(
        f"dropped: short {summary['dropped_short']:,}, unk {summary['dropped_unk']:,}; "
        f"split paragraphs {summary['split_paragraphs']:,}"
    )
    print(
        f"workers {timing['num_workers']}: tokenise {timing['tokenise_seconds']:.1f} s, "
        f"total {timing['total_seconds']:.1f} s (call {wall:.1f} s incl. start-up)"
    )
    print(
        f"tokens/s: {timing['tokens_per_second']:,} wall, "
        f"{timing['tokens_per_second_per_process']:,} per process"
    )
    split = summary["splits"]["train"]
    print(f"length histogram {split['length_histogram']}")
    print(f"bucket histogram {split['bucket_histogram']}  fill {split['bucket_fill']:.3f}")

    loader = make_train_loader(
        cfg,
        prepared_dir,
        global_batch_size=args.global_batch,
        process_index=0,
        process_count=args.process_count,
        seed=0,
    )
    list(itertools.islice(loader, 5))  # warm-up: thread pool, first plan, page cache
    shapes: collections.Counter = collections.Counter()
    real = padded = 0
    start = time.perf_counter()
    for batch in itertools.islice(loader, args.steps):
        shapes[batch["input_ids"].shape[1]] += 1
        real += int(batch["attention_mask"].sum())
        padded += batch["attention_mask"].size
    seconds = time.perf_counter() - start
    loader.close()
    rows = args.global_batch // args.process_count
    print(
        f"\n== loader: global batch {args.global_batch}, {args.process_count} process(es) "
        f"({rows} rows each), buckets {tuple(cfg.bucket_lengths)}, "
        f"{args.loader_threads} threads"
    )
    print(
        f"{args.steps / seconds:,.1f} batches/s, {args.steps * rows / seconds:,.0f} sequences/s, "
        f"{real / seconds:,.0f} real tokens/s per process"
    )
    print(
        f"batch lengths {dict(sorted(shapes.items()))}, real/padded tokens {real / padded:.3f}, "
        f"steps per epoch {loader.steps_per_epoch}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
