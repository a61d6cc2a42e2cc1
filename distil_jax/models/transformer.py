"""Flax encoder with a tied masked-LM head: BERT (teacher) and DistilBERT (student).

`BertForMaskedLM` and `DistilBertForMaskedLM` compute the same function up to
token-type embeddings and where dropout sits, so a single module serves both,
steered by `ModelConfig.arch`. Parameter names are our own and arch-neutral
(so student initialisation is a dict copy); `distil_jax.hf` maps them to the
Hugging Face names.

Every parameter carries logical axis names (`vocab`, `embed`, `heads`, `mlp`,
`transform`) that `distil_jax.sharding` maps onto the device mesh.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from distil_jax.models.config import ModelConfig

Array = jax.Array


@flax.struct.dataclass
class EncoderOutput:
    last_hidden_state: Array  # [B, L, D]
    hidden_states: tuple[Array, ...] | None  # embeddings + every layer, each [B, L, D]


@flax.struct.dataclass
class MaskedLMOutput:
    last_hidden_state: Array  # [B, L, D]
    hidden_states: tuple[Array, ...] | None
    logits: Array | None  # [B, L, V], or [B, K, V] at the requested positions


def activation_fn(name: str):
    if name == "gelu":
        # transformers' "gelu" is the exact erf form; jax defaults to the tanh one.
        return functools.partial(jax.nn.gelu, approximate=False)
    if name in ("gelu_new", "gelu_pytorch_tanh"):
        return functools.partial(jax.nn.gelu, approximate=True)
    if name == "relu":
        return jax.nn.relu
    raise ValueError(f"unknown activation {name!r}")


def sinusoidal_table(num_positions: int, dim: int) -> np.ndarray:
    """The fixed DistilBERT position table: sin on even, cos on odd features."""
    pos = np.arange(num_positions, dtype=np.float64)[:, None]  # [P, 1]
    j = np.arange(dim)[None, :]  # [1, D]
    angle = pos / np.power(10000, 2 * (j // 2) / dim)  # [P, D]
    table = np.where(j % 2 == 0, np.sin(angle), np.cos(angle))
    return table.astype(np.float32)


def dense(cfg: ModelConfig, features: int, axes, dtype, param_dtype, name=None):
    """A Dense layer with BERT's N(0, initializer_range) init and logical axes (in, out)."""
    return nn.Dense(
        features,
        dtype=dtype,
        param_dtype=param_dtype,
        kernel_init=nn.with_logical_partitioning(
            nn.initializers.normal(cfg.initializer_range), axes
        ),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (axes[1],)),
        name=name,
    )


def layer_norm(cfg: ModelConfig, dtype, param_dtype, name=None):
    # Flax promotes the statistics to float32 whatever `dtype` is.
    return nn.LayerNorm(
        epsilon=cfg.layer_norm_eps,
        dtype=dtype,
        param_dtype=param_dtype,
        scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
        name=name,
    )


class Embeddings(nn.Module):
    cfg: ModelConfig
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def setup(self):
        cfg = self.cfg
        init = nn.initializers.normal(cfg.initializer_range)
        embed = functools.partial(nn.Embed, dtype=self.dtype, param_dtype=self.param_dtype)
        self.word_embeddings = embed(
            cfg.vocab_size,
            cfg.hidden_size,
            embedding_init=nn.with_logical_partitioning(init, ("vocab", "embed")),
        )
        if not cfg.sinusoidal_pos_embds:
            self.position_embeddings = embed(
                cfg.max_position_embeddings,
                cfg.hidden_size,
                embedding_init=nn.with_logical_partitioning(init, (None, "embed")),
            )
        if cfg.type_vocab_size:
            self.token_type_embeddings = embed(
                cfg.type_vocab_size,
                cfg.hidden_size,
                embedding_init=nn.with_logical_partitioning(init, (None, "embed")),
            )
        self.norm = layer_norm(cfg, self.dtype, self.param_dtype)
        self.dropout = nn.Dropout(cfg.hidden_dropout)

    def __call__(self, input_ids, token_type_ids, deterministic: bool):
        length = input_ids.shape[1]
        if length > self.cfg.max_position_embeddings:
            raise ValueError(
                f"sequence length {length} exceeds max_position_embeddings "
                f"{self.cfg.max_position_embeddings}"
            )
        x = self.word_embeddings(input_ids)  # [B, L, D]
        if self.cfg.sinusoidal_pos_embds:
            table = sinusoidal_table(self.cfg.max_position_embeddings, self.cfg.hidden_size)
            x = x + jnp.asarray(table[:length], self.dtype)[None]
        else:
            x = x + self.position_embeddings(jnp.arange(length))[None]  # [1, L, D]
        if self.cfg.type_vocab_size:
            if token_type_ids is None:
                token_type_ids = jnp.zeros_like(input_ids)
            x = x + self.token_type_embeddings(token_type_ids)
        x = self.norm(x)
        return self.dropout(x, deterministic=deterministic)


class SelfAttention(nn.Module):
    cfg: ModelConfig
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    implementation: str | None = None  # jax.nn.dot_product_attention: None, "xla", "cudnn"

    @nn.compact
    def __call__(self, x, key_mask, deterministic: bool):
        cfg = self.cfg
        batch, length, _ = x.shape

        def project(name):  # [B, L, D] -> [B, L, N, H]
            proj = dense(
                cfg, cfg.hidden_size, ("embed", "heads"), self.dtype, self.param_dtype, name
            )
            return proj(x).reshape(batch, length, cfg.num_heads, cfg.head_dim)

        q, k, v = project("query"), project("key"), project("value")
        mask = key_mask[:, None, None, :].astype(bool)  # [B, 1, 1, L]: padded keys are off
        dropout = cfg.attention_dropout > 0 and not deterministic
        # The fused kernels have no dropout on the probabilities, and XLA:CPU has no
        # float16 dot with float32 accumulation: those cases take the explicit path.
        cpu_half = q.dtype == jnp.float16 and jax.default_backend() == "cpu"
        if dropout or cpu_half:
            out = self._explicit_attention(q, k, v, mask, dropout)
        else:
            out = jax.nn.dot_product_attention(
                q, k, v, mask=mask, implementation=self.implementation
            )
        out = out.reshape(batch, length, cfg.hidden_size)  # [B, L, D]
        out_proj = dense(
            cfg, cfg.hidden_size, ("heads", "embed"), self.dtype, self.param_dtype, "out"
        )
        return out_proj(out)

    def _explicit_attention(self, q, k, v, mask, dropout: bool):
        scale = self.cfg.head_dim**-0.5
        logits = jnp.einsum("btnh,bsnh->bnts", q, k).astype(jnp.float32)  # [B, N, L, L]
        logits = jnp.where(mask, logits * scale, jnp.finfo(jnp.float32).min)
        probs = jax.nn.softmax(logits, axis=-1)  # in float32
        if dropout:
            probs = nn.Dropout(self.cfg.attention_dropout)(probs, deterministic=False)
        return jnp.einsum("bnts,bsnh->btnh", probs.astype(v.dtype), v)  # [B, L, N, H]


class FeedForward(nn.Module):
    cfg: ModelConfig
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        cfg = self.cfg
        dt, pdt = self.dtype, self.param_dtype
        h = dense(cfg, cfg.intermediate_size, ("embed", "mlp"), dt, pdt, "intermediate")(x)
        h = activation_fn(cfg.activation)(h)  # [B, L, F]
        return dense(cfg, cfg.hidden_size, ("mlp", "embed"), dt, pdt, "output")(h)  # [B, L, D]


class TransformerLayer(nn.Module):
    """Post-LN block: x = LN(x + Attn(x)); x = LN(x + FFN(x))."""

    cfg: ModelConfig
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    attention_implementation: str | None = None

    @nn.compact
    def __call__(self, x, key_mask, deterministic: bool):
        cfg = self.cfg
        dropout = nn.Dropout(cfg.hidden_dropout)
        attn = SelfAttention(
            cfg, self.dtype, self.param_dtype, self.attention_implementation, name="attention"
        )(x, key_mask, deterministic)
        if cfg.arch == "bert":  # DistilBERT has no dropout after the attention projection
            attn = dropout(attn, deterministic=deterministic)
        x = layer_norm(cfg, self.dtype, self.param_dtype, "attention_norm")(x + attn)
        ffn = FeedForward(cfg, self.dtype, self.param_dtype, name="ffn")(x)
        ffn = dropout(ffn, deterministic=deterministic)
        return layer_norm(cfg, self.dtype, self.param_dtype, "output_norm")(x + ffn)


class MaskedLM(nn.Module):
    """Encoder + tied MLM head; the student and the teacher are both this module.

    Attributes:
      cfg: the architecture.
      dtype: compute dtype (float32, bfloat16, float16); softmax and LayerNorm
        statistics stay in float32.
      param_dtype: storage dtype of the parameters (float32 master weights).
      remat: recompute each layer's activations in the backward pass (memory lever).
      attention_implementation: passed to `jax.nn.dot_product_attention`.
    """

    cfg: ModelConfig
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    remat: bool = False
    attention_implementation: str | None = None

    def setup(self):
        cfg = self.cfg
        self.embeddings = Embeddings(cfg, self.dtype, self.param_dtype)
        layer_cls = (
            nn.remat(TransformerLayer, static_argnums=(3,)) if self.remat else TransformerLayer
        )
        self.layers = [
            layer_cls(
                cfg, self.dtype, self.param_dtype, self.attention_implementation, name=f"layer_{i}"
            )
            for i in range(cfg.num_layers)
        ]
        dt, pdt = self.dtype, self.param_dtype
        # MLM head: dense -> activation -> LayerNorm -> tied projection + bias.
        self.head_transform = dense(cfg, cfg.hidden_size, ("embed", "transform"), dt, pdt)
        self.head_norm = layer_norm(cfg, dt, pdt)
        self.head_bias = self.param(
            "head_bias",
            nn.with_logical_partitioning(nn.initializers.zeros, ("vocab",)),
            (cfg.vocab_size,),
            self.param_dtype,
        )
        if cfg.with_pooler:
            self.pooler = dense(cfg, cfg.hidden_size, ("embed", "transform"), dt, pdt)

    def encode(
        self,
        input_ids,  # [B, L] int
        attention_mask,  # [B, L] 1 for real tokens, 0 for padding
        token_type_ids=None,  # [B, L] or None (zeros); BERT only
        deterministic: bool = True,
        output_hidden_states: bool = False,
    ) -> EncoderOutput:
        x = self.embeddings(input_ids, token_type_ids, deterministic)  # [B, L, D]
        all_hidden = [x] if output_hidden_states else None
        for layer in self.layers:
            x = layer(x, attention_mask, deterministic)
            if output_hidden_states:
                all_hidden.append(x)
        return EncoderOutput(x, tuple(all_hidden) if output_hidden_states else None)

    def head_features(self, hidden):  # [..., D] -> [..., D]: the MLM head before the vocab
        return self.head_norm(activation_fn(self.cfg.activation)(self.head_transform(hidden)))

    def mlm_logits(self, hidden):  # [..., D] -> [..., V]
        h = self.head_features(hidden)
        logits = self.embeddings.word_embeddings.attend(h)  # tied to the input embeddings
        return logits + self.head_bias.astype(logits.dtype)

    def pooled(self, hidden):  # [B, L, D] -> [B, D]: tanh(dense(h[:, 0]))
        return jnp.tanh(self.pooler(hidden[:, 0]))

    def __call__(
        self,
        input_ids,
        attention_mask,
        token_type_ids=None,
        deterministic: bool = True,
        output_hidden_states: bool = False,
        logits_positions=None,  # [B, K] int: compute logits only there (None: everywhere)
        compute_logits: bool = True,
    ) -> MaskedLMOutput:
        enc = self.encode(
            input_ids, attention_mask, token_type_ids, deterministic, output_hidden_states
        )
        logits = None
        if compute_logits:
            hidden = enc.last_hidden_state
            if logits_positions is not None:
                # Gather before the vocabulary projection: it is a quarter of the
                # forward FLOPs and the MLM losses need ~15% of positions.
                hidden = jnp.take_along_axis(hidden, logits_positions[..., None], axis=1)
            logits = self.mlm_logits(hidden)
        if self.cfg.with_pooler and self.is_initializing():
            self.pooled(enc.last_hidden_state)  # create the pooler's params
        return MaskedLMOutput(enc.last_hidden_state, enc.hidden_states, logits)


def init_params(model: MaskedLM, rng, batch_size: int = 1, length: int = 8):
    """Initialises boxed (logically partitioned) parameters for `model`."""
    ids = jnp.zeros((batch_size, length), jnp.int32)
    return model.init(rng, ids, jnp.ones_like(ids))["params"]
