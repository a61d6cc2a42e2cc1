"""Batched tokenisation of paragraph chunks, in worker processes or in-process.

Chunks are processed in parallel but their results come back in submission
order, so a preparation's output does not depend on the number of workers.
Workers are started with 'spawn': forking a process that has imported JAX (the
trainer calls ``prepare`` in-process) or used the Rust tokenizer can deadlock.
"""

from __future__ import annotations

import collections
import dataclasses
import multiprocessing
import os
import time
from collections.abc import Iterable, Iterator

import numpy as np

from distil_jax.data.sequences import RuleCounts, SequenceRules, build_sequences


@dataclasses.dataclass
class Chunk:
    """Paragraphs to tokenise together, each with its split code and source."""

    texts: list[str]
    split_codes: list[int]  # per paragraph: index into the list of split names
    source_ids: list[int]  # per paragraph: position in data.sources


@dataclasses.dataclass
class ChunkResult:
    """Kept sequences of a chunk, flattened, with what the rules did."""

    ids: np.ndarray  # int32 [total tokens], sequences back to back
    lengths: np.ndarray  # int32 [sequences]
    split_codes: np.ndarray  # uint8 [sequences]
    source_ids: np.ndarray  # int16 [sequences]
    counts: RuleCounts
    seconds: float  # time the worker spent on this chunk (per-process throughput)


# Set once per worker process by _init_worker (a tokenizer is not cheap to pickle).
_TOKENIZER = None
_RULES: SequenceRules | None = None


def _init_worker(tokenizer_dir: str, rules: SequenceRules, in_worker: bool = True) -> None:
    global _TOKENIZER, _RULES
    if in_worker:
        # Processes already give the parallelism; Rust threads on top would oversubscribe.
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
    from distil_jax.data.tokenizer import load_tokenizer

    backend = load_tokenizer(tokenizer_dir).backend_tokenizer
    # A tokenizer.json may carry truncation and padding settings (the shared
    # bert-base-uncased one truncates and pads to 128): the reference tokenises
    # whole paragraphs and cuts them itself, so both must be off here.
    backend.no_truncation()
    backend.no_padding()
    _TOKENIZER = backend
    _RULES = rules


def _tokenize_chunk(chunk: Chunk) -> ChunkResult:
    start = time.perf_counter()
    counts = RuleCounts()
    encodings = _TOKENIZER.encode_batch(chunk.texts, add_special_tokens=False)
    pieces, splits, sources = [], [], []
    for encoding, split_code, source_id in zip(
        encodings, chunk.split_codes, chunk.source_ids, strict=True
    ):
        kept = build_sequences(encoding.ids, _RULES, counts)
        pieces.extend(kept)
        splits.extend([split_code] * len(kept))
        sources.extend([source_id] * len(kept))
    return ChunkResult(
        ids=np.concatenate(pieces) if pieces else np.zeros((0,), np.int32),
        lengths=np.asarray([len(p) for p in pieces], np.int32),
        split_codes=np.asarray(splits, np.uint8),
        source_ids=np.asarray(sources, np.int16),
        counts=counts,
        seconds=time.perf_counter() - start,
    )


def tokenize_chunks(
    chunks: Iterable[Chunk], tokenizer_dir: str, rules: SequenceRules, num_workers: int
) -> Iterator[ChunkResult]:
    """Results for ``chunks`` in order; ``num_workers`` <= 1 tokenises in this process."""
    if num_workers <= 1:
        _init_worker(tokenizer_dir, rules, in_worker=False)
        for chunk in chunks:
            yield _tokenize_chunk(chunk)
        return
    context = multiprocessing.get_context("spawn")
    with context.Pool(num_workers, _init_worker, (tokenizer_dir, rules)) as pool:
        # A bounded window of chunks in flight: Pool.imap would read the whole
        # corpus ahead into memory; this keeps every worker busy and no more.
        in_flight: collections.deque = collections.deque()
        for chunk in chunks:
            in_flight.append(pool.apply_async(_tokenize_chunk, (chunk,)))
            if len(in_flight) >= 2 * num_workers:
                yield in_flight.popleft().get()
        while in_flight:
            yield in_flight.popleft().get()
