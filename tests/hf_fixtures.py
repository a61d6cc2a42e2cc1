"""Tiny random Hugging Face models and tokenizers, written by tests (no downloads)."""

from __future__ import annotations

import json
import os

import numpy as np
import torch
from transformers import BertConfig, BertForMaskedLM, DistilBertConfig, DistilBertForMaskedLM

WORDS = (
    "the a cat dog sat on mat ran fast slow big small red blue and or is was it he she "
    "they we you in at to of for with by from up down over under ##s ##ed ##ing"
).split()
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

TINY_BERT = dict(
    vocab_size=len(SPECIALS) + len(WORDS) + 20,
    hidden_size=32,
    num_hidden_layers=4,
    num_attention_heads=4,
    intermediate_size=48,
    max_position_embeddings=64,
)


def write_tokenizer(directory: str, extra_tokens: int = 20) -> str:
    """A WordPiece vocab (specials first, [PAD]=0) loadable with AutoTokenizer."""
    os.makedirs(directory, exist_ok=True)
    vocab = SPECIALS + WORDS + [f"tok{i}" for i in range(extra_tokens)]
    with open(os.path.join(directory, "vocab.txt"), "w") as f:
        f.write("\n".join(vocab) + "\n")
    with open(os.path.join(directory, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "BertTokenizer", "do_lower_case": True}, f)
    return directory


def bert_teacher(seed: int = 0, **overrides) -> BertForMaskedLM:
    torch.manual_seed(seed)
    cfg = BertConfig(**{**TINY_BERT, **overrides})
    model = BertForMaskedLM(cfg).eval()
    _randomise(model, seed)
    return model


def distilbert_student(seed: int = 0, **overrides) -> DistilBertForMaskedLM:
    torch.manual_seed(seed)
    kw = dict(
        vocab_size=TINY_BERT["vocab_size"],
        dim=32,
        n_layers=2,
        n_heads=4,
        hidden_dim=48,
        max_position_embeddings=64,
    )
    model = DistilBertForMaskedLM(DistilBertConfig(**{**kw, **overrides})).eval()
    _randomise(model, seed)
    return model


def _randomise(model: torch.nn.Module, seed: int) -> None:
    """Non-trivial values everywhere (LayerNorm scales, biases), so a swapped tensor shows."""
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "position_embeddings" in name and getattr(
                model.config, "sinusoidal_pos_embds", False
            ):
                continue
            noise = torch.randn(p.shape, generator=gen) * 0.05
            p.copy_(
                (1.0 + noise)
                if name.endswith("LayerNorm.weight") or "layer_norm.weight" in name
                else p + noise
            )


def save_hf(model, directory: str, with_tokenizer: bool = True) -> str:
    model.save_pretrained(directory)
    if with_tokenizer:
        write_tokenizer(directory)
    return directory


def padded_batch(vocab_size: int, seed: int = 0, batch: int = 3, length: int = 12):
    """Random ids with right padding of different lengths ([CLS] ... [SEP] [PAD] ...)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, vocab_size, size=(batch, length)).astype(np.int32)
    lengths = np.linspace(length, length // 2, batch).astype(int)
    mask = (np.arange(length)[None] < lengths[:, None]).astype(np.int32)
    ids[:, 0] = 2
    ids[np.arange(batch), lengths - 1] = 3
    ids = np.where(mask == 1, ids, 0)
    return ids, mask
