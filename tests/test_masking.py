"""Dynamic MLM masking (DESIGN.md §1.2)."""

import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distil_jax import masking

PAD, CLS, SEP, MASK, UNK = 0, 1, 2, 3, 4
SPECIALS = (PAD, CLS, SEP, MASK, UNK)
V = 50
LENGTHS = (32, 20, 13, 7)  # real tokens per row, incl. [CLS] and [SEP]
N_DRAWS = 2000


def _batch(lengths=LENGTHS, max_len=32, seed=0):
    rng = np.random.default_rng(seed)
    ids = np.full((len(lengths), max_len), PAD, np.int32)
    attention = np.zeros_like(ids)
    for row, n in enumerate(lengths):
        ids[row, :n] = rng.integers(len(SPECIALS), V, size=n)
        ids[row, 0], ids[row, n - 1] = CLS, SEP
        attention[row, :n] = 1
    ids[0, 5] = UNK  # a real-but-special token, must never be chosen
    return jnp.asarray(ids), jnp.asarray(attention)


def _mask_fn(**kw):
    return functools.partial(masking.mask_tokens, mask_token_id=MASK, vocab_size=V, **kw)


def _many_draws(ids, attention, probs, n_draws=N_DRAWS, **kw):
    """MaskedBatch with a leading [n_draws] axis, one fresh rng per draw."""
    rngs = jax.random.split(jax.random.key(0), n_draws)
    fn = jax.jit(jax.vmap(_mask_fn(**kw), in_axes=(0, None, None, None)))
    return jax.tree.map(np.asarray, fn(rngs, ids, attention, probs))


def test_token_probs_from_counts_and_uniform():
    counts = np.array([5, 0, 1, 10, 100], np.int64)
    probs = masking.token_probs_from_counts(counts, 0.7, special_ids=(0,))
    assert probs.dtype == jnp.float32
    expected = np.maximum(counts, 1).astype(np.float64) ** -0.7
    expected[0] = 0
    np.testing.assert_allclose(probs, expected, rtol=1e-6)
    uniform = masking.uniform_token_probs(6, special_ids=(0, 3))
    np.testing.assert_array_equal(uniform, [0, 1, 1, 0, 1, 1])


def test_exactly_ceil_fraction_chosen_never_pads_or_specials():
    ids, attention = _batch()
    out = _many_draws(ids, attention, masking.uniform_token_probs(V, SPECIALS))
    n_real = sum(LENGTHS)
    chosen_per_draw = out.predict_mask.sum(axis=(1, 2))
    np.testing.assert_array_equal(chosen_per_draw, math.ceil(0.15 * n_real))
    special_or_pad = np.isin(np.asarray(ids), SPECIALS)
    assert not out.predict_mask[:, special_or_pad].any()
    # Every eligible position is chosen sometimes (the draw covers the batch).
    assert out.predict_mask.any(axis=0)[~special_or_pad].all()


@pytest.mark.parametrize("n_real, expected", [(100, 15), (20, 3), (7, 2), (1, 1), (40, 6)])
def test_count_is_exact_ceil_without_float_noise(n_real, expected):
    # 0.15 * 100 is 15.000000000000002 in float64: a float ceil would say 16.
    got = masking._ceil_fraction_of(jnp.int32(n_real), 0.15)
    assert int(got) == expected


def test_labels_and_80_10_10_split():
    ids, attention = _batch()
    out = _many_draws(ids, attention, masking.uniform_token_probs(V, SPECIALS))
    original = np.broadcast_to(np.asarray(ids), out.input_ids.shape)
    chosen = out.predict_mask
    # Labels: original id exactly at chosen positions, -100 everywhere else.
    np.testing.assert_array_equal(out.labels[chosen], original[chosen])
    assert (out.labels[~chosen] == -100).all()
    # Unchosen positions are left untouched.
    np.testing.assert_array_equal(out.input_ids[~chosen], original[~chosen])

    new, old = out.input_ids[chosen], original[chosen]
    frac_mask = np.mean(new == MASK)
    frac_kept = np.mean(new == old)
    frac_other = np.mean((new != MASK) & (new != old))
    # A random id lands on [MASK] or on the original id with chance 1/V each.
    np.testing.assert_allclose(frac_mask, 0.8 + 0.1 / V, atol=0.01)
    np.testing.assert_allclose(frac_kept, 0.1 + 0.1 / V, atol=0.01)
    np.testing.assert_allclose(frac_other, 0.1 * (V - 2) / V, atol=0.01)
    # Random replacements cover the whole vocabulary range, specials included.
    assert new.min() >= 0 and new.max() < V


def test_rare_tokens_are_chosen_more_often_with_count_smoothing():
    # Four token ids, each 8 times in the batch, with very different corpus counts.
    tokens = np.array([10, 11, 12, 13])
    counts = np.ones(V, np.int64)
    counts[tokens] = [1, 10, 100, 1000]
    ids = jnp.asarray(np.tile(tokens, 8).reshape(2, 16), jnp.int32)
    attention = jnp.ones_like(ids)
    probs = masking.token_probs_from_counts(counts, 0.7, SPECIALS)
    out = _many_draws(ids, attention, probs)
    rates = [out.predict_mask[:, np.asarray(ids) == tok].mean() for tok in tokens]
    assert rates[0] > rates[1] > rates[2] > rates[3], rates


def _exact_inclusion_probs(weights, n):
    """P(position i among n draws without replacement, each draw ∝ remaining weights)."""
    incl = np.zeros(len(weights))
    for seq in itertools.permutations(range(len(weights)), n):
        p, left = 1.0, weights.sum()
        for i in seq:
            p *= weights[i] / left
            left -= weights[i]
        incl[list(seq)] += p
    return incl


def test_selection_matches_sequential_weighted_sampling_without_replacement():
    ids = jnp.asarray([[5, 6, 7, 8, 9]], jnp.int32)
    attention = jnp.ones_like(ids)
    probs = jnp.zeros(V).at[jnp.arange(5, 10)].set(jnp.array([8.0, 4.0, 2.0, 1.0, 1.0]))
    # ceil(0.4 * 5) = 2 draws.
    out = _many_draws(ids, attention, probs, n_draws=20000, mlm_mask_prop=0.4)
    empirical = out.predict_mask.mean(axis=0)[0]
    expected = _exact_inclusion_probs(np.array([8.0, 4.0, 2.0, 1.0, 1.0]), 2)
    np.testing.assert_allclose(empirical, expected, atol=0.015)


def test_never_more_choices_than_eligible_positions():
    # 10 real tokens -> n = 2, but only one is not special.
    ids = jnp.asarray([[CLS, UNK, UNK, UNK, 20, UNK, UNK, UNK, UNK, SEP, PAD]], jnp.int32)
    attention = jnp.asarray([[1] * 10 + [0]], jnp.int32)
    out = _many_draws(ids, attention, masking.uniform_token_probs(V, SPECIALS), n_draws=50)
    assert (out.predict_mask.sum(axis=(1, 2)) == 1).all()
    assert out.predict_mask[:, 0, 4].all()


def test_rng_determinism_and_jit():
    ids, attention = _batch()
    probs = masking.uniform_token_probs(V, SPECIALS)
    fn = jax.jit(_mask_fn())
    a = fn(jax.random.key(1), ids, attention, probs)
    b = fn(jax.random.key(1), ids, attention, probs)
    c = fn(jax.random.key(2), ids, attention, probs)
    eager = _mask_fn()(jax.random.key(1), ids, attention, probs)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    for x, y in zip(a, eager, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.predict_mask, c.predict_mask)
    assert a.input_ids.shape == ids.shape and a.input_ids.dtype == ids.dtype
    assert a.labels.dtype == jnp.int32 and a.predict_mask.dtype == jnp.bool_


def test_traced_attention_changes_n_without_recompiling():
    ids, attention = _batch()
    probs = masking.uniform_token_probs(V, SPECIALS)
    fn = jax.jit(_mask_fn())
    shorter = attention.at[0, 16:].set(0)  # 16 fewer real tokens, same shapes
    for att in (attention, shorter):
        out = fn(jax.random.key(3), ids, att, probs)
        assert int(out.predict_mask.sum()) == math.ceil(0.15 * int(att.sum()))
        assert not np.asarray(out.predict_mask)[np.asarray(att) == 0].any()
    assert fn._cache_size() == 1
