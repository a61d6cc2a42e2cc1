"""Reading labelled sentence(-pair) data: local GLUE-layout TSVs and TFDS data sources.

Both paths return the same `TextExamples`, with labels already mapped to the
task's class indices (or floats for STS-B) and checked against its label set.

Local TSV quirks handled here (all true of the official GLUE files):
- fields contain bare `"`: read with `csv.QUOTE_NONE`, or rows silently merge;
- MRPC starts with a UTF-8 BOM: every file is opened as `utf-8-sig`, which
  drops a BOM if there is one and is plain UTF-8 otherwise;
- CoLA has no header: columns are addressed by position;
- QQP's train.tsv has a few truncated rows, skipped as the reference does.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import os
import sys

import numpy as np

from distil_jax.eval.tasks import TaskSpec, parse_label

SOURCES = ("local", "tfds")

# Some GLUE fields (QNLI paragraphs, IMDb reviews) exceed csv's 128 KiB default.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


@dataclasses.dataclass
class TextExamples:
    texts: tuple[list[str], ...]  # one list per text field: (sentences,) or (firsts, seconds)
    labels: np.ndarray  # [N] int64 class ids, or float32 regression targets
    source: str  # file or TFDS name, for messages

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, indices) -> TextExamples:
        indices = np.asarray(indices, np.int64)
        texts = tuple([column[i] for i in indices] for column in self.texts)
        return TextExamples(texts, self.labels[indices], self.source)


def subset_indices(num: int, limit: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of a fixed random subset of `limit` of `num` items (all if limit <= 0).

    Random rather than a prefix: some files are grouped by source or label.
    """
    if limit <= 0 or limit >= num:
        return np.arange(num)
    return np.sort(np.random.default_rng(seed).permutation(num)[:limit])


def subset(examples: TextExamples, limit: int, seed: int = 0) -> TextExamples:
    if limit <= 0 or limit >= len(examples):
        return examples
    return examples.take(subset_indices(len(examples), limit, seed))


def _label_array(task: TaskSpec, values: list) -> np.ndarray:
    return np.asarray(values, np.float32 if task.kind == "regression" else np.int64)


# ---------------------------------------------------------------------------- local TSV


def split_path(task: TaskSpec, root: str, split: str, task_dir: str = "") -> str:
    """<root>/<task folder>/<file>, or <task_dir>/<file> when the folder is given directly."""
    layout = task.local
    if split not in layout.files:
        raise ValueError(
            f"{task.display} has no split {split!r} in the local layout; it has "
            f"{sorted(layout.files)}"
        )
    return os.path.join(task_dir or os.path.join(root, layout.directory), layout.files[split])


def read_tsv_rows(path: str):
    """Yields (line number, fields) of a TSV file, quotes left as they are."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        yield from enumerate(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE), 1)


def _column_indices(task: TaskSpec, header: list[str], path: str) -> tuple[list[int], int]:
    layout = task.local
    wanted = [*layout.text_columns, layout.label_column]
    missing = [c for c in wanted if c not in header]
    if missing:
        raise ValueError(
            f"{path}: missing column(s) {missing} for {task.display}; the header has {header}"
        )
    return [header.index(c) for c in layout.text_columns], header.index(layout.label_column)


def read_local_split(task: TaskSpec, root: str, split: str, task_dir: str = "") -> TextExamples:
    """One labelled split of a task from `root/<task folder>/<file>.tsv`."""
    path = split_path(task, root, split, task_dir)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path} not found: expected the standard glue_data layout "
            f"({task.local.directory}/{task.local.files[split]} under the data root)"
        )
    rows = read_tsv_rows(path)
    if task.local.header:
        try:
            _, header = next(rows)
        except StopIteration:
            raise ValueError(f"{path} is empty") from None
        text_idx, label_idx = _column_indices(task, header, path)
        width = len(header)
    else:
        text_idx, label_idx = list(task.local.text_columns), task.local.label_column
        width = max(*text_idx, label_idx) + 1  # a minimum: extra columns are allowed
    texts: tuple[list[str], ...] = tuple([] for _ in text_idx)
    labels, skipped = [], 0
    for number, row in rows:
        if not row:
            continue  # a trailing blank line
        if len(row) < width or (task.local.header and len(row) != width):
            if task.local.skip_malformed:
                skipped += 1
                continue
            raise ValueError(
                f"{path}:{number}: {len(row)} fields, expected {width} "
                f"(tab-separated, as {task.display}'s header or layout says)"
            )
        try:
            labels.append(parse_label(task, row[label_idx]))
        except ValueError as e:
            raise ValueError(f"{path}:{number}: {e}") from None
        for column, i in zip(texts, text_idx, strict=True):
            column.append(row[i])
    if skipped:
        logging.warning("%s: skipped %d malformed rows (known QQP quirk)", path, skipped)
    if not labels:
        raise ValueError(f"{path} holds no examples")
    return TextExamples(texts, _label_array(task, labels), path)


# ---------------------------------------------------------------------------- TFDS


def open_tfds_source(name: str, split: str, data_dir: str | None, download: bool = False):
    """`tfds.data_source` (array_record; needs no TensorFlow), with an error that says why.

    `download=False` by default: offline, or without TensorFlow for builders that
    need it to prepare, a failed download is slower and less clear than this error.
    """
    import tensorflow_datasets as tfds
    import tensorflow_datasets.text  # noqa: F401  (registers the glue builders)

    try:
        return tfds.data_source(name, split=split, data_dir=data_dir or None, download=download)
    except Exception as e:  # tfds raises several types for "not prepared" / unknown split
        raise FileNotFoundError(
            f"TFDS dataset {name!r} split {split!r} is not available in "
            f"{data_dir or 'the default TFDS data dir'} as array_record ({type(e).__name__}: "
            f"{e}). Prepare it where a network is available (tfds build {name} "
            "--file_format=array_record) or use config.data_source='local'."
        ) from e


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def read_tfds_split(
    task: TaskSpec, split: str, data_dir: str | None = None, download: bool = False
) -> TextExamples:
    source = open_tfds_source(task.tfds_name, split, data_dir, download)
    where = f"tfds:{task.tfds_name}[{split}]"
    texts: tuple[list[str], ...] = tuple([] for _ in task.tfds_text_fields)
    labels = []
    for i in range(len(source)):
        record = source[i]
        missing = [f for f in (*task.tfds_text_fields, "label") if f not in record]
        if missing:
            raise ValueError(f"{where}: record {i} lacks field(s) {missing}")
        label = record["label"]
        token = repr(float(label)) if task.kind == "regression" else str(int(label))
        try:
            labels.append(parse_label(task, token))
        except ValueError as e:
            raise ValueError(
                f"{where}: record {i}: {e} (unlabelled test splits cannot be scored)"
            ) from None
        for column, field in zip(texts, task.tfds_text_fields, strict=True):
            column.append(_text(record[field]))
    if not labels:
        raise ValueError(f"{where} holds no examples")
    return TextExamples(texts, _label_array(task, labels), where)


# ---------------------------------------------------------------------------- dispatch


def read_split(
    task: TaskSpec,
    split: str,
    source: str,
    data_dir: str,
    task_dir: str = "",
    download: bool = False,
) -> TextExamples:
    """A labelled split from `source`: 'local' reads a glue_data-style root (or the task's
    own folder `task_dir`), 'tfds' a TFDS data dir ("" = TFDS's default)."""
    if task.kind == "span":
        raise ValueError(f"{task.display} is a span task: read it with distil_jax.eval.squad")
    if source == "local":
        if not (data_dir or task_dir):
            raise ValueError("config.data_dir must name the local data root for source 'local'")
        return read_local_split(task, data_dir, split, task_dir)
    if source == "tfds":
        return read_tfds_split(task, split, data_dir, download)
    raise ValueError(f"unknown data source {source!r}; expected one of {SOURCES}")
