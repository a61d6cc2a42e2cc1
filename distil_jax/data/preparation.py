"""``prepare``: text sources -> tokenised sequences -> TFDS array_record shards.

One pass tokenises the corpus (in parallel processes) into per-split staging
files while counting tokens; the TFDS builder then writes the shards; the index,
token counts and summary follow; the COMPLETE marker is written last. A finished
directory with the same tokenizer and settings is reused as it is.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import shutil
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import tqdm

from distil_jax.data import prepared as layout
from distil_jax.data.config import source_identity, source_specs, validate
from distil_jax.data.sequences import RuleCounts, SequenceRules
from distil_jax.data.staging import SplitStaging
from distil_jax.data.summary import split_summary
from distil_jax.data.text_sources import Document, ReadCounts, iter_documents
from distil_jax.data.tfds_builder import NAME, write_shards
from distil_jax.data.tokenize_pool import Chunk, ChunkResult, tokenize_chunks
from distil_jax.data.tokenizer import TokenizerInfo, describe, load_tokenizer

log = logging.getLogger(__name__)

# A chunk is the unit of work sent to a tokenising process: big enough to
# amortise the inter-process transfer, small enough to keep workers balanced.
CHUNK_CHARS = 1 << 18
CHUNK_PARAGRAPHS = 4096


def prepare(data_cfg: Mapping[str, Any], tokenizer_dir: str) -> str:
    """Prepare ``data_cfg.prepared_dir`` (or reuse it when finished); returns its path."""
    validate(data_cfg)
    prepared_dir = os.path.abspath(data_cfg["prepared_dir"])
    info = describe(load_tokenizer(tokenizer_dir), tokenizer_dir)
    manifest = _manifest(data_cfg, info)
    if _reusable(prepared_dir, manifest):
        log.info("reusing the finished preparation in %s", prepared_dir)
        return prepared_dir
    os.makedirs(prepared_dir, exist_ok=True)
    layout.write_json(os.path.join(prepared_dir, layout.MANIFEST), manifest)

    start = time.perf_counter()
    staging_dir = os.path.join(prepared_dir, layout.STAGING)
    done = _tokenise(data_cfg, info, tokenizer_dir, staging_dir)
    splits = {s: st for s, st in done.staged.items() if len(st)}
    write_shards(prepared_dir, splits, info.id_dtype, os.path.join(staging_dir, "downloads"))
    for split, staging in splits.items():
        np.savez(
            layout.index_path(prepared_dir, split),
            lengths=staging.lengths,
            source_ids=staging.source_ids,
        )
    np.save(os.path.join(prepared_dir, layout.TOKEN_COUNTS), done.token_counts)
    total_tokens = sum(int(st.lengths.sum()) for st in splits.values())
    timing = dict(
        num_workers=data_cfg["num_workers"],
        tokenise_seconds=done.seconds,
        total_seconds=time.perf_counter() - start,
        tokens_per_second=int(total_tokens / max(done.seconds, 1e-9)),
        # Throughput of one tokenising process: its tokens over its busy time.
        tokens_per_second_per_process=int(total_tokens / max(done.worker_seconds, 1e-9)),
    )
    summary = _summary(data_cfg, info, splits, done, timing)
    layout.write_json(os.path.join(prepared_dir, layout.SUMMARY), summary)
    shutil.rmtree(staging_dir, ignore_errors=True)
    with open(os.path.join(prepared_dir, layout.COMPLETE), "w") as f:
        f.write("ok\n")
    log.info("prepared %s", prepared_dir)
    return prepared_dir


@dataclasses.dataclass
class _Tokenised:
    """The outcome of the tokenising pass."""

    staged: dict[str, SplitStaging]
    token_counts: np.ndarray  # int64 [vocab_size], train split
    read_counts: ReadCounts
    rule_counts: RuleCounts
    documents_per_split: list[int]  # indexed like layout.SPLITS
    seconds: float = 0.0
    worker_seconds: float = 0.0  # summed over tokenising processes


def _tokenise(
    data_cfg: Mapping[str, Any], info: TokenizerInfo, tokenizer_dir: str, staging_dir: str
) -> _Tokenised:
    """One pass over the corpus into per-split staging files, with a progress bar."""
    start = time.perf_counter()
    rules = SequenceRules(
        cls_id=info.special_ids["cls"],
        sep_id=info.special_ids["sep"],
        unk_id=info.special_ids["unk"],
        max_len=data_cfg["max_len"],
        min_len=data_cfg["min_len"],
        max_unk_fraction=data_cfg["max_unk_fraction"],
    )
    done = _Tokenised(
        staged={s: SplitStaging(staging_dir, s, info.id_dtype) for s in layout.SPLITS},
        token_counts=np.zeros((info.vocab_size,), np.int64),
        read_counts=ReadCounts(),
        rule_counts=RuleCounts(),
        documents_per_split=[0] * len(layout.SPLITS),
    )
    documents = iter_documents(source_specs(data_cfg), done.read_counts)
    chunks = _chunks(documents, data_cfg["held_out_fraction"], done.documents_per_split)
    results = tokenize_chunks(chunks, tokenizer_dir, rules, data_cfg["num_workers"])
    with tqdm.tqdm(desc="tokenising", unit="tok", unit_scale=True, smoothing=0.05) as bar:
        for result in results:
            _stage(result, done.staged, done.token_counts)
            done.rule_counts.add(result.counts)
            done.worker_seconds += result.seconds
            bar.update(len(result.ids))
            bar.set_postfix(
                docs=done.read_counts.documents, seqs=sum(map(len, done.staged.values()))
            )
    for staging in done.staged.values():
        staging.close()
    done.seconds = time.perf_counter() - start

    if done.read_counts.undecodable:
        log.warning(
            "%d lines/records had undecodable bytes, replaced by U+FFFD",
            done.read_counts.undecodable,
        )
    if not len(done.staged["train"]):
        raise ValueError(
            f"empty corpus: no training sequence left from {done.read_counts.documents} "
            f"documents in {done.read_counts.files} files (min_len={data_cfg['min_len']}, "
            f"held_out_fraction={data_cfg['held_out_fraction']})"
        )
    if data_cfg["held_out_fraction"] > 0 and not len(done.staged["validation"]):
        log.warning("held_out_fraction > 0 but no document was held out: no validation split")
    return done


def _manifest(data_cfg: Mapping[str, Any], info: TokenizerInfo) -> dict:
    return dict(
        format_version=layout.FORMAT_VERSION,
        tokenizer=dict(
            fingerprint=info.fingerprint,
            vocab_size=info.vocab_size,
            special_ids=info.special_ids,
            directory=info.directory,
        ),
        settings=dict(
            sources=[source_identity(s) for s in source_specs(data_cfg)],
            max_len=data_cfg["max_len"],
            min_len=data_cfg["min_len"],
            max_unk_fraction=data_cfg["max_unk_fraction"],
            held_out_fraction=data_cfg["held_out_fraction"],
        ),
    )


def _reusable(prepared_dir: str, manifest: dict) -> bool:
    """True for a finished identical preparation; clears our own unfinished one.

    Raises for anything else, never deleting what this code did not write.
    """
    if not os.path.isdir(prepared_dir) or not os.listdir(prepared_dir):
        return False
    existing = layout.read_manifest(prepared_dir)
    if existing is None:
        raise ValueError(
            f"{prepared_dir!r} is not empty and holds no {layout.MANIFEST}: refusing to write "
            "into it; choose another data.prepared_dir"
        )
    old_fp = existing.get("tokenizer", {}).get("fingerprint")
    if old_fp != manifest["tokenizer"]["fingerprint"]:
        raise ValueError(
            f"{prepared_dir!r} was prepared with another tokenizer (fingerprint "
            f"{str(old_fp)[:12]}, now {manifest['tokenizer']['fingerprint'][:12]} from "
            f"{manifest['tokenizer']['directory']!r}); shards of two tokenizers must not mix: "
            "choose another data.prepared_dir or delete this one"
        )
    if layout.is_complete(prepared_dir):
        old, new = existing.get("settings", {}), manifest["settings"]
        changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        if changed:
            raise ValueError(
                f"{prepared_dir!r} was prepared with other settings ({', '.join(changed)} "
                "differ); choose another data.prepared_dir or delete this one"
            )
        return True
    log.warning("%s holds an unfinished preparation: starting it again", prepared_dir)
    for name in (layout.STAGING, NAME, "downloads"):
        shutil.rmtree(os.path.join(prepared_dir, name), ignore_errors=True)
    for name in (layout.SUMMARY, layout.TOKEN_COUNTS, layout.MANIFEST):
        _remove(os.path.join(prepared_dir, name))
    for split in layout.SPLITS:
        _remove(layout.index_path(prepared_dir, split))
    return False


def _remove(path: str) -> None:
    if os.path.exists(path):
        os.remove(path)


def is_held_out(source_index: int, doc_index: int, fraction: float) -> bool:
    """Stable pseudo-random choice of held-out documents (independent of run and order)."""
    if fraction <= 0:
        return False
    digest = hashlib.blake2b(f"{source_index}:{doc_index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64 < fraction


def _chunks(
    documents: Iterable[Document], held_out_fraction: float, docs_per_split: list[int]
) -> Iterator[Chunk]:
    chunk, chars = Chunk([], [], []), 0
    for doc in documents:
        split_code = int(is_held_out(doc.source_index, doc.index, held_out_fraction))
        docs_per_split[split_code] += 1
        for paragraph in doc.paragraphs:
            chunk.texts.append(paragraph)
            chunk.split_codes.append(split_code)
            chunk.source_ids.append(doc.source_index)
            chars += len(paragraph)
        if chars >= CHUNK_CHARS or len(chunk.texts) >= CHUNK_PARAGRAPHS:
            yield chunk
            chunk, chars = Chunk([], [], []), 0
    if chunk.texts:
        yield chunk


def _stage(
    result: ChunkResult, staged: Mapping[str, SplitStaging], token_counts: np.ndarray
) -> None:
    """Route a chunk's sequences to their splits; count the train split's tokens."""
    offsets = np.concatenate([[0], np.cumsum(result.lengths, dtype=np.int64)])
    for code, split in enumerate(layout.SPLITS):
        rows = np.flatnonzero(result.split_codes == code)
        if not len(rows):
            continue
        if len(rows) == len(result.lengths):
            ids = result.ids
        else:
            ids = np.concatenate([result.ids[offsets[r] : offsets[r + 1]] for r in rows])
        staged[split].append(ids, result.lengths[rows], result.source_ids[rows])
        if split == "train":
            token_counts += np.bincount(ids, minlength=len(token_counts))


def _summary(
    data_cfg: Mapping[str, Any],
    info: TokenizerInfo,
    splits: Mapping[str, SplitStaging],
    done: _Tokenised,
    timing: dict,
) -> dict:
    per_split = {
        split: split_summary(
            staging.lengths,
            done.documents_per_split[layout.SPLITS.index(split)],
            data_cfg["max_len"],
            tuple(data_cfg["bucket_lengths"]),
        )
        for split, staging in splits.items()
    }
    train = per_split["train"]
    return dict(
        format_version=layout.FORMAT_VERSION,
        vocab_size=info.vocab_size,
        id_dtype=info.id_dtype.name,
        tokenizer_fingerprint=info.fingerprint,
        tokenizer_dir=info.directory,
        special_token_ids=info.special_ids,
        num_sequences=train["sequences"],
        num_tokens=train["tokens"],
        documents=train["documents"],
        length_histogram=train["length_histogram"],
        splits=per_split,
        sources=source_specs(data_cfg),
        files_read=done.read_counts.files,
        undecodable=done.read_counts.undecodable,
        paragraphs=done.rule_counts.paragraphs,
        split_paragraphs=done.rule_counts.split_paragraphs,
        dropped_short=done.rule_counts.dropped_short,
        dropped_unk=done.rule_counts.dropped_unk,
        settings=dict(
            max_len=data_cfg["max_len"],
            min_len=data_cfg["min_len"],
            max_unk_fraction=data_cfg["max_unk_fraction"],
            held_out_fraction=data_cfg["held_out_fraction"],
        ),
        timing=timing,
    )
