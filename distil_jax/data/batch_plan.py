"""Which sequences form each global batch, and at which bucket length.

The plan is a pure function of (sequence lengths, source ids, weights, seed,
epoch, global batch size, bucket lengths): every process computes the same plan
from the same prepared index, so all processes agree on each global batch and
its padded length, and each takes its own rows. No communication is needed,
and any step of any epoch can be rebuilt from scratch, which makes resuming exact.

Training epoch ``e``:
  1. draw the epoch's multiset of sequences by source weight (integer parts
     repeat a source, a fractional part draws a fresh subset each epoch);
  2. shuffle it globally with a generator seeded by (seed, e);
  3. drop a random ``n mod global_batch`` of them (the last partial batch);
  4. stable-sort by bucket, so batches are length-homogeneous (bucketing), and
     cut into global batches; a batch straddling two buckets takes the larger;
  5. shuffle the order of the batches.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

PAD_ROW = -1  # index of an all-padding row (evaluation's last partial batch)


@dataclasses.dataclass(frozen=True)
class EpochPlan:
    """Global batches of one epoch."""

    rows: np.ndarray  # int64 [num_batches, global_batch]: sequence index or PAD_ROW
    lengths: np.ndarray  # int32 [num_batches]: padded length of each batch

    def __len__(self) -> int:
        return len(self.rows)


def bucket_ids(lengths: np.ndarray, bucket_lengths: Sequence[int]) -> np.ndarray:
    """Index of the smallest bucket that holds each sequence (never truncating)."""
    ids = np.searchsorted(np.asarray(bucket_lengths), lengths, side="left")
    if len(ids) and ids.max() >= len(bucket_lengths):
        longest = int(lengths.max())
        raise ValueError(
            f"a sequence of {longest} tokens exceeds the largest bucket {bucket_lengths[-1]}; "
            "data.bucket_lengths must end with the data.max_len used in preparation"
        )
    return ids


def sequences_per_epoch(source_ids: np.ndarray, weights: Sequence[float]) -> int:
    """How many sequences one weighted epoch holds (the same for every epoch)."""
    sizes = np.bincount(source_ids, minlength=len(weights))
    total = 0
    for weight, size in zip(weights, sizes[: len(weights)].tolist(), strict=True):
        # The same arithmetic as train_epoch's draw, so the two always agree.
        total += int(weight) * size + round((weight - int(weight)) * size)
    return total


def train_epoch(
    buckets: np.ndarray,
    source_ids: np.ndarray,
    weights: Sequence[float],
    bucket_lengths: Sequence[int],
    global_batch: int,
    seed: int,
    epoch: int,
) -> EpochPlan:
    """The plan of one training epoch (see the module docstring)."""
    rng = np.random.default_rng([seed, epoch])
    picks = []
    for source, weight in enumerate(weights):
        members = np.flatnonzero(source_ids == source)
        whole, fraction = int(weight), weight - int(weight)
        picks.extend([members] * whole)
        if fraction > 0:
            picks.append(rng.choice(members, size=round(fraction * len(members)), replace=False))
    order = rng.permutation(np.concatenate(picks) if picks else np.zeros((0,), np.int64))
    num_batches = len(order) // global_batch
    order = order[: num_batches * global_batch]  # random drop: order is shuffled
    order = order[np.argsort(buckets[order], kind="stable")]
    rows = order.reshape(num_batches, global_batch)
    rows = rows[rng.permutation(num_batches)]
    lengths = np.asarray(bucket_lengths, np.int32)[buckets[rows].max(axis=1)]
    return EpochPlan(rows.astype(np.int64), lengths)


def eval_pass(buckets: np.ndarray, bucket_lengths: Sequence[int], global_batch: int) -> EpochPlan:
    """Every sequence once, grouped by bucket; the last batch padded with PAD_ROW."""
    order = np.argsort(buckets, kind="stable")
    num_batches = -(-len(order) // global_batch)
    rows = np.full((num_batches * global_batch,), PAD_ROW, np.int64)
    rows[: len(order)] = order
    rows = rows.reshape(num_batches, global_batch)
    real = np.where(rows >= 0, buckets[np.maximum(rows, 0)], 0)
    lengths = np.asarray(bucket_lengths, np.int32)[real.max(axis=1)]
    return EpochPlan(rows, lengths)


def process_rows(rows: np.ndarray, process_index: int, process_count: int) -> np.ndarray:
    """This process's contiguous slice of a global batch's rows."""
    per_process = len(rows) // process_count
    return rows[process_index * per_process : (process_index + 1) * per_process]
