"""The on-disk layout of a prepared directory and the functions that read it.

<prepared_dir>/
  preparation.json        written first: tokenizer fingerprint + settings;
                          guards reuse and refuses mixing tokenizers
  distil_sequences/1.0.0/ TFDS dataset (array_record shards, dataset_info.json)
  train_index.npz         per sequence, in record order: lengths, source_ids
  validation_index.npz    (only when data.held_out_fraction > 0)
  token_counts.npy        int64 [vocab_size], over the train split
  summary.json            documents, sequences, tokens, histograms, special ids
  COMPLETE                written last: the preparation finished
(staging/ holds temporary files while preparing and is removed at the end.)
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import numpy as np

from distil_jax.data.tfds_builder import DATASET_VERSION, NAME, open_shards

FORMAT_VERSION = 1
MANIFEST = "preparation.json"
SUMMARY = "summary.json"
TOKEN_COUNTS = "token_counts.npy"
COMPLETE = "COMPLETE"
STAGING = "staging"
SPLITS = ("train", "validation")


def dataset_dir(prepared_dir: str) -> str:
    return os.path.join(prepared_dir, NAME, DATASET_VERSION)


def index_path(prepared_dir: str, split: str) -> str:
    return os.path.join(prepared_dir, f"{split}_index.npz")


def is_complete(prepared_dir: str) -> bool:
    return os.path.exists(os.path.join(prepared_dir, COMPLETE))


def write_json(path: str, content: Any) -> None:
    """Write through a temporary name so a reader never sees half a file."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(content, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def read_manifest(prepared_dir: str) -> dict | None:
    path = os.path.join(prepared_dir, MANIFEST)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _require_complete(prepared_dir: str) -> None:
    if not is_complete(prepared_dir):
        raise FileNotFoundError(
            f"{prepared_dir!r} is not a finished preparation (no {COMPLETE} marker); run "
            "`python -m distil_jax.prepare_data --config=...` first"
        )


def load_summary(prepared_dir: str) -> dict:
    """The preparation summary.

    Top-level keys include vocab_size, num_sequences, num_tokens, documents,
    length_histogram (all for the train split), tokenizer_fingerprint,
    special_token_ids (pad, cls, sep, mask, unk) and per-split details in 'splits'.
    """
    _require_complete(prepared_dir)
    with open(os.path.join(prepared_dir, SUMMARY)) as f:
        return json.load(f)


def load_token_counts(prepared_dir: str) -> np.ndarray:
    """int64 [vocab_size]: occurrences of each id in the train split (specials included)."""
    _require_complete(prepared_dir)
    return np.load(os.path.join(prepared_dir, TOKEN_COUNTS)).astype(np.int64)


@dataclasses.dataclass(frozen=True)
class PreparedSplit:
    """A split ready for loading: random-access records plus their length index."""

    source: Any  # source[i] -> {'input_ids': [length]}
    lengths: np.ndarray  # int32 [num_sequences]
    source_ids: np.ndarray  # int16 [num_sequences], position in data.sources
    summary: dict

    def __len__(self) -> int:
        return len(self.lengths)


def open_split(prepared_dir: str, split: str) -> PreparedSplit:
    """Open a split of a finished preparation, checking records and index agree."""
    summary = load_summary(prepared_dir)
    if split not in summary["splits"]:
        raise ValueError(
            f"{prepared_dir!r} has no {split!r} split (it has {sorted(summary['splits'])}); "
            "the validation split exists only when data.held_out_fraction > 0"
        )
    with np.load(index_path(prepared_dir, split)) as index:
        lengths, source_ids = index["lengths"], index["source_ids"]
    source = open_shards(dataset_dir(prepared_dir), split)
    if len(source) != len(lengths):
        raise ValueError(
            f"{prepared_dir!r}: split {split!r} has {len(source)} records but its index "
            f"{len(lengths)} sequences; the directory is damaged, prepare it again"
        )
    return PreparedSplit(source, lengths, source_ids, summary)
