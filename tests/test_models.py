"""Our Flax models against transformers' PyTorch models, on the same weights."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from hf_fixtures import bert_teacher, distilbert_student, padded_batch, save_hf

from distil_jax import hf
from distil_jax.models import MaskedLM, ModelConfig, init_params

TOL = 1e-5


def _torch_outputs(model, ids, mask):
    with torch.no_grad():
        out = model(
            input_ids=torch.from_numpy(ids).long(),
            attention_mask=torch.from_numpy(mask).long(),
            output_hidden_states=True,
        )
    return out.logits.numpy(), [h.numpy() for h in out.hidden_states]


def _ours(model_dir, ids, mask, **kw):
    cfg, params = hf.load_pretrained(model_dir)
    model = MaskedLM(cfg, **kw)
    out = model.apply({"params": params}, ids, mask, output_hidden_states=True)
    return cfg, params, model, out


@pytest.mark.parametrize("kind", ["bert", "distilbert-learned", "distilbert-sinusoidal"])
def test_logits_and_hidden_states_match_transformers(tmp_path, kind):
    if kind == "bert":
        torch_model = bert_teacher()
    else:
        torch_model = distilbert_student(sinusoidal_pos_embds=kind.endswith("sinusoidal"))
    save_hf(torch_model, str(tmp_path))
    ids, mask = padded_batch(torch_model.config.vocab_size)
    want_logits, want_hidden = _torch_outputs(torch_model, ids, mask)
    _, _, _, out = _ours(str(tmp_path), ids, mask)
    np.testing.assert_allclose(np.asarray(out.logits), want_logits, atol=TOL, rtol=0)
    np.testing.assert_allclose(np.asarray(out.last_hidden_state), want_hidden[-1], atol=TOL, rtol=0)
    assert len(out.hidden_states) == len(want_hidden)
    for ours, theirs in zip(out.hidden_states, want_hidden, strict=True):
        np.testing.assert_allclose(np.asarray(ours), theirs, atol=TOL, rtol=0)


def test_logits_at_positions_equal_full_logits(tmp_path):
    save_hf(bert_teacher(), str(tmp_path))
    ids, mask = padded_batch(60)
    cfg, params, model, full = _ours(str(tmp_path), ids, mask)
    positions = np.array([[0, 3, 5], [1, 1, 2], [4, 0, 6]], np.int32)  # [B, K]
    picked = model.apply({"params": params}, ids, mask, logits_positions=positions).logits
    want = np.take_along_axis(np.asarray(full.logits), positions[..., None], axis=1)
    assert picked.shape == (3, 3, cfg.vocab_size)
    np.testing.assert_allclose(np.asarray(picked), want, atol=1e-6, rtol=0)


def test_bfloat16_forward_close_to_float32(tmp_path):
    save_hf(bert_teacher(), str(tmp_path))
    ids, mask = padded_batch(60)
    cfg, params, _, ref = _ours(str(tmp_path), ids, mask)
    out = MaskedLM(cfg, dtype=jnp.bfloat16).apply({"params": params}, ids, mask)
    assert out.logits.dtype == jnp.bfloat16
    # bf16 keeps 8 mantissa bits: relative error ~1e-2 per op; we allow 5% of the logit range.
    err = np.max(np.abs(np.asarray(out.logits, np.float32) - np.asarray(ref.logits)))
    scale = np.max(np.abs(np.asarray(ref.logits)))
    assert err < 0.05 * scale, (err, scale)
    agree = np.mean(np.argmax(out.logits, -1) == np.argmax(ref.logits, -1))
    assert agree > 0.9


def test_dropout_changes_output_only_when_not_deterministic():
    cfg = ModelConfig("distilbert", 50, 16, 2, 2, 32, max_position_embeddings=16)
    model = MaskedLM(cfg)
    params = nn.unbox(init_params(model, jax.random.key(0)))
    ids = jnp.ones((2, 6), jnp.int32)
    run = lambda det, seed: (
        model.apply(
            {"params": params},
            ids,
            jnp.ones_like(ids),
            deterministic=det,
            rngs={"dropout": jax.random.key(seed)},
        ).logits
    )
    np.testing.assert_array_equal(run(True, 0), run(True, 1))
    assert not np.allclose(run(False, 0), run(False, 1))


def test_remat_gives_the_same_gradients():
    cfg = ModelConfig("bert", 50, 16, 2, 2, 32, max_position_embeddings=16, type_vocab_size=2)
    params = nn.unbox(init_params(MaskedLM(cfg), jax.random.key(0)))
    ids = jnp.arange(12, dtype=jnp.int32).reshape(2, 6) + 5

    def grads(remat):
        model = MaskedLM(cfg, remat=remat)
        loss = lambda p: jnp.mean(model.apply({"params": p}, ids, jnp.ones_like(ids)).logits ** 2)
        return jax.grad(loss)(params)

    for a, b in zip(jax.tree.leaves(grads(False)), jax.tree.leaves(grads(True)), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_parameters_carry_logical_axis_names():
    cfg = ModelConfig("bert", 50, 16, 2, 2, 32, type_vocab_size=2)
    boxed = init_params(MaskedLM(cfg), jax.random.key(0))
    names = {}
    jax.tree_util.tree_map_with_path(
        lambda path, x: names.setdefault(jax.tree_util.keystr(path), x.names),
        boxed,
        is_leaf=lambda x: hasattr(x, "names"),
    )
    assert all(len(v) >= 1 for v in names.values())
    assert names["['embeddings']['word_embeddings']['embedding']"] == ("vocab", "embed")
    assert names["['layer_0']['ffn']['intermediate']['kernel']"] == ("embed", "mlp")
    assert names["['layer_1']['attention']['query']['kernel']"] == ("embed", "heads")
