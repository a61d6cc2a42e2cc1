"""Task heads on our encoders, computing what transformers' heads compute.

- BertForSequenceClassification: pooler tanh(dense(h[CLS])) -> dropout -> classifier.
- DistilBertForSequenceClassification: h[CLS] -> pre_classifier -> ReLU ->
  dropout (seq_classif_dropout) -> classifier.
- Regression (STS-B) is the same head with one output.
- *ForQuestionAnswering: qa_outputs on every position -> start, end logits
  (DistilBERT applies qa_dropout first; BERT no extra dropout).

`TaskModel` reuses `MaskedLM`'s encoder (same submodules, same parameter
names, its `encode` and `pooled`) but builds no MLM head, so a fine-tuned
model has exactly the tensors transformers' task classes expect.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from distil_jax.eval.tasks import KINDS
from distil_jax.models import MaskedLM, ModelConfig
from distil_jax.models.transformer import Embeddings, TransformerLayer, dense


@dataclasses.dataclass(frozen=True)
class HeadConfig:
    kind: str  # "classification", "regression" or "span"
    num_labels: int  # classes; 1 for regression; 2 (start, end) for spans
    dropout: float  # dropout before the last projection (see the module docstring)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"head kind must be one of {KINDS}, got {self.kind!r}")
        want = {"regression": 1, "span": 2}.get(self.kind)
        if want is not None and self.num_labels != want:
            raise ValueError(f"a {self.kind} head has {want} output(s), got {self.num_labels}")
        if self.kind == "classification" and self.num_labels < 2:
            raise ValueError(f"a classification head needs >= 2 labels, got {self.num_labels}")


def encoder_config(cfg: ModelConfig, head: HeadConfig) -> ModelConfig:
    """BERT's sequence heads read the pooler; its span head (and DistilBERT) have none."""
    return cfg.replace(with_pooler=cfg.arch == "bert" and head.kind != "span")


class TaskModel(MaskedLM):
    """Encoder + one task head. Outputs float32 logits:
    [B, C] for classification / regression, ([B, L], [B, L]) start/end for spans."""

    head: HeadConfig | None = None

    def setup(self):
        # Deliberately not MaskedLM.setup: the MLM head (and its vocab-sized bias)
        # has no place in a task model. Names match MaskedLM's encoder.
        cfg, head = self.cfg, self.head
        if head is None:
            raise ValueError("TaskModel needs a HeadConfig")
        dt, pdt = self.dtype, self.param_dtype
        self.embeddings = Embeddings(cfg, dt, pdt)
        layer_cls = (
            nn.remat(TransformerLayer, static_argnums=(3,)) if self.remat else TransformerLayer
        )
        self.layers = [
            layer_cls(cfg, dt, pdt, self.attention_implementation, name=f"layer_{i}")
            for i in range(cfg.num_layers)
        ]
        if cfg.with_pooler:
            self.pooler = dense(cfg, cfg.hidden_size, ("embed", "transform"), dt, pdt)
        if head.kind == "span":
            self.qa_outputs = dense(cfg, 2, ("embed", None), dt, pdt)
        else:
            if cfg.arch == "distilbert":
                self.pre_classifier = dense(cfg, cfg.hidden_size, ("embed", "transform"), dt, pdt)
            self.classifier = dense(cfg, head.num_labels, ("embed", None), dt, pdt)
        self.head_dropout = nn.Dropout(head.dropout)

    def __call__(
        self,
        input_ids,  # [B, L] int
        attention_mask,  # [B, L] 1 real, 0 padding
        token_type_ids=None,  # [B, L]; BERT only
        deterministic: bool = True,
    ):
        hidden = self.encode(
            input_ids, attention_mask, token_type_ids, deterministic
        ).last_hidden_state  # [B, L, D]
        if self.head.kind == "span":
            hidden = self.head_dropout(hidden, deterministic=deterministic)
            logits = self.qa_outputs(hidden).astype(jnp.float32)  # [B, L, 2]
            return logits[..., 0], logits[..., 1]
        if self.cfg.arch == "bert":
            features = self.pooled(hidden)  # [B, D]
        else:
            features = jax.nn.relu(self.pre_classifier(hidden[:, 0]))  # [B, D]
        features = self.head_dropout(features, deterministic=deterministic)
        return self.classifier(features).astype(jnp.float32)  # [B, C]


def make_task_model(cfg: ModelConfig, head: HeadConfig, dtype=jnp.float32, **kw) -> TaskModel:
    return TaskModel(
        encoder_config(cfg, head), dtype=dtype, param_dtype=jnp.float32, head=head, **kw
    )


def abstract_boxed_params(model: TaskModel):
    """Shapes, dtypes and logical axes of the params, without allocating them."""
    ids = jax.ShapeDtypeStruct((1, 8), jnp.int32)
    return jax.eval_shape(lambda i: model.init(jax.random.key(0), i, i), ids)["params"]


def count_params(params) -> int:
    return int(sum(x.size for x in jax.tree_util.tree_leaves(params)))
