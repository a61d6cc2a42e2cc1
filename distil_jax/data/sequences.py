"""Sequence rules of the reference (``binarized_data.py`` + ``lm_seqs_dataset.py``).

A paragraph becomes ``[CLS] ids [SEP]``. Above ``max_len`` it is cut into chunks
of ``max_len - 2`` tokens *of the wrapped sequence* and the specials a chunk
lacks are re-added, exactly as the reference's ``divide_chunks``: so the first
chunk keeps its own [CLS] and gets a [SEP] (max_len - 1 tokens), middle chunks
get both (max_len), the last keeps its [SEP] and gets a [CLS]. Then sequences
of fewer than ``min_len`` tokens are dropped, then those whose [UNK] share is
``>= max_unk_fraction`` (specials count in the length, as in the reference).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class SequenceRules:
    """The ids and limits the rules need (from the tokenizer and the data config)."""

    cls_id: int
    sep_id: int
    unk_id: int
    max_len: int = 512
    min_len: int = 12
    max_unk_fraction: float = 0.5


@dataclasses.dataclass
class RuleCounts:
    """What the rules did, summed over paragraphs (reported in the summary)."""

    paragraphs: int = 0
    split_paragraphs: int = 0  # paragraphs longer than max_len, cut into chunks
    dropped_short: int = 0
    dropped_unk: int = 0

    def add(self, other: RuleCounts) -> None:
        for field in dataclasses.fields(self):
            name = field.name
            setattr(self, name, getattr(self, name) + getattr(other, name))


def split_long(seq: np.ndarray, rules: SequenceRules) -> list[np.ndarray]:
    """Cut a wrapped sequence longer than max_len into chunks, re-adding specials."""
    if len(seq) <= rules.max_len:
        return [seq]
    step = rules.max_len - 2
    chunks = []
    for start in range(0, len(seq), step):
        chunk = seq[start : start + step]
        # Only add what is missing, like the reference: the first chunk already
        # starts with [CLS], the last already ends with [SEP].
        head = [] if chunk[0] == rules.cls_id else [rules.cls_id]
        tail = [] if chunk[-1] == rules.sep_id else [rules.sep_id]
        chunks.append(
            np.concatenate([np.asarray(head, seq.dtype), chunk, np.asarray(tail, seq.dtype)])
        )
    return chunks


def build_sequences(
    paragraph_ids: Sequence[int] | np.ndarray, rules: SequenceRules, counts: RuleCounts
) -> list[np.ndarray]:
    """The kept training sequences (int32) for one paragraph tokenised without specials."""
    counts.paragraphs += 1
    ids = np.asarray(paragraph_ids, dtype=np.int32)
    wrapped = np.concatenate(
        [np.asarray([rules.cls_id], np.int32), ids, np.asarray([rules.sep_id], np.int32)]
    )
    pieces = split_long(wrapped, rules)
    if len(pieces) > 1:
        counts.split_paragraphs += 1
    kept = []
    for piece in pieces:
        if len(piece) < rules.min_len:
            counts.dropped_short += 1
            continue
        unk_share = np.count_nonzero(piece == rules.unk_id) / len(piece)
        if unk_share >= rules.max_unk_fraction:
            counts.dropped_unk += 1
            continue
        kept.append(piece)
    return kept
