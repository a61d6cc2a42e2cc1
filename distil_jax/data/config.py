"""The ``data`` section of a training config: defaults, source helpers, validation.

A training config holds this section as ``config.data``; ``prepare_data`` and
the loaders read nothing else (apart from ``config.teacher`` for the tokenizer).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import ml_collections
from ml_collections import config_dict

# The reference corpus for development: the shared Wikipedia subset, relative to
# the repository root (see ../shared/data/README.md). Users point this elsewhere.
DEFAULT_GLOB = "../shared/data/pretrain/wikipedia_en_2019_chinapedia/train.*.txt.gz"

SOURCE_KINDS = ("text_files", "tfds")
LAYOUTS = ("paragraphs", "documents")


def text_files_source(glob: str, layout: str = "paragraphs", weight: float = 1.0) -> dict:
    """A local text corpus: files matching ``glob``, plain or ``.gz``.

    layout 'paragraphs': one paragraph per line, a blank line between documents.
    layout 'documents': one document per line (the whole line is one text).
    weight: how many times each sequence of this source is seen per epoch
    (fractions draw a fresh random subset every epoch; 0 leaves it out).
    """
    return dict(kind="text_files", glob=glob, layout=layout, weight=float(weight))


def tfds_source(
    name: str,
    split: str = "train",
    text_feature: str = "text",
    weight: float = 1.0,
    layout: str = "paragraphs",
    data_dir: str | None = None,
) -> dict:
    """A TFDS text dataset read through ``tfds.data_source`` (array_record, no TensorFlow).

    Each record is one document; with layout 'paragraphs' its text is split into
    paragraphs at line breaks (Wikipedia's layout), with 'documents' it is one text.
    data_dir: the TFDS data directory (None = TFDS's default, ~/tensorflow_datasets).
    """
    return dict(
        kind="tfds",
        name=name,
        split=split,
        text_feature=text_feature,
        layout=layout,
        data_dir=data_dir,
        weight=float(weight),
    )


def data_config() -> ml_collections.ConfigDict:
    """The data section with its defaults (the reference's sequence rules, DESIGN.md §1.3)."""
    cfg = ml_collections.ConfigDict()
    # Text sources, mixed by their `weight` when batches are drawn (weights apply
    # at load time, so changing them needs no new preparation). Build entries with
    # text_files_source(...) / tfds_source(...); set the list in a config file.
    cfg.sources = [text_files_source(DEFAULT_GLOB)]
    # Directory holding the tokenizer files; None = the teacher directory
    # (config.teacher), which is what distillation needs: same ids as the teacher.
    cfg.tokenizer_dir = config_dict.placeholder(str)
    # Where prepare_data writes the array_record shards, token counts and summary,
    # and where the loaders read them. One directory per (corpus, tokenizer).
    cfg.prepared_dir = "workdirs/prepared/wikipedia_en_2019"
    # Longest sequence in tokens, [CLS] and [SEP] included; longer paragraphs are
    # cut into max_len-2 chunks with the specials re-added (as the reference does).
    cfg.max_len = 512
    # Shortest sequence kept: the reference drops sequences of <= 11 tokens.
    cfg.min_len = 12
    # Sequences whose share of [UNK] tokens is >= this are dropped (reference: 0.5).
    cfg.max_unk_fraction = 0.5
    # Padded lengths a batch can have, ascending, the last equal to max_len: each
    # batch is padded to the smallest that fits it, so XLA compiles one shape each.
    cfg.bucket_lengths = (128, 256, 512)
    # Seed of the global shuffle (and of the per-epoch draw of fractional weights).
    cfg.shuffle_seed = 0
    # Tokenising processes in preparation; 0 or 1 = tokenise in the calling process.
    cfg.num_workers = 4
    # Share of documents held out as the 'validation' split for evaluation
    # (chosen by a hash of the document's position, so it is stable across runs).
    cfg.held_out_fraction = 0.0
    # Threads assembling batches in the loader (reading shards, padding).
    cfg.loader_threads = 2
    # Batches the loader keeps ready ahead of the training step.
    cfg.prefetch_batches = 8
    return cfg


def source_specs(data_cfg: Mapping[str, Any]) -> list[dict]:
    """The sources as plain dicts with defaults filled in (entries may be ConfigDicts)."""
    specs = []
    for raw in data_cfg["sources"]:
        entry = dict(raw.to_dict() if isinstance(raw, ml_collections.ConfigDict) else raw)
        entry.setdefault("weight", 1.0)
        entry.setdefault("layout", "paragraphs")
        if entry.get("kind") == "tfds":
            entry.setdefault("text_feature", "text")
            entry.setdefault("data_dir", None)
        specs.append(entry)
    return specs


def source_identity(spec: Mapping[str, Any]) -> dict:
    """What defines a source's content: everything except its mixing weight."""
    return {k: v for k, v in sorted(spec.items()) if k != "weight"}


def validate(data_cfg: Mapping[str, Any]) -> None:
    """Raise ValueError naming the field when the data section is inconsistent."""
    _validate_sources(data_cfg)
    max_len, min_len = data_cfg["max_len"], data_cfg["min_len"]
    if not isinstance(max_len, int) or max_len < 3:
        raise ValueError(f"data.max_len must be an int >= 3 ([CLS] x [SEP]), got {max_len!r}")
    if not isinstance(min_len, int) or not 1 <= min_len <= max_len:
        raise ValueError(
            f"data.min_len must be an int in [1, data.max_len={max_len}], got {min_len!r}"
        )
    unk = data_cfg["max_unk_fraction"]
    if not 0.0 < unk <= 1.0:
        raise ValueError(f"data.max_unk_fraction must be in (0, 1], got {unk!r}")
    buckets = tuple(data_cfg["bucket_lengths"])
    if not buckets or any(not isinstance(b, int) or b < 1 for b in buckets):
        raise ValueError(f"data.bucket_lengths must be positive ints, got {buckets!r}")
    if any(a >= b for a, b in zip(buckets, buckets[1:], strict=False)):
        raise ValueError(f"data.bucket_lengths must be strictly ascending, got {buckets!r}")
    if buckets[-1] != max_len:
        raise ValueError(
            f"data.bucket_lengths must end with data.max_len={max_len} so no sequence is "
            f"truncated, got {buckets!r}"
        )
    if not 0.0 <= data_cfg["held_out_fraction"] < 1.0:
        raise ValueError(
            f"data.held_out_fraction must be in [0, 1), got {data_cfg['held_out_fraction']!r}"
        )
    if not data_cfg["prepared_dir"]:
        raise ValueError("data.prepared_dir must be set (where prepared shards are written)")
    for field, lowest in (("num_workers", 0), ("loader_threads", 1), ("prefetch_batches", 1)):
        value = data_cfg[field]
        if not isinstance(value, int) or value < lowest:
            raise ValueError(f"data.{field} must be an int >= {lowest}, got {value!r}")
    if not isinstance(data_cfg["shuffle_seed"], int):
        raise ValueError(f"data.shuffle_seed must be an int, got {data_cfg['shuffle_seed']!r}")


def _validate_sources(data_cfg: Mapping[str, Any]) -> None:
    sources = data_cfg["sources"]
    if not sources:
        raise ValueError("data.sources is empty: give at least one text source")
    specs = source_specs(data_cfg)
    for i, spec in enumerate(specs):
        where = f"data.sources[{i}]"
        kind = spec.get("kind")
        if kind not in SOURCE_KINDS:
            raise ValueError(f"{where}.kind must be one of {SOURCE_KINDS}, got {kind!r}")
        required = ("glob",) if kind == "text_files" else ("name", "split", "text_feature")
        for key in required:
            if not spec.get(key):
                raise ValueError(f"{where}.{key} must be set for a {kind!r} source")
        if spec["layout"] not in LAYOUTS:
            raise ValueError(f"{where}.layout must be one of {LAYOUTS}, got {spec['layout']!r}")
        weight = spec["weight"]
        if not isinstance(weight, int | float) or not math.isfinite(weight) or weight < 0:
            raise ValueError(f"{where}.weight must be a finite number >= 0, got {weight!r}")
    if all(spec["weight"] == 0 for spec in specs):
        raise ValueError("data.sources: every weight is 0, so no data would be drawn")
