"""A tiny teacher, corpus and config for training tests (all written by the test)."""

from __future__ import annotations

import os
import sys

import numpy as np
from data_fixtures import random_documents, vocab_size, write_corpus, write_tokenizer_dir
from transformers import BertConfig, BertForMaskedLM

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from configs.base import get_config  # noqa: E402
from distil_jax.data.config import text_files_source  # noqa: E402


def write_teacher(directory: str, num_layers: int = 4, seed: int = 0) -> str:
    """A random tiny BERT with the fixture tokenizer's vocabulary, in HF layout."""
    import torch

    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=vocab_size(),
        hidden_size=32,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertForMaskedLM(cfg).save_pretrained(directory)
    write_tokenizer_dir(directory)
    return directory


def write_text(path: str, num_documents: int = 60, seed: int = 0) -> str:
    return write_corpus(path, random_documents(seed, num_documents, max_words=40))


def tiny_config(root: str, mode: str = "distill", **overrides):
    """The base recipe shrunk to seconds on CPU: 32-wide models, length <= 32."""
    root = str(root)
    teacher = os.path.join(root, "teacher")
    if not os.path.exists(os.path.join(teacher, "config.json")):
        write_teacher(teacher)
    corpus = os.path.join(root, "corpus", "train.txt")
    if not os.path.exists(corpus):
        write_text(corpus)
    config = get_config()
    config.mode = mode
    config.teacher = teacher
    config.student.num_layers = 2
    config.data.sources = [text_files_source(os.path.join(root, "corpus", "*.txt"))]
    config.data.prepared_dir = os.path.join(root, "prepared")
    config.data.max_len = 32
    config.data.bucket_lengths = (16, 32)
    config.data.num_workers = 0
    config.data.held_out_fraction = 0.1
    config.batch.micro_batch_size = 8
    config.batch.accumulation_steps = 2
    config.num_train_steps = 6
    config.dtype = "float32"
    config.optim.learning_rate = 1e-3
    config.optim.warmup_fraction = 0.0
    config.loss.logits_chunk_len = 16
    config.log_every = 1
    config.checkpoint_every = 3
    config.eval_every = 0
    config.eval_batches = 4
    if mode == "pretrain":
        config.student.init = "random"
        config.student.arch = "bert"
    for key, value in overrides.items():
        node = config
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return config


def leaves(tree) -> list[np.ndarray]:
    import jax

    return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(tree))]
