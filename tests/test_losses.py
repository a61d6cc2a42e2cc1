"""Loss terms against independent torch references (DESIGN.md §1.1)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from distil_jax import losses

B, L, V, D = 3, 7, 11, 16
T = 2.0


@pytest.fixture(scope="module")
def batch():
    """Logits/hiddens with padding, plus the two position selections of the reference."""
    rng = np.random.default_rng(0)
    s_logits = rng.normal(size=(B, L, V)).astype(np.float32) * 3
    t_logits = rng.normal(size=(B, L, V)).astype(np.float32) * 3
    s_hidden = rng.normal(size=(B, L, D)).astype(np.float32)
    t_hidden = rng.normal(size=(B, L, D)).astype(np.float32)
    attention = np.ones((B, L), np.int32)
    attention[1, 4:] = 0  # padded sequences
    attention[2, 2:] = 0
    # Garbage (but finite) values at pads must not leak into any result.
    for arr in (s_logits, t_logits, s_hidden, t_hidden):
        arr[attention == 0] = 1e4
    labels = np.full((B, L), -100, np.int64)
    masked = np.zeros((B, L), bool)
    for b, pos in [(0, 1), (0, 5), (1, 2), (2, 0)]:
        masked[b, pos] = True
        labels[b, pos] = rng.integers(V)
    return dict(
        s_logits=s_logits,
        t_logits=t_logits,
        s_hidden=s_hidden,
        t_hidden=t_hidden,
        attention=attention,
        masked=masked,
        labels=labels,
    )


def _normalised(pair):
    total, count = pair
    assert total.dtype == jnp.float32 and count.dtype == jnp.float32
    return float(total) / float(count)


def _weights(batch, selection):
    return batch["attention"] if selection == "non_pad" else batch["masked"].astype(np.int32)


@pytest.mark.parametrize("selection", ["non_pad", "masked"])
def test_soft_cross_entropy_matches_torch_kldiv_batchmean(batch, selection):
    w = _weights(batch, selection)
    rows = w.astype(bool)
    s = torch.from_numpy(batch["s_logits"][rows])  # [N, V]
    t = torch.from_numpy(batch["t_logits"][rows])
    expected = torch.nn.KLDivLoss(reduction="batchmean")(
        torch.log_softmax(s / T, -1), torch.softmax(t / T, -1)
    ) * (T**2)
    pair = losses.soft_cross_entropy(batch["s_logits"], batch["t_logits"], w, T)
    assert float(pair[1]) == rows.sum()
    np.testing.assert_allclose(_normalised(pair), expected.item(), rtol=1e-5, atol=1e-5)


def test_masked_lm_loss_matches_torch_cross_entropy(batch):
    expected = torch.nn.CrossEntropyLoss(ignore_index=-100)(
        torch.from_numpy(batch["s_logits"]).reshape(-1, V),
        torch.from_numpy(batch["labels"]).reshape(-1),
    )
    pair = losses.masked_lm_loss(batch["s_logits"], jnp.asarray(batch["labels"], jnp.int32))
    assert float(pair[1]) == batch["masked"].sum()
    np.testing.assert_allclose(_normalised(pair), expected.item(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("selection", ["non_pad", "masked"])
def test_cosine_loss_matches_torch_cosine_embedding(batch, selection):
    w = _weights(batch, selection)
    rows = w.astype(bool)
    s = torch.from_numpy(batch["s_hidden"][rows])  # [N, D]
    t = torch.from_numpy(batch["t_hidden"][rows])
    expected = torch.nn.CosineEmbeddingLoss()(s, t, torch.ones(s.shape[0]))
    pair = losses.cosine_loss(batch["s_hidden"], batch["t_hidden"], w)
    np.testing.assert_allclose(_normalised(pair), expected.item(), rtol=1e-5, atol=1e-5)


def test_cosine_loss_epsilon_matches_torch_for_tiny_and_zero_vectors():
    # torch adds 1e-12 to each squared norm; this differs visibly from
    # F.cosine_similarity's eps for a vector of norm 1e-6.
    s = np.array([[1e-6, 0, 0], [0, 0, 0], [1, 2, 3]], np.float32)
    t = np.array([[1, 0, 0], [0, 0, 0], [0, 0, 0]], np.float32)
    expected = torch.nn.CosineEmbeddingLoss(reduction="none")(
        torch.from_numpy(s), torch.from_numpy(t), torch.ones(3)
    )
    total, _ = losses.cosine_loss(s, t, np.ones(3))
    np.testing.assert_allclose(float(total), expected.sum().item(), rtol=1e-5)
    assert not np.isnan(float(total))


@pytest.mark.parametrize("selection", ["non_pad", "masked"])
def test_mse_loss_matches_torch_sum_over_rows(batch, selection):
    w = _weights(batch, selection)
    rows = w.astype(bool)
    s = torch.from_numpy(batch["s_logits"][rows])
    t = torch.from_numpy(batch["t_logits"][rows])
    expected = torch.nn.MSELoss(reduction="sum")(s, t) / s.shape[0]
    pair = losses.mse_loss(batch["s_logits"], batch["t_logits"], w)
    np.testing.assert_allclose(_normalised(pair), expected.item(), rtol=1e-5, atol=1e-5)


def test_unselected_positions_contribute_exactly_zero_and_no_nan(batch):
    w = batch["attention"]
    s, t = batch["s_logits"].copy(), batch["t_logits"].copy()
    s[w == 0] = np.nan  # even NaN garbage at pads stays out of the forward value
    for fn, args in [
        (losses.soft_cross_entropy, (s, t, w, T)),
        (losses.mse_loss, (s, t, w)),
    ]:
        clean = fn(batch["s_logits"], batch["t_logits"], *args[2:])
        dirty = fn(*args)
        assert float(dirty[0]) == float(clean[0])
    # Gradients w.r.t. pad positions are exactly 0 for finite garbage.
    grad = jax.grad(lambda x: losses.soft_cross_entropy(x, batch["t_logits"], w, T)[0])(
        batch["s_logits"]
    )
    assert np.all(np.isfinite(grad)) and np.all(np.asarray(grad)[w == 0] == 0)


def test_all_weights_zero_gives_zero_sum_and_count():
    x = np.ones((2, 3, V), np.float32)
    total, count = losses.soft_cross_entropy(x, x * 2, np.zeros((2, 3)), T)
    assert float(total) == 0.0 and float(count) == 0.0
    loss, metrics = losses.combine({"ce": (total, count)}, {"ce": 5.0})
    assert float(loss) == 0.0 and float(metrics["loss_ce"]) == 0.0


def test_bf16_inputs_give_float32_results_close_to_fp32(batch):
    w = batch["attention"]
    bf = {k: jnp.asarray(batch[k], jnp.bfloat16) for k in batch if k[:2] in ("s_", "t_")}
    # The reference is the fp32 loss of the bf16-rounded inputs, so only the
    # precision of the maths (not of the inputs) is being tested.
    rounded = {k: np.asarray(v.astype(jnp.float32)) for k, v in bf.items()}
    cases = [
        (losses.soft_cross_entropy, ("s_logits", "t_logits"), (w, T)),
        (losses.cosine_loss, ("s_hidden", "t_hidden"), (w,)),
        (losses.mse_loss, ("s_logits", "t_logits"), (w,)),
    ]
    for fn, (a, b), rest in cases:
        got = fn(bf[a], bf[b], *rest)
        want = fn(rounded[a], rounded[b], *rest)
        assert got[0].dtype == jnp.float32
        np.testing.assert_allclose(float(got[0]), float(want[0]), rtol=1e-5)
        # And still close to the unrounded fp32 loss.
        full = fn(batch[a], batch[b], *rest)
        np.testing.assert_allclose(float(got[0]), float(full[0]), rtol=5e-2)
    labels = jnp.asarray(batch["labels"], jnp.int32)
    got = losses.masked_lm_loss(bf["s_logits"], labels)
    want = losses.masked_lm_loss(rounded["s_logits"], labels)
    assert got[0].dtype == jnp.float32
    np.testing.assert_allclose(float(got[0]), float(want[0]), rtol=1e-5)


def test_combine_weights_normalised_terms():
    terms = {
        "ce": (jnp.float32(10.0), jnp.float32(4.0)),
        "mlm": (jnp.float32(3.0), jnp.float32(2.0)),
        "cos": (jnp.float32(1.0), jnp.float32(0.0)),  # empty: divided by max(0, 1)
    }
    loss, metrics = losses.combine(terms, {"ce": 5.0, "mlm": 2.0, "cos": 1.0, "mse": 0.0})
    np.testing.assert_allclose(float(loss), 5.0 * 2.5 + 2.0 * 1.5 + 1.0 * 1.0, rtol=1e-6)
    assert set(metrics) == {"loss_ce", "loss_mlm", "loss_cos", "loss"}
    np.testing.assert_allclose(float(metrics["loss_ce"]), 2.5)
    np.testing.assert_allclose(float(metrics["loss"]), float(loss))


def test_losses_jit():
    x = jnp.ones((2, 3, V))
    w = jnp.ones((2, 3))
    out = jax.jit(losses.soft_cross_entropy, static_argnums=3)(x, x, w, T)
    assert float(out[0]) == 0.0 and float(out[1]) == 6.0
