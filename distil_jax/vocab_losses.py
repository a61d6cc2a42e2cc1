"""The losses on vocabulary logits at every position, with their gradient formed on the way forward.

DistilBERT's soft cross-entropy runs over every real token, so a micro-step
projects all B·L student and teacher hidden states onto the vocabulary (V =
30522 columns for BERT). Two costs follow, and this module removes both:

* memory: the logits are made and consumed a chunk of positions at a time
  ([B, Lc, V] alive at once), never the whole [B, L, V];
* compute: differentiating a chunked loss the usual way either keeps every
  chunk's logits for the backward pass (memory) or recomputes them there
  (`jax.checkpoint`: student and teacher projections again, 16% more FLOPs
  for BERT-base -> 6 layers at L=128). Here the derivative of each loss with
  respect to the logits has a closed form, so the forward pass forms it while
  the logits exist and projects it back through the tied embedding E at once:

      d features = dlogits · E      dE = dlogitsᵀ · features      d bias = Σ dlogits

  The backward pass only scales those by the incoming cotangent, so the
  projections cost exactly the model's FLOPs: 2·D·V per position for the
  teacher, 3 × 2·D·V for the student.

Closed forms per position (f32; q = softmax(s/T), p = softmax(t/T), r = softmax(s),
w the position's weight, y its label):

    soft CE  T² Σ_v p_v (log p_v - log q_v)    d/ds = w · T · (Σp · q - p)
    MLM      -log r_y                          d/ds = r - onehot(y)
    MSE      Σ_v (s_v - t_v)²                  d/ds = w · 2 (s - t)

The forward pass needs the weight each term has in the total loss, which is
alpha / count as in `losses.combine`; the counts depend on the batch only, so
they are known before the logits are.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp

from distil_jax import losses

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class _Settings:
    """The static part of a call (hashable, for `custom_vjp`'s nondiff_argnums)."""

    alphas: tuple[tuple[str, float], ...]  # (term, alpha): "mlm" always, "ce"/"mse" if nonzero
    temperature: float
    chunk_len: int
    dtype: jnp.dtype  # compute dtype of the projections (the models' dtype)
    grad_dtypes: tuple  # dtypes of the student's features, embedding and bias (and gradients)


def _project(features, embedding, bias, dtype):  # [B, Lc, D] -> [B, Lc, V] float32
    logits = jnp.einsum(
        "bld,vd->blv",
        features.astype(dtype),
        embedding.astype(dtype),
        preferred_element_type=jnp.float32,
    )
    return logits + bias.astype(jnp.float32)


def _chunk_terms(s_logits, t_logits, weights, labels, settings: _Settings, with_grad: bool):
    """Loss sums of one chunk and, if asked, each sum's derivative w.r.t. the student logits.

    Returns ({term: sum}, {term: d sum / d s_logits, [B, Lc, V] float32}); the second
    holds the terms with a nonzero alpha, and is empty unless `with_grad`.
    """
    sums, grads = {}, {}
    alphas = dict(settings.alphas)
    sums["mlm"], _ = losses.masked_lm_loss(s_logits, labels)
    if with_grad and alphas["mlm"]:
        valid = labels != losses.IGNORE_INDEX  # [B, Lc]
        r = jax.nn.softmax(s_logits, axis=-1)  # [B, Lc, V]
        onehot = jax.nn.one_hot(jnp.where(valid, labels, 0), s_logits.shape[-1])  # [B, Lc, V]
        grads["mlm"] = jnp.where(valid[..., None], r - onehot, 0.0)
    selected = (weights != 0)[..., None]  # [B, Lc, 1]
    w = weights.astype(jnp.float32)[..., None]  # [B, Lc, 1]
    if "ce" in alphas:
        t = settings.temperature
        sums["ce"], _ = losses.soft_cross_entropy(s_logits, t_logits, weights, t)
        if with_grad:
            q = jax.nn.softmax(s_logits / t, axis=-1)  # [B, Lc, V]
            p = jax.nn.softmax(t_logits / t, axis=-1)  # [B, Lc, V]
            mass = jnp.sum(p, axis=-1, keepdims=True)  # [B, Lc, 1], 1 up to rounding
            grads["ce"] = jnp.where(selected, w * t * (mass * q - p), 0.0)
    if "mse" in alphas:
        sums["mse"], _ = losses.mse_loss(s_logits, t_logits, weights)
        if with_grad:
            grads["mse"] = jnp.where(selected, w * 2.0 * (s_logits - t_logits), 0.0)
    return sums, grads


def _counts(weights, labels) -> dict[str, Array]:
    """The count of each term's (sum, count): labelled positions for MLM, weight for CE/MSE."""
    weight = jnp.sum(weights.astype(jnp.float32))
    return {
        "mlm": jnp.sum(labels != losses.IGNORE_INDEX).astype(jnp.float32),
        "ce": weight,
        "mse": weight,
    }


def _coefficients(settings: _Settings, weights, labels) -> dict[str, Array]:
    """Each term's weight in the total loss, alpha / max(count, 1) as in `losses.combine`."""
    counts = _counts(weights, labels)
    return {
        name: alpha / jnp.maximum(counts[name], 1.0) for name, alpha in settings.alphas if alpha
    }


def _in_compute_dtype(d_logits, dtype):
    """d_logits [B, Lc, V] float32 as the matmuls' input: (low-precision copy, undo factor).

    float16's smallest normal is 6e-5, and these derivatives are alpha / count times
    a probability difference (1e-8 .. 1e-3): without a loss scale in front of them,
    as autodiff would have, most would flush to 0. So the chunk is scaled by a power
    of two that brings its largest entry into [512, 1024) (exact, no rounding), and
    the float32 results of the matmuls are scaled back. bfloat16 has float32's range.
    """
    if dtype != jnp.float16:
        return d_logits.astype(dtype), None
    largest = jnp.maximum(jnp.max(jnp.abs(d_logits)), jnp.finfo(jnp.float32).tiny)
    factor = jnp.exp2(jnp.floor(jnp.log2(1024.0 / largest)))  # a power of two
    return (d_logits * factor).astype(dtype), 1.0 / factor


def split_into_chunks(x, chunk_len: int):
    """[B, L, ...] -> [n, B, Lc, ...], Lc = gcd(L, chunk_len): chunks to scan over.

    The batch axis stays whole (and keeps its sharding); gcd makes every chunk full.
    """
    batch, length = x.shape[:2]
    chunk = math.gcd(length, max(1, chunk_len))
    return jnp.moveaxis(x.reshape(batch, length // chunk, chunk, *x.shape[2:]), 1, 0)


def _run(settings: _Settings, s_features, s_embedding, s_bias, t_features, t_embedding, t_bias,
         weights, labels, with_grad: bool):  # fmt: skip
    """The scan over chunks. Returns (total, sums, (d features, dE, d bias) or None)."""
    coefs = _coefficients(settings, weights, labels)
    split = lambda x: split_into_chunks(x, settings.chunk_len)

    def body(carry, xs):
        sums, d_emb, d_bias = carry
        s_f, t_f, w, lab = xs  # [B, Lc, D], [B, Lc, D], [B, Lc], [B, Lc]
        s_logits = _project(s_f, s_embedding, s_bias, settings.dtype)  # [B, Lc, V]
        t_logits = _project(t_f, t_embedding, t_bias, settings.dtype)  # [B, Lc, V]
        chunk_sums, grads = _chunk_terms(s_logits, t_logits, w, lab, settings, with_grad)
        sums = {k: sums[k] + chunk_sums[k] for k in sums}
        if not with_grad:
            return (sums, d_emb, d_bias), None
        d_logits = sum(coefs[k] * grads[k] for k in coefs)  # [B, Lc, V] float32
        d_low, undo = _in_compute_dtype(d_logits, settings.dtype)  # matmuls in compute dtype
        d_feat = jnp.einsum(
            "blv,vd->bld",
            d_low,
            s_embedding.astype(settings.dtype),
            preferred_element_type=jnp.float32,
        )  # [B, Lc, D] float32: cast to the features' dtype after the loss scale, in bwd
        d_chunk_emb = jnp.einsum(
            "blv,bld->vd", d_low, s_f.astype(settings.dtype), preferred_element_type=jnp.float32
        )  # [V, D]
        if undo is not None:
            d_feat, d_chunk_emb = d_feat * undo, d_chunk_emb * undo
        d_emb = d_emb + d_chunk_emb
        d_bias = d_bias + jnp.sum(d_logits, axis=(0, 1))  # [V]
        return (sums, d_emb, d_bias), d_feat

    zero = jnp.zeros((), jnp.float32)
    init_sums = {name: zero for name, _ in settings.alphas}
    if with_grad:
        d_emb, d_bias = (jnp.zeros(x.shape, jnp.float32) for x in (s_embedding, s_bias))
        init = (init_sums, d_emb, d_bias)
    else:
        init = (init_sums, zero, zero)
    xs = (split(s_features), split(t_features), split(weights), split(labels))
    (sums, d_emb, d_bias), d_feat = jax.lax.scan(body, init, xs)
    total = sum(coefs[k] * sums[k] for k in coefs)
    if not with_grad:
        return total, sums, None
    d_feat = jnp.moveaxis(d_feat, 0, 1).reshape(s_features.shape)  # [B, L, D]
    return total, sums, (d_feat, d_emb, d_bias)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _total(settings, s_features, s_embedding, s_bias, t_features, t_embedding, t_bias,
           weights, labels):  # fmt: skip
    total, sums, _ = _run(settings, s_features, s_embedding, s_bias, t_features, t_embedding,
                          t_bias, weights, labels, with_grad=False)  # fmt: skip
    return total, sums


def _total_fwd(settings, *args):
    total, sums, grads = _run(settings, *args, with_grad=True)
    return (total, sums), grads


def _total_bwd(settings, grads, cotangents):
    # `sums` leave `vocab_losses` through stop_gradient, so their cotangent is 0.
    g_total, _ = cotangents
    # float32, scaled (by a float16 loss scale too) before the cast to the inputs' dtypes.
    d_feat, d_emb, d_bias = (
        (g_total * g).astype(dtype) for g, dtype in zip(grads, settings.grad_dtypes, strict=True)
    )
    # The teacher, the weights and the labels get no gradient.
    return (d_feat, d_emb, d_bias, None, None, None, None, None)


_total.defvjp(_total_fwd, _total_bwd)


def vocab_losses(
    s_features: Array,  # [B, L, D] student MLM-head features (transform + LayerNorm)
    s_embedding: Array,  # [V, D] student word embeddings (tied projection)
    s_bias: Array,  # [V] student output bias
    t_features: Array,  # [B, L, D] teacher's; no gradient reaches the teacher
    t_embedding: Array,  # [V, D]
    t_bias: Array,  # [V]
    weights: Array,  # [B, L] where CE / MSE apply: 1 for real tokens, 0 for padding
    labels: Array,  # [B, L] MLM targets, -100 where there is none
    *,
    alphas: dict[str, float],  # the loss weights: "mlm", "ce", "mse" (absent = 0)
    temperature: float,
    chunk_len: int,  # positions per sequence whose logits exist at once
    dtype=jnp.float32,  # compute dtype of the projections
) -> tuple[dict[str, losses.SumCount], Array]:
    """MLM, soft CE and MSE over every position, and the gradient of their weighted sum.

    Returns ``(terms, grad_carrier)``:
      terms: {name: (sum, count)} as the functions of `losses` would give on full
        logits, for `losses.combine`; the sums carry no gradient.
      grad_carrier: a scalar whose value is exactly 0 and whose gradient with
        respect to the student's features, embedding and bias is that of
        Σ alpha · sum / max(count, 1) over these terms. Add it to the loss.
    """
    if not (alphas.get("ce") or alphas.get("mse")):
        raise ValueError("vocab_losses is for CE/MSE at every position; both alphas are 0")
    settings = _Settings(
        alphas=(("mlm", float(alphas.get("mlm", 0.0))),)
        + tuple((k, float(alphas[k])) for k in ("ce", "mse") if alphas.get(k)),
        temperature=float(temperature),
        chunk_len=int(chunk_len),
        dtype=jnp.dtype(dtype),
        grad_dtypes=tuple(jnp.dtype(x.dtype) for x in (s_features, s_embedding, s_bias)),
    )
    t_features, t_embedding, t_bias = jax.lax.stop_gradient((t_features, t_embedding, t_bias))
    total, sums = _total(
        settings, s_features, s_embedding, s_bias, t_features, t_embedding, t_bias, weights, labels
    )
    sums = jax.lax.stop_gradient(sums)
    counts = _counts(weights, labels)
    terms = {name: (sums[name], counts[name]) for name in sums}
    return terms, total - jax.lax.stop_gradient(total)
