"""Staging of tokenised sequences on disk before they are written as TFDS shards.

Tokenisation runs once over the corpus and appends each split's sequences to a
flat binary file (ids back to back, in the prepared id dtype) plus per-sequence
lengths and source ids; the TFDS builder then reads the splits back in order.
This keeps memory flat however large the corpus is.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np


class SplitStaging:
    """Append-only store of one split's sequences."""

    def __init__(self, directory: str, split: str, id_dtype: np.dtype):
        os.makedirs(directory, exist_ok=True)
        self.path = os.path.join(directory, f"{split}.ids")
        self.id_dtype = np.dtype(id_dtype)
        self._file = open(self.path, "wb")
        self._lengths: list[np.ndarray] = []
        self._sources: list[np.ndarray] = []

    def append(self, ids: np.ndarray, lengths: np.ndarray, source_ids: np.ndarray) -> None:
        """Add sequences given flat ``ids`` [sum(lengths)] and per-sequence arrays."""
        self._file.write(ids.astype(self.id_dtype, copy=False).tobytes())
        self._lengths.append(lengths.astype(np.int32, copy=False))
        self._sources.append(source_ids.astype(np.int16, copy=False))

    def close(self) -> None:
        self._file.close()

    @property
    def lengths(self) -> np.ndarray:
        return np.concatenate(self._lengths) if self._lengths else np.zeros((0,), np.int32)

    @property
    def source_ids(self) -> np.ndarray:
        return np.concatenate(self._sources) if self._sources else np.zeros((0,), np.int16)

    def __len__(self) -> int:
        return sum(len(x) for x in self._lengths)

    def sequences(self) -> Iterator[np.ndarray]:
        """The staged sequences in append order (after ``close``)."""
        lengths = self.lengths
        if not len(lengths):
            return
        ids = np.memmap(self.path, dtype=self.id_dtype, mode="r")
        offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
        for start, end in zip(offsets[:-1], offsets[1:], strict=True):
            yield np.array(ids[start:end])
