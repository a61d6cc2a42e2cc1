"""Architecture description shared by the BERT teacher and the DistilBERT student.

Both models are the same post-LN Transformer encoder with a tied MLM head; they
differ in token-type embeddings, pooler, dropout placement and parameter names
on the Hugging Face side. One frozen dataclass describes either, so the Flax
module stays a single implementation and the HF name table carries the rest.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax.numpy as jnp

ARCHITECTURES = ("bert", "distilbert")
ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of a BERT-like encoder with a masked-LM head."""

    arch: str  # "bert" (teacher) or "distilbert" (student)
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_position_embeddings: int = 512
    type_vocab_size: int = 0  # 0: no token-type embeddings (DistilBERT)
    layer_norm_eps: float = 1e-12
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    activation: str = "gelu"  # "gelu" is the exact erf GELU, as in transformers
    sinusoidal_pos_embds: bool = False  # fixed sinusoidal table instead of learned
    pad_token_id: int = 0
    with_pooler: bool = False  # BERT's [CLS] pooler (tanh dense), for classification
    initializer_range: float = 0.02

    def __post_init__(self):
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"arch must be one of {ARCHITECTURES}, got {self.arch!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}"
            )
        if self.arch == "distilbert" and self.type_vocab_size:
            raise ValueError("DistilBERT has no token-type embeddings: set type_vocab_size=0")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    def replace(self, **changes) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    # ---------------------------------------------------------------- HF config.json

    @classmethod
    def from_hf_dict(cls, hf: dict[str, Any], source: str = "config.json") -> ModelConfig:
        """Reads a transformers BertConfig / DistilBertConfig dictionary."""
        model_type = hf.get("model_type")
        try:
            if model_type == "bert":
                pos_type = hf.get("position_embedding_type", "absolute")
                if pos_type != "absolute":
                    raise ValueError(
                        f"{source}: position_embedding_type={pos_type!r} is not supported "
                        "(only 'absolute')"
                    )
                return cls(
                    arch="bert",
                    vocab_size=hf["vocab_size"],
                    hidden_size=hf["hidden_size"],
                    num_layers=hf["num_hidden_layers"],
                    num_heads=hf["num_attention_heads"],
                    intermediate_size=hf["intermediate_size"],
                    max_position_embeddings=hf.get("max_position_embeddings", 512),
                    type_vocab_size=hf.get("type_vocab_size", 2),
                    layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
                    hidden_dropout=hf.get("hidden_dropout_prob", 0.1),
                    attention_dropout=hf.get("attention_probs_dropout_prob", 0.1),
                    activation=hf.get("hidden_act", "gelu"),
                    pad_token_id=hf.get("pad_token_id") or 0,
                    initializer_range=hf.get("initializer_range", 0.02),
                )
            if model_type == "distilbert":
                return cls(
                    arch="distilbert",
                    vocab_size=hf["vocab_size"],
                    hidden_size=hf["dim"],
                    num_layers=hf["n_layers"],
                    num_heads=hf["n_heads"],
                    intermediate_size=hf["hidden_dim"],
                    max_position_embeddings=hf.get("max_position_embeddings", 512),
                    type_vocab_size=0,
                    # transformers hard-codes eps=1e-12 in every DistilBERT LayerNorm.
                    layer_norm_eps=1e-12,
                    hidden_dropout=hf.get("dropout", 0.1),
                    attention_dropout=hf.get("attention_dropout", 0.1),
                    activation=hf.get("activation", "gelu"),
                    sinusoidal_pos_embds=bool(hf.get("sinusoidal_pos_embds", False)),
                    pad_token_id=hf.get("pad_token_id") or 0,
                    initializer_range=hf.get("initializer_range", 0.02),
                )
        except KeyError as e:
            raise ValueError(
                f"{source}: missing field {e.args[0]!r} for model_type {model_type!r}"
            ) from None
        raise ValueError(
            f"{source}: model_type {model_type!r} is neither 'bert' nor 'distilbert'; "
            "distil_jax reads BertConfig and DistilBertConfig files only"
        )

    @classmethod
    def from_hf_file(cls, path: str) -> ModelConfig:
        if os.path.isdir(path):
            path = os.path.join(path, "config.json")
        if not os.path.exists(path):
            raise FileNotFoundError(f"no config.json at {path}: expected a Hugging Face model dir")
        with open(path) as f:
            try:
                hf = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path} is not valid JSON: {e}") from e
        return cls.from_hf_dict(hf, source=path)

    def to_hf_dict(self) -> dict[str, Any]:
        """The transformers config.json content for this architecture."""
        if self.arch == "bert":
            return {
                "model_type": "bert",
                "architectures": ["BertForMaskedLM"],
                "vocab_size": self.vocab_size,
                "hidden_size": self.hidden_size,
                "num_hidden_layers": self.num_layers,
                "num_attention_heads": self.num_heads,
                "intermediate_size": self.intermediate_size,
                "hidden_act": self.activation,
                "hidden_dropout_prob": self.hidden_dropout,
                "attention_probs_dropout_prob": self.attention_dropout,
                "max_position_embeddings": self.max_position_embeddings,
                "type_vocab_size": self.type_vocab_size,
                "initializer_range": self.initializer_range,
                "layer_norm_eps": self.layer_norm_eps,
                "pad_token_id": self.pad_token_id,
                "position_embedding_type": "absolute",
                "tie_word_embeddings": True,
            }
        return {
            "model_type": "distilbert",
            "architectures": ["DistilBertForMaskedLM"],
            "vocab_size": self.vocab_size,
            "dim": self.hidden_size,
            "n_layers": self.num_layers,
            "n_heads": self.num_heads,
            "hidden_dim": self.intermediate_size,
            "activation": self.activation,
            "dropout": self.hidden_dropout,
            "attention_dropout": self.attention_dropout,
            "max_position_embeddings": self.max_position_embeddings,
            "sinusoidal_pos_embds": self.sinusoidal_pos_embds,
            "initializer_range": self.initializer_range,
            "pad_token_id": self.pad_token_id,
            "qa_dropout": 0.1,
            "seq_classif_dropout": 0.2,
            "tie_word_embeddings": True,
        }

    def student(self, num_layers: int | None = None) -> ModelConfig:
        """The DistilBERT config of a student distilled from this (BERT) teacher."""
        return ModelConfig(
            arch="distilbert",
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            num_layers=num_layers if num_layers is not None else max(1, self.num_layers // 2),
            num_heads=self.num_heads,
            intermediate_size=self.intermediate_size,
            max_position_embeddings=self.max_position_embeddings,
            layer_norm_eps=1e-12,
            hidden_dropout=self.hidden_dropout,
            attention_dropout=self.attention_dropout,
            activation=self.activation,
            pad_token_id=self.pad_token_id,
            initializer_range=self.initializer_range,
        )
