"""Dynamic MLM masking on device (DESIGN.md §1.2), jit-able with static shapes.

The reference draws n = ceil(0.15 * real tokens) positions with
``torch.multinomial(probs, n, replacement=False)``. Here n depends on the data,
so it is a traced value: we give every position a Gumbel-perturbed key
log p + G, rank all positions by key, and choose those with rank < n. The
top-n of Gumbel-perturbed log-weights is distributed exactly like n sequential
weighted draws without replacement, and needs no data-dependent shapes.
"""

import fractions
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

IGNORE_INDEX = -100


class MaskedBatch(NamedTuple):
    """Result of :func:`mask_tokens`; all fields ``[B, L]``."""

    input_ids: Array  # masked / replaced ids fed to both models
    labels: Array  # original id where chosen, -100 elsewhere
    predict_mask: Array  # bool, True where chosen


def token_probs_from_counts(
    counts: Array | np.ndarray, smoothing: float = 0.7, special_ids: Sequence[int] = ()
) -> Array:
    """Per-token selection weight max(count, 1) ** -smoothing, specials 0.

    Rarer tokens get larger weights, so frequent tokens ("the", ",") are masked
    less often than their frequency alone would imply.

    Args:
      counts: ``[V]`` integer corpus counts.
      smoothing: exponent (0.7 in the reference).
      special_ids: ids that must never be chosen (pad, cls, sep, mask, unk).

    Returns:
      float32 ``[V]``.
    """
    counts = jnp.asarray(counts)
    probs = jnp.maximum(counts, 1).astype(jnp.float32) ** -smoothing  # [V]
    return probs.at[jnp.asarray(list(special_ids), jnp.int32)].set(0.0)


def uniform_token_probs(vocab_size: int, special_ids: Sequence[int] = ()) -> Array:
    """Equal weight for every non-special token: the default before counts exist."""
    probs = jnp.ones((vocab_size,), jnp.float32)  # [V]
    return probs.at[jnp.asarray(list(special_ids), jnp.int32)].set(0.0)


def _ceil_fraction_of(count: Array, proportion: float) -> Array:
    """ceil(proportion * count) in exact int32 arithmetic.

    Float arithmetic gets the boundary cases wrong: 0.15 * 100 is 15.000000000000002
    in float64 and 15.000001 in float32, so a float ceil gives 16. Treating the
    proportion as the fraction it was meant to be (0.15 -> 3/20) gives 15.
    """
    frac = fractions.Fraction(proportion).limit_denominator(10_000)
    num, den = frac.numerator, frac.denominator
    # Split count = q * den + r so no intermediate product can overflow int32.
    q, r = count // den, count % den
    return q * num + (r * num + den - 1) // den


def _choose_positions(rng: Array, weights: Array, n: Array) -> Array:
    """Bool mask of n positions drawn without replacement ∝ ``weights`` (flat ``[N]``)."""
    gumbel = jax.random.gumbel(rng, weights.shape, jnp.float32)  # [N]
    # Zero-weight positions get key -inf, so they rank last and, with n capped
    # at the number of nonzero weights, are never chosen.
    keys = jnp.where(weights > 0, jnp.log(weights) + gumbel, -jnp.inf)  # [N]
    order = jnp.argsort(-keys)  # [N] position of the r-th largest key
    ranks = jnp.zeros_like(order).at[order].set(jnp.arange(order.shape[0]))  # [N]
    return ranks < n


def mask_tokens(
    rng: Array,
    input_ids: Array,
    attention_mask: Array,
    token_probs: Array,
    *,
    mask_token_id: int,
    vocab_size: int,
    mlm_mask_prop: float = 0.15,
    word_mask: float = 0.8,
    word_keep: float = 0.1,
    word_rand: float = 0.1,
) -> MaskedBatch:
    """Chooses ~``mlm_mask_prop`` of the real tokens and corrupts them BERT-style.

    Over the flattened batch, n = ceil(mlm_mask_prop * real tokens) positions are
    drawn without replacement with probability ∝ token_probs[id] (pads and
    zero-weight ids never). Each chosen position independently becomes
    ``mask_token_id`` (word_mask), keeps its id (word_keep) or becomes a uniform
    random id in [0, vocab_size) (word_rand).

    Args:
      rng: PRNG key (e.g. ``fold_in(rng, step)``).
      input_ids: ``[B, L]`` int token ids.
      attention_mask: ``[B, L]``, nonzero at real tokens.
      token_probs: ``[V]`` float selection weights.

    Returns:
      :class:`MaskedBatch`.
    """
    if not 0.0 < mlm_mask_prop <= 1.0:
        raise ValueError(f"mlm_mask_prop must be in (0, 1], got {mlm_mask_prop}")
    split_probs = np.array([word_mask, word_keep, word_rand], np.float64)
    if np.any(split_probs < 0) or split_probs.sum() <= 0:
        raise ValueError(f"word_mask/keep/rand must be >= 0, not all 0: {split_probs}")
    rng_choose, rng_split, rng_rand = jax.random.split(rng, 3)

    real = attention_mask.astype(bool)  # [B, L]
    weights = jnp.where(real, token_probs.astype(jnp.float32)[input_ids], 0.0)  # [B, L]
    flat_weights = weights.reshape(-1)  # [B*L]
    n = _ceil_fraction_of(jnp.sum(real, dtype=jnp.int32), mlm_mask_prop)
    # Guard: without replacement there can be no more picks than candidates.
    n = jnp.minimum(n, jnp.sum(flat_weights > 0, dtype=jnp.int32))
    chosen = _choose_positions(rng_choose, flat_weights, n).reshape(input_ids.shape)  # [B, L]

    # 0 = [MASK], 1 = keep, 2 = random id; the categorical normalises the split
    # the way torch.multinomial does in the reference.
    log_split = jnp.log(jnp.asarray(split_probs / split_probs.sum(), jnp.float32))  # [3]
    action = jax.random.categorical(rng_split, log_split, shape=input_ids.shape)  # [B, L]
    random_ids = jax.random.randint(rng_rand, input_ids.shape, 0, vocab_size, input_ids.dtype)
    corrupted = jnp.select(
        [action == 0, action == 1],
        [jnp.full_like(input_ids, mask_token_id), input_ids],
        random_ids,
    )  # [B, L]

    return MaskedBatch(
        input_ids=jnp.where(chosen, corrupted, input_ids),
        labels=jnp.where(chosen, input_ids, IGNORE_INDEX).astype(jnp.int32),
        predict_mask=chosen,
    )
