"""Small inputs for data tests, written by the tests: a WordPiece tokenizer
directory, text corpora in the shared data's layout, and a tiny data config.

Importable by any test (``from data_fixtures import ...``); nothing is downloaded.
"""

from __future__ import annotations

import gzip
import json
import os

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from distil_jax.data.config import data_config, text_files_source

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # [PAD] = 0, as in BERT
WORDS = (
    "the a cat dog sat on mat ran fast slow big small red blue and or is was it he she "
    "they we you in at to of for with by from up down over under . ,"
).split()
SUFFIXES = ["##s", "##ed", "##ing"]


def write_tokenizer_dir(
    directory: str, words: list[str] | None = None, truncate_at: int | None = None
) -> str:
    """A lower-casing WordPiece tokenizer loadable with AutoTokenizer.from_pretrained.

    truncate_at: also write a tokenizer.json that truncates and pads to this many
    tokens, as the shared bert-base-uncased one does (at 128), so tests show that
    preparation tokenises whole paragraphs regardless.
    """
    os.makedirs(directory, exist_ok=True)
    vocab = SPECIALS + list(WORDS if words is None else words) + SUFFIXES
    with open(os.path.join(directory, "vocab.txt"), "w") as f:
        f.write("\n".join(vocab) + "\n")
    with open(os.path.join(directory, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "BertTokenizer", "do_lower_case": True}, f)
    if truncate_at is not None:
        from transformers import AutoTokenizer

        backend = AutoTokenizer.from_pretrained(directory).backend_tokenizer
        backend.enable_truncation(max_length=truncate_at)
        backend.enable_padding(length=truncate_at, pad_id=0, pad_token="[PAD]")
        backend.save(os.path.join(directory, "tokenizer.json"))
    return directory


def vocab_size(words: list[str] | None = None) -> int:
    return len(SPECIALS) + len(WORDS if words is None else words) + len(SUFFIXES)


def random_documents(
    seed: int, num_documents: int, max_paragraphs: int = 4, max_words: int = 30
) -> list[list[str]]:
    """Documents of paragraphs of known words, some unknown ('zebra'), some long."""
    rng = np.random.default_rng(seed)
    vocabulary = WORDS + ["cats", "walked", "zebra", "Dog"]
    documents = []
    for _ in range(num_documents):
        paragraphs = []
        for _ in range(int(rng.integers(1, max_paragraphs + 1))):
            n = int(rng.integers(1, max_words + 1))
            paragraphs.append(" ".join(rng.choice(vocabulary, size=n)))
        documents.append(paragraphs)
    return documents


def write_corpus(path: str, documents: list[list[str]]) -> str:
    """Paragraph layout: one paragraph per line, a blank line between documents."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    text = "\n\n".join("\n".join(doc) for doc in documents) + "\n"
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "wt", encoding="utf-8") as f:
        f.write(text)
    return path


def tiny_data_config(glob: str, prepared_dir: str, **overrides):
    """A data section sized for tests: short sequences, small buckets, no workers."""
    cfg = data_config()
    cfg.sources = [text_files_source(glob)]
    cfg.prepared_dir = prepared_dir
    cfg.max_len = 16
    cfg.min_len = 4
    cfg.bucket_lengths = (8, 12, 16)
    cfg.num_workers = 0
    cfg.loader_threads = 2
    cfg.prefetch_batches = 4
    for key, value in overrides.items():
        cfg[key] = value
    return cfg


class TinyTexts(tfds.core.GeneratorBasedBuilder):
    """A TFDS text dataset ('text' feature, one document per record) for source tests."""

    VERSION = tfds.core.Version("1.0.0")
    documents: list[str] = []  # set by the test before building
    # TFDS looks for metadata files in the builder's package; this module is not
    # in a package, so name its folder (there are none to find).
    pkg_dir_path = epath.Path(__file__).parent

    def _info(self):
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({"text": tfds.features.Text()}),
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        for i, text in enumerate(self.documents):
            yield i, {"text": text}


def build_tiny_texts(data_dir: str, documents: list[str]) -> None:
    """Write TinyTexts in array_record format under data_dir (readable by name)."""
    TinyTexts.documents = documents
    TinyTexts(data_dir=data_dir).download_and_prepare(
        file_format="array_record",
        download_config=tfds.download.DownloadConfig(
            compute_stats=tfds.download.ComputeStatsMode.SKIP
        ),
    )
