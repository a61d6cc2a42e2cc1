"""Tokenised, fixed-width arrays and the batches cut from them.

Sequences are tokenised once to `max_length` and kept with their true
lengths; each batch is then cut to the smallest of a few bucket lengths that
holds its longest row. On XLA every distinct shape compiles once, so a handful
of buckets trades a few compiles for not running SST-2's ~25-token sentences
at 128 positions.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator

import numpy as np

from distil_jax.data.tokenizer import fingerprint, load_tokenizer
from distil_jax.eval.readers import TextExamples
from distil_jax.models import ModelConfig

SEQUENCE_KEYS = ("input_ids", "attention_mask", "token_type_ids")  # [N, L] arrays


@dataclasses.dataclass
class Encoded:
    arrays: dict[str, np.ndarray]  # SEQUENCE_KEYS [N, L] int32, plus per-row targets [N]
    lengths: np.ndarray  # [N] real tokens per row

    def __len__(self) -> int:
        return len(self.lengths)


def pad_rows(rows: list[list[int]], width: int, value: int = 0) -> np.ndarray:
    out = np.full((len(rows), width), value, np.int32)  # [N, L]
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def encode_texts(tokenizer, examples: TextExamples, max_length: int) -> Encoded:
    """[CLS] a [SEP] (b [SEP]) per example, truncated to max_length (longest first)."""
    if max_length < 4:
        raise ValueError(f"max_length must be >= 4, got {max_length}")
    enc = tokenizer(
        *examples.texts,
        truncation=True if len(examples.texts) == 1 else "longest_first",
        max_length=max_length,
        return_token_type_ids=True,
        return_attention_mask=False,
    )
    ids = enc["input_ids"]
    lengths = np.asarray([len(r) for r in ids], np.int32)
    input_ids = pad_rows(ids, max_length, tokenizer.pad_token_id or 0)
    arrays = {
        "input_ids": input_ids,
        "attention_mask": (np.arange(max_length)[None] < lengths[:, None]).astype(np.int32),
        "token_type_ids": pad_rows(enc["token_type_ids"], max_length),
        "labels": examples.labels,
    }
    return Encoded(arrays, lengths)


# ---------------------------------------------------------------------------- tokenizer checks


def model_tokenizer(model_dir: str, tokenizer_dir: str, cfg: ModelConfig):
    """The tokenizer to encode data for the model in `model_dir`, checked against it.

    Refuses a tokenizer whose ids the model cannot embed, or one that differs
    from a tokenizer stored with the model: either would feed it wrong ids.
    """
    directory = tokenizer_dir or model_dir
    try:
        tokenizer = load_tokenizer(directory)
    except FileNotFoundError as e:
        raise FileNotFoundError(
            f"{e}; set config.tokenizer to the directory of the model's tokenizer"
        ) from None
    if len(tokenizer) > cfg.vocab_size:
        raise ValueError(
            f"the tokenizer in {directory!r} has {len(tokenizer)} tokens but the model in "
            f"{model_dir!r} embeds only {cfg.vocab_size}: it is not this model's vocabulary"
        )
    has_own = any(
        os.path.exists(os.path.join(model_dir, f)) for f in ("tokenizer.json", "vocab.txt")
    )
    if tokenizer_dir and has_own and os.path.abspath(tokenizer_dir) != os.path.abspath(model_dir):
        own = load_tokenizer(model_dir)
        if fingerprint(own) != fingerprint(tokenizer):
            raise ValueError(
                f"the tokenizer in {tokenizer_dir!r} differs from the one stored with the "
                f"model in {model_dir!r} (vocabulary or normalisation)"
            )
    return tokenizer


# ---------------------------------------------------------------------------- batches


def bucket_lengths(max_length: int, spec: str = "") -> list[int]:
    """Sorted bucket lengths ending at max_length; default: quarter, half and full length."""
    if spec:
        values = sorted({int(x) for x in spec.split(",") if x.strip()})
    else:
        values = sorted({max(8, max_length // 4), max(8, max_length // 2)})
    values = [v for v in values if 0 < v < max_length] + [max_length]
    return values


def _bucket(length: int, buckets: list[int]) -> int:
    return next(b for b in buckets if b >= length)


def batches(
    data: Encoded,
    batch_size: int,
    buckets: list[int],
    order: np.ndarray | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """Batches of exactly `batch_size` rows, in `order` (default: as stored).

    The last batch is filled with copies of row 0 carrying weight 0, so every
    batch has the shape the jitted step was compiled for and still counts
    every real row once. Each yields the arrays plus `weight` [B] (1 real, 0 fill).
    """
    order = np.arange(len(data)) if order is None else order
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        real = len(rows)
        if real < batch_size:
            rows = np.concatenate([rows, np.full(batch_size - real, rows[0])])
        width = _bucket(int(data.lengths[rows].max()), buckets)
        batch = {
            k: (v[rows, :width] if k in SEQUENCE_KEYS else v[rows]) for k, v in data.arrays.items()
        }
        weight = np.zeros(batch_size, np.float32)
        weight[:real] = 1.0
        batch["weight"] = weight
        yield batch


def num_batches(num_rows: int, batch_size: int) -> int:
    return -(-num_rows // batch_size)
