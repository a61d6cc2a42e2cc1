"""Per-split statistics written to ``summary.json``."""

from __future__ import annotations

import numpy as np


def histogram(lengths: np.ndarray, upper_edges: list[int]) -> dict:
    """Sequences per length bin ``(previous edge, edge]`` (the first bin starts at 0)."""
    bins = np.searchsorted(np.asarray(upper_edges), lengths, side="left")
    counts = np.bincount(bins, minlength=len(upper_edges))[: len(upper_edges)]
    return dict(upper_edges=list(upper_edges), counts=[int(c) for c in counts])


def split_summary(
    lengths: np.ndarray, documents: int, max_len: int, bucket_lengths: tuple[int, ...]
) -> dict:
    """Documents, sequences, tokens, a power-of-two length histogram, bucket fill."""
    powers = [1 << k for k in range(3, max_len.bit_length()) if 1 << k < max_len]
    buckets = histogram(lengths, list(bucket_lengths))
    padded = sum(c * b for c, b in zip(buckets["counts"], bucket_lengths, strict=True))
    tokens = int(lengths.sum())
    return dict(
        documents=int(documents),
        sequences=int(len(lengths)),
        tokens=tokens,
        mean_length=float(lengths.mean()) if len(lengths) else 0.0,
        length_histogram=histogram(lengths, powers + [max_len]),
        bucket_histogram=buckets,
        # Real tokens over padded tokens if every sequence sat in its own bucket:
        # the padding efficiency the bucket lengths allow.
        bucket_fill=tokens / padded if padded else 0.0,
    )
