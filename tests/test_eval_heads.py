"""Task heads against transformers' PyTorch heads, import from MLM checkpoints, export."""

import jax
import numpy as np
import pytest
import torch
from eval_fixtures import torch_task_model
from hf_fixtures import bert_teacher, distilbert_student, padded_batch, save_hf
from transformers import AutoModelForQuestionAnswering, AutoModelForSequenceClassification

from distil_jax import hf
from distil_jax.eval import hf_heads
from distil_jax.eval.heads import make_task_model

TOL = 1e-5


def _torch_logits(model, ids, mask, token_types):
    kw = {
        "input_ids": torch.from_numpy(ids).long(),
        "attention_mask": torch.from_numpy(mask).long(),
    }
    if model.config.model_type == "bert":
        kw["token_type_ids"] = torch.from_numpy(token_types).long()
    with torch.no_grad():
        out = model(**kw)
    if hasattr(out, "start_logits"):
        return out.start_logits.numpy(), out.end_logits.numpy()
    return out.logits.numpy()


def _ours(loaded, params, ids, mask, token_types):
    model = make_task_model(loaded.cfg, loaded.head)
    # One quick compile (XLA backend optimisations off) instead of one per operation.
    fast = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
    out = jax.jit(model.apply, compiler_options=fast)({"params": params}, ids, mask, token_types)
    return tuple(np.asarray(o) for o in out) if isinstance(out, tuple) else np.asarray(out)


def _inputs(vocab_size):
    ids, mask = padded_batch(vocab_size)
    token_types = np.where(np.arange(ids.shape[1])[None] >= 5, 1, 0) * mask  # a sentence pair
    return ids, mask, token_types.astype(np.int32)


@pytest.mark.parametrize("arch", ["bert", "distilbert"])
@pytest.mark.parametrize("kind,num_labels", [("classification", 3), ("regression", 1), ("span", 2)])
def test_head_matches_transformers_and_exports_loadable(tmp_path, arch, kind, num_labels):
    theirs = torch_task_model(arch, kind, num_labels)
    save_hf(theirs, str(tmp_path / "in"))
    ids, mask, token_types = _inputs(theirs.config.vocab_size)
    want = _torch_logits(theirs, ids, mask, token_types)

    loaded = hf_heads.load_task_model(str(tmp_path / "in"), kind, num_labels)
    assert loaded.fresh == []  # a fine-tuned checkpoint brings its head
    got = _ours(loaded, loaded.params, ids, mask, token_types)
    np.testing.assert_allclose(got, want, atol=TOL, rtol=0)

    # Export and load back with transformers: nothing missing, nothing unexpected.
    out = hf_heads.save_task_model(loaded.cfg, loaded.head, loaded.params, str(tmp_path / "out"))
    auto = AutoModelForQuestionAnswering if kind == "span" else AutoModelForSequenceClassification
    back, info = auto.from_pretrained(out, output_loading_info=True)
    assert type(back) is type(theirs)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert not info["mismatched_keys"], info
    if kind != "span":
        assert back.config.num_labels == num_labels
        assert back.config.problem_type == theirs.config.problem_type
    np.testing.assert_allclose(_torch_logits(back.eval(), ids, mask, token_types), want, atol=TOL)


@pytest.mark.parametrize("arch", ["bert", "distilbert"])
def test_mlm_checkpoint_gives_encoder_and_fresh_head_like_transformers(tmp_path, arch):
    mlm = bert_teacher() if arch == "bert" else distilbert_student()
    model_dir = save_hf(mlm, str(tmp_path / "mlm"))
    loaded = hf_heads.load_task_model(model_dir, "classification", 2)

    # The encoder is the checkpoint's, tensor for tensor.
    _, mlm_params = hf.load_pretrained(model_dir)
    ours, mlm_flat = hf._flatten(loaded.params), hf._flatten(mlm_params)
    for path, value in mlm_flat.items():
        if not path.startswith(("head_", "pooler")):
            np.testing.assert_array_equal(ours[path], value)

    # The fresh tensors are exactly those transformers reports as newly initialised.
    _, info = AutoModelForSequenceClassification.from_pretrained(
        model_dir, num_labels=2, output_loading_info=True
    )
    names = hf_heads.name_map(loaded.cfg, loaded.head)
    assert sorted(names[p][0] for p in loaded.fresh) == sorted(info["missing_keys"])

    # Each seed draws its own head, N(0, initializer_range) kernels and zero biases.
    def head(seed):
        return hf._flatten(hf_heads.draw_fresh(loaded, seed))

    kernel = head(0)["classifier/kernel"]
    assert not np.array_equal(kernel, head(1)["classifier/kernel"])
    np.testing.assert_array_equal(kernel, head(0)["classifier/kernel"])  # reproducible
    assert np.all(head(0)["classifier/bias"] == 0)
    assert 0.005 < kernel.std() < 0.05


def test_checkpoint_with_other_label_count_is_refused(tmp_path):
    save_hf(torch_task_model("distilbert", "classification", 3), str(tmp_path))
    with pytest.raises(ValueError, match="another number of labels"):
        hf_heads.load_task_model(str(tmp_path), "classification", 2)


def test_checkpoint_missing_an_encoder_tensor_is_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    save_hf(torch_task_model("bert", "classification", 2), str(tmp_path))
    path = str(tmp_path / "model.safetensors")
    state = load_file(path)
    del state["bert.encoder.layer.1.attention.self.query.weight"]
    save_file(state, path, metadata={"format": "pt"})
    with pytest.raises(ValueError, match="layer.1.attention.self.query.weight.*missing"):
        hf_heads.load_task_model(str(tmp_path), "classification", 2)
