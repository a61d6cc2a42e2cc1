"""Reading documents (lists of paragraphs) from the configured text sources.

Two kinds: local text files (plain or gzip) and TFDS text datasets read through
``tfds.data_source`` (array_record, so TensorFlow is not needed). Undecodable
bytes are replaced (U+FFFD) and counted rather than stopping a long preparation.
"""

from __future__ import annotations

import dataclasses
import glob as globlib
import gzip
import os
from collections.abc import Iterable, Iterator
from typing import Any


@dataclasses.dataclass(frozen=True)
class Document:
    """One document: where it came from and its paragraphs (stripped, non-empty)."""

    source_index: int  # position in data.sources
    index: int  # position among the documents of that source
    paragraphs: list[str]


@dataclasses.dataclass
class ReadCounts:
    """Counters shared by the readers (reported in the summary)."""

    files: int = 0
    documents: int = 0
    undecodable: int = 0  # lines (text files) or records (TFDS) with replaced bytes


def resolve_glob(pattern: str, where: str = "glob") -> list[str]:
    """The files a pattern names, sorted; a clear error when there are none."""
    paths = sorted(p for p in globlib.glob(os.path.expanduser(pattern), recursive=True))
    files = [p for p in paths if os.path.isfile(p)]
    if not files:
        if globlib.has_magic(pattern):
            raise FileNotFoundError(f"{where} {pattern!r} matches no files")
        raise FileNotFoundError(f"{where} {pattern!r}: no such file")
    return files


def iter_documents(specs: list[dict], counts: ReadCounts) -> Iterator[Document]:
    """All documents of all sources, in config order then file/record order."""
    for source_index, spec in enumerate(specs):
        if spec["kind"] == "text_files":
            texts = _text_file_documents(spec, source_index, counts)
        else:
            texts = _tfds_documents(spec, source_index, counts)
        doc_index = 0
        for paragraphs in texts:
            if paragraphs:
                counts.documents += 1
                yield Document(source_index, doc_index, paragraphs)
                doc_index += 1


def _decode(raw: bytes, counts: ReadCounts) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        counts.undecodable += 1
        return raw.decode("utf-8", errors="replace")


def _text_file_documents(spec: dict, source_index: int, counts: ReadCounts) -> Iterator[list[str]]:
    files = resolve_glob(spec["glob"], where=f"data.sources[{source_index}].glob")
    one_per_line = spec["layout"] == "documents"
    for path in files:
        counts.files += 1
        paragraphs: list[str] = []
        for line in _read_lines(path, counts):
            text = line.strip()
            if one_per_line:
                yield [text] if text else []
            elif text:
                paragraphs.append(text)
            else:  # a blank line closes the document
                yield paragraphs
                paragraphs = []
        # A file boundary closes the document too: documents never span files.
        yield paragraphs


def _read_lines(path: str, counts: ReadCounts) -> Iterator[str]:
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            for number, raw in enumerate(f):
                if number == 0 and raw.startswith(b"\xef\xbb\xbf"):
                    raw = raw[3:]  # a UTF-8 byte-order mark is not text
                yield _decode(raw, counts)
    except (gzip.BadGzipFile, EOFError, OSError) as e:
        raise ValueError(f"cannot read {path!r}: {e}") from e


def open_tfds_text(spec: dict) -> Any:
    """The random-access data source of a TFDS text dataset, without downloading."""
    import tensorflow_datasets as tfds

    # Registers the text builders (wikipedia, ...) so names resolve; needs no TF.
    import tensorflow_datasets.text  # noqa: F401

    try:
        return tfds.data_source(
            spec["name"], split=spec["split"], data_dir=spec.get("data_dir"), download=False
        )
    except Exception as e:  # tfds raises several types; all mean "not readable here"
        raise FileNotFoundError(
            f"TFDS dataset {spec['name']!r} split {spec['split']!r} cannot be opened "
            f"(data_dir={spec.get('data_dir')!r}); prepare it in array_record format first "
            f"(`tfds build --file_format=array_record`): {e}"
        ) from e


def _tfds_documents(spec: dict, source_index: int, counts: ReadCounts) -> Iterable[list[str]]:
    source = open_tfds_text(spec)
    feature = spec["text_feature"]
    one_text = spec["layout"] == "documents"
    counts.files += 1
    # Record by record: documents are large, and __getitems__ is not available in
    # every data source (tfds.testing.mock_data's lacks it).
    for i in range(len(source)):
        record = source[i]
        if feature not in record:
            raise ValueError(
                f"data.sources[{source_index}].text_feature {feature!r} is not a feature of "
                f"{spec['name']!r}; it has {sorted(record)}"
            )
        text = record[feature]
        if isinstance(text, bytes):
            text = _decode(text, counts)
        if one_text:
            joined = " ".join(text.split())
            yield [joined] if joined else []
        else:
            yield [p.strip() for p in text.splitlines() if p.strip()]
