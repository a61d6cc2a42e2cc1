"""`vocab_losses` against the loss formulas on full logits, differentiated by JAX."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distil_jax import losses
from distil_jax.vocab_losses import _in_compute_dtype, vocab_losses

B, L, D, V = 3, 8, 16, 40


def _inputs(seed=0):
    rng = np.random.default_rng(seed)
    f = lambda *s: jnp.asarray(rng.normal(size=s), jnp.float32)
    weights = np.ones((B, L), np.int32)
    weights[0, 5:] = 0  # padding
    weights[2, 3:] = 0
    labels = rng.integers(0, V, size=(B, L))
    labels[rng.random((B, L)) < 0.6] = losses.IGNORE_INDEX
    labels[weights == 0] = losses.IGNORE_INDEX
    student = (f(B, L, D), 0.3 * f(V, D), 0.1 * f(V))
    teacher = (f(B, L, D), 0.3 * f(V, D), 0.1 * f(V))
    return student, teacher, jnp.asarray(weights), jnp.asarray(labels)


def _reference_total(student, teacher, weights, labels, alphas, temperature):
    """Σ alpha · sum / max(count, 1) from the `losses` functions on full [B, L, V] logits."""
    (sf, se, sb), (tf, te, tb) = student, teacher
    s_logits = sf @ se.T + sb  # [B, L, V]
    t_logits = tf @ te.T + tb  # [B, L, V]
    terms = {"mlm": losses.masked_lm_loss(s_logits, labels)}
    if alphas.get("ce"):
        terms["ce"] = losses.soft_cross_entropy(s_logits, t_logits, weights, temperature)
    if alphas.get("mse"):
        terms["mse"] = losses.mse_loss(s_logits, t_logits, weights)
    return losses.combine(terms, alphas)[0], terms


ALPHAS = [{"ce": 5.0, "mlm": 2.0}, {"ce": 1.0, "mlm": 0.0, "mse": 0.5}, {"mse": 1.0, "mlm": 0.0}]


@pytest.mark.parametrize("chunk_len", [2, 8])
@pytest.mark.parametrize("alphas", ALPHAS)
def test_terms_and_gradient_match_autodiff_of_full_logits(chunk_len, alphas):
    student, teacher, weights, labels = _inputs()
    temperature = 2.0

    def fused(student_args):
        terms, carrier = vocab_losses(
            *student_args, *teacher, weights, labels,
            alphas=alphas, temperature=temperature, chunk_len=chunk_len,
        )  # fmt: skip
        return losses.combine(terms, alphas)[0] + carrier, (terms, carrier)

    (total, (terms, carrier)), grads = jax.jit(jax.value_and_grad(fused, has_aux=True))(student)
    ref_fn = lambda s: _reference_total(s, teacher, weights, labels, alphas, temperature)
    (ref_total, ref_terms), ref_grads = jax.value_and_grad(ref_fn, has_aux=True)(student)

    assert float(carrier) == 0.0
    np.testing.assert_allclose(total, ref_total, rtol=1e-5)
    assert set(terms) == set(ref_terms)
    for name in terms:
        np.testing.assert_allclose(terms[name][0], ref_terms[name][0], rtol=1e-5)
        assert float(terms[name][1]) == float(ref_terms[name][1])
    for got, want in zip(grads, ref_grads, strict=True):
        scale = float(jnp.max(jnp.abs(want)))
        assert scale > 0
        np.testing.assert_allclose(got, want, atol=1e-5 * scale, rtol=1e-4)


def test_teacher_gets_no_gradient_and_terms_none():
    student, teacher, weights, labels = _inputs(1)
    alphas = {"ce": 5.0, "mlm": 2.0}

    def fused(teacher_args):
        terms, carrier = vocab_losses(
            *student, *teacher_args, weights, labels, alphas=alphas, temperature=2.0, chunk_len=4
        )
        return losses.combine(terms, alphas)[0] + carrier

    grads = jax.grad(fused)(teacher)
    assert all(float(jnp.max(jnp.abs(g))) == 0.0 for g in grads)


def test_bfloat16_projection_stays_close_to_float32():
    student, teacher, weights, labels = _inputs(2)
    alphas = {"ce": 5.0, "mlm": 2.0}

    def fused(student_args, dtype):
        terms, carrier = vocab_losses(
            *student_args, *teacher, weights, labels,
            alphas=alphas, temperature=2.0, chunk_len=4, dtype=dtype,
        )  # fmt: skip
        return losses.combine(terms, alphas)[0] + carrier

    v32, g32 = jax.value_and_grad(fused)(student, jnp.float32)
    v16, g16 = jax.value_and_grad(fused)(student, jnp.bfloat16)
    np.testing.assert_allclose(v16, v32, rtol=2e-2)
    for a, b in zip(g16, g32, strict=True):
        assert a.dtype == b.dtype == jnp.float32  # gradients in the params' dtype
        np.testing.assert_allclose(a, b, atol=3e-2 * float(jnp.max(jnp.abs(b))))


def test_rejects_a_call_without_ce_or_mse():
    student, teacher, weights, labels = _inputs()
    with pytest.raises(ValueError, match="both alphas are 0"):
        vocab_losses(*student, *teacher, weights, labels, alphas={"mlm": 1.0},
                     temperature=2.0, chunk_len=4)  # fmt: skip


def test_float16_gradient_survives_tiny_loss_weights():
    """Tiny alpha / count in float16: the chunk is scaled into range before the matmuls."""
    student, teacher, weights, labels = _inputs(3)
    alphas = {"ce": 1e-4, "mlm": 1e-4}  # derivatives ~1e-8, under float16's smallest normal
    half = tuple(x.astype(jnp.float16) for x in student)

    def fused(student_args, dtype, loss_scale):
        terms, carrier = vocab_losses(
            *student_args, *teacher, weights, labels,
            alphas=alphas, temperature=2.0, chunk_len=4, dtype=dtype,
        )  # fmt: skip
        return loss_scale * (losses.combine(terms, alphas)[0] + carrier)

    want = jax.grad(fused)(student, jnp.float32, 1.0)
    got = jax.grad(fused)(half, jnp.float16, 2.0**15)  # as DynamicScale would differentiate
    for a, b in zip(got, want, strict=True):
        assert a.dtype == jnp.float16
        a = np.asarray(a, np.float32) / 2.0**15
        np.testing.assert_allclose(a, b, atol=2e-2 * float(jnp.max(jnp.abs(b))))
        assert np.count_nonzero(a) >= 0.9 * np.count_nonzero(b)  # not flushed to zero


def test_float16_copy_of_tiny_derivatives_keeps_them():
    """Outside jit (so XLA cannot keep excess precision): the copy the matmuls get."""
    rng = np.random.default_rng(4)
    d_logits = jnp.asarray(rng.normal(size=(2, 4, 50)) * 1e-8, jnp.float32)  # [B, Lc, V]
    assert np.count_nonzero(np.asarray(d_logits.astype(jnp.float16))) < d_logits.size // 2
    low, undo = _in_compute_dtype(d_logits, jnp.float16)
    assert low.dtype == jnp.float16 and 512 <= float(jnp.max(jnp.abs(low))) < 1024
    back = np.asarray(low, np.float32) * float(undo)
    np.testing.assert_allclose(back, d_logits, rtol=1e-3, atol=1e-3 * float(jnp.max(d_logits)))
    same, none = _in_compute_dtype(d_logits, jnp.bfloat16)  # float32's range: no scaling
    assert none is None and same.dtype == jnp.bfloat16
