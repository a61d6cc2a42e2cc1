"""Distillation loss terms (DESIGN.md §1.1), each returned as a ``(sum, count)`` pair.

Returning un-normalised sums lets the caller divide once, after any cross-device
or cross-host reduction, so the reported mean is exact whatever the sharding.
All arithmetic runs in float32: inputs (e.g. bf16 logits) are cast up first,
because softmax/KL over a 30k vocabulary loses too much precision in bf16.
"""

from collections.abc import Mapping

import jax
import jax.numpy as jnp

Array = jax.Array
SumCount = tuple[Array, Array]

# torch's cosine_embedding_loss adds this to each squared norm (not to the
# norm product, and unlike F.cosine_similarity's eps=1e-8 clamp of each norm).
_TORCH_COSINE_EPS = 1e-12

IGNORE_INDEX = -100


def _f32(x: Array) -> Array:
    return jnp.asarray(x).astype(jnp.float32)


def _select(per_position: Array, weights: Array) -> SumCount:
    """Sums ``per_position`` over positions with nonzero weight.

    ``jnp.where`` (rather than a plain multiply) guarantees unselected positions
    contribute exactly 0 even if their value is inf/NaN, in both the forward
    pass and the gradient.
    """
    w = _f32(weights)  # [...]
    selected = w != 0
    total = jnp.sum(jnp.where(selected, per_position * w, 0.0))
    return total, jnp.sum(w)


def soft_cross_entropy(
    student_logits: Array, teacher_logits: Array, weights: Array, temperature: float
) -> SumCount:
    """KL(softmax(t/T) || softmax(s/T)) * T^2, summed over vocab and selected positions.

    Dividing the sum by the count gives torch's ``KLDivLoss(reduction='batchmean')``
    over the selected rows, as in the reference ``distiller.py``.

    Args:
      student_logits: ``[..., V]``.
      teacher_logits: ``[..., V]``.
      weights: ``[...]``, 1 at positions to include, 0 elsewhere.
      temperature: softmax temperature T.
    """
    log_p_s = jax.nn.log_softmax(_f32(student_logits) / temperature, axis=-1)  # [..., V]
    log_p_t = jax.nn.log_softmax(_f32(teacher_logits) / temperature, axis=-1)  # [..., V]
    # p_t * (log p_t - log p_s); an underflowed p_t is 0 times a finite number,
    # matching torch's convention 0 * log 0 = 0.
    kl = jnp.sum(jnp.exp(log_p_t) * (log_p_t - log_p_s), axis=-1)  # [...]
    total, count = _select(kl * temperature**2, weights)
    return total, count


def masked_lm_loss(student_logits: Array, labels: Array) -> SumCount:
    """Cross-entropy against ``labels`` [...]; positions labelled -100 are ignored."""
    log_p = jax.nn.log_softmax(_f32(student_logits), axis=-1)  # [..., V]
    valid = labels != IGNORE_INDEX  # [...]
    # -100 is not a valid index; gather at 0 there and drop it via `valid`.
    safe_labels = jnp.where(valid, labels, 0).astype(jnp.int32)  # [...]
    nll = -jnp.take_along_axis(log_p, safe_labels[..., None], axis=-1)[..., 0]  # [...]
    return _select(nll, valid)


def cosine_loss(student_hidden: Array, teacher_hidden: Array, weights: Array) -> SumCount:
    """Sum over selected positions of 1 - cos(h_s, h_t), as torch's CosineEmbeddingLoss.

    torch computes cos = <a, b> / sqrt((|a|^2 + eps) * (|b|^2 + eps)), eps = 1e-12,
    so a zero vector gives cos = 0 (loss 1) instead of NaN.

    Args:
      student_hidden: ``[..., D]``.
      teacher_hidden: ``[..., D]``.
      weights: ``[...]``, 1 at positions to include.
    """
    s = _f32(student_hidden)  # [..., D]
    t = _f32(teacher_hidden)  # [..., D]
    dot = jnp.sum(s * t, axis=-1)  # [...]
    sq_s = jnp.sum(s * s, axis=-1) + _TORCH_COSINE_EPS  # [...]
    sq_t = jnp.sum(t * t, axis=-1) + _TORCH_COSINE_EPS  # [...]
    cos = dot / jnp.sqrt(sq_s * sq_t)  # [...]
    return _select(1.0 - cos, weights)


def mse_loss(student_logits: Array, teacher_logits: Array, weights: Array) -> SumCount:
    """Squared error summed over vocab and selected positions; count = selected positions.

    The reference divides ``MSELoss(reduction='sum')`` by the number of selected
    rows (not by rows * V), which this count reproduces.
    """
    sq = jnp.sum(jnp.square(_f32(student_logits) - _f32(teacher_logits)), axis=-1)  # [...]
    return _select(sq, weights)


def combine(
    terms: Mapping[str, SumCount], alphas: Mapping[str, float]
) -> tuple[Array, dict[str, Array]]:
    """Weighted total loss from ``(sum, count)`` terms.

    loss = Σ alphas[name] * sum / max(count, 1). ``alphas`` must have an entry for
    every term passed (a missing one raises KeyError rather than silently
    counting 0); terms whose alpha is 0 may simply be left out of ``terms``.

    Returns:
      ``(loss, metrics)`` with ``metrics['loss_<name>']`` the normalised term
      and ``metrics['loss']`` the total.
    """
    loss = jnp.zeros((), jnp.float32)
    metrics = {}
    for name, (total, count) in terms.items():
        # max(count, 1): a batch with no selected position contributes 0, not NaN.
        value = _f32(total) / jnp.maximum(_f32(count), 1.0)
        metrics[f"loss_{name}"] = value
        loss = loss + alphas[name] * value
    metrics["loss"] = loss
    return loss, metrics
