"""Loading the teacher's tokenizer, its fingerprint, and the checks around it."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any

import numpy as np

SPECIAL_NAMES = ("pad", "cls", "sep", "mask", "unk")
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt")


@dataclasses.dataclass(frozen=True)
class TokenizerInfo:
    """What preparation records about the tokenizer (and what a reuse must match)."""

    directory: str
    fingerprint: str
    vocab_size: int
    special_ids: dict[str, int]

    @property
    def id_dtype(self) -> np.dtype:
        # uint16 halves the shards whenever every id fits (BERT's 30,522 does).
        return np.dtype(np.uint16 if self.vocab_size <= 1 << 16 else np.uint32)


def resolve_tokenizer_dir(name_or_dir: str) -> str:
    """A local directory as is; otherwise a Hub model name, whose tokenizer files are
    fetched (from the local cache when offline)."""
    if os.path.isdir(name_or_dir):
        return name_or_dir
    if os.path.exists(name_or_dir) or name_or_dir.startswith((".", "/", "~")):
        raise FileNotFoundError(f"tokenizer directory {name_or_dir!r} does not exist")
    from huggingface_hub import snapshot_download

    try:
        # Tokenizer files only: preparing data needs no model weights.
        return snapshot_download(
            name_or_dir,
            allow_patterns=[
                "tokenizer*.json",
                "vocab.txt",
                "special_tokens_map.json",
                "config.json",
            ],
        )
    except Exception as e:  # offline without a cached copy, unknown name, ...
        raise FileNotFoundError(
            f"{name_or_dir!r} is neither a local tokenizer directory nor a Hub model whose "
            f"tokenizer can be fetched (offline?): {e}"
        ) from e


def load_tokenizer(directory: str) -> Any:
    """A Hugging Face fast tokenizer from a directory, with clear errors.

    Uses AutoTokenizer: ``BertTokenizerFast(vocab_file=...)`` silently builds a
    5-token vocabulary in transformers 5 (DESIGN.md §3).
    """
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"tokenizer directory {directory!r} does not exist")
    if not any(os.path.exists(os.path.join(directory, f)) for f in _TOKENIZER_FILES):
        raise FileNotFoundError(
            f"tokenizer directory {directory!r} holds neither of {_TOKENIZER_FILES}"
        )
    # Imported here: transformers takes seconds to import and only preparation needs it.
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(directory)
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"tokenizer in {directory!r} is not a fast (Rust) tokenizer")
    return tokenizer


def describe(tokenizer: Any, directory: str) -> TokenizerInfo:
    """Fingerprint, vocabulary size and special ids; errors if something is missing."""
    special_ids = {}
    for name in SPECIAL_NAMES:
        token_id = getattr(tokenizer, f"{name}_token_id")
        if token_id is None:
            raise ValueError(f"tokenizer in {directory!r} has no [{name.upper()}] token")
        special_ids[name] = int(token_id)
    vocab_size = len(tokenizer)
    if vocab_size <= len(set(special_ids.values())):
        raise ValueError(
            f"tokenizer in {directory!r} has only {vocab_size} tokens, all special: "
            "the vocabulary was not loaded"
        )
    return TokenizerInfo(
        directory=os.path.abspath(directory),
        fingerprint=fingerprint(tokenizer),
        vocab_size=vocab_size,
        special_ids=special_ids,
    )


def fingerprint(tokenizer: Any) -> str:
    """sha256 of the vocabulary (token, id pairs) and of the text normalisation.

    Normalisation is included because the same vocabulary with another lower-casing
    rule gives other ids for the same text.
    """
    backend = json.loads(tokenizer.backend_tokenizer.to_str())
    content = {
        "vocab": sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1]),
        "normalizer": backend.get("normalizer"),
        "pre_tokenizer": backend.get("pre_tokenizer"),
    }
    blob = json.dumps(content, sort_keys=True, ensure_ascii=False).encode()
    return hashlib.sha256(blob).hexdigest()


def check_matches_teacher(info: TokenizerInfo, teacher_dir: str) -> None:
    """Refuse a tokenizer whose ids the teacher would not understand.

    Checks what the teacher directory offers: its config's vocab_size, and, when it
    holds tokenizer files of its own, that their fingerprint is the same.
    """
    config_path = os.path.join(teacher_dir, "config.json")
    if os.path.exists(config_path):
        with open(config_path) as f:
            teacher_vocab = json.load(f).get("vocab_size")
        if teacher_vocab is not None and teacher_vocab != info.vocab_size:
            raise ValueError(
                f"tokenizer in {info.directory!r} has {info.vocab_size} tokens but the teacher "
                f"in {teacher_dir!r} has vocab_size {teacher_vocab}"
            )
    has_own = any(os.path.exists(os.path.join(teacher_dir, f)) for f in _TOKENIZER_FILES)
    if has_own and os.path.abspath(teacher_dir) != info.directory:
        teacher_info = describe(load_tokenizer(teacher_dir), teacher_dir)
        if teacher_info.fingerprint != info.fingerprint:
            raise ValueError(
                f"tokenizer in {info.directory!r} differs from the teacher's own tokenizer in "
                f"{teacher_dir!r} (vocabulary fingerprints {info.fingerprint[:12]} vs "
                f"{teacher_info.fingerprint[:12]})"
            )


def tokenizer_dir_of(config) -> str:
    """The tokenizer directory of a training config (see the module docstring)."""
    choice = config.get("tokenizer") or config.data.tokenizer_dir or config.get("teacher")
    if not choice:
        raise ValueError("set config.teacher (a HF directory) or config.data.tokenizer_dir")
    return resolve_tokenizer_dir(choice)
