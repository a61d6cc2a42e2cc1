"""Conversion both ways, student initialisation and the convert CLI."""

import json
import os

import jax
import numpy as np
import pytest
import torch
from hf_fixtures import bert_teacher, distilbert_student, padded_batch, save_hf, write_tokenizer
from transformers import AutoModelForMaskedLM, AutoTokenizer, DistilBertForMaskedLM

from distil_jax import convert, hf
from distil_jax.models import MaskedLM


def _flat(tree):
    return {
        jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_leaves_with_path(tree)
    }


@pytest.mark.parametrize("sinusoidal", [False, True])
def test_flax_to_hf_to_flax_is_bit_exact_and_loads_in_transformers(tmp_path, sinusoidal):
    src = save_hf(distilbert_student(sinusoidal_pos_embds=sinusoidal), str(tmp_path / "src"))
    cfg, params = hf.load_pretrained(src)
    out = hf.save_pretrained(cfg, params, str(tmp_path / "out"), tokenizer_dir=src)

    _, back = hf.load_pretrained(out)
    a, b = _flat(params), _flat(back)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)

    model, info = AutoModelForMaskedLM.from_pretrained(out, output_loading_info=True)
    assert isinstance(model, DistilBertForMaskedLM)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert len(AutoTokenizer.from_pretrained(out)) == cfg.vocab_size

    ids, mask = padded_batch(cfg.vocab_size)
    with torch.no_grad():
        want = model.eval()(
            input_ids=torch.from_numpy(ids).long(), attention_mask=torch.from_numpy(mask).long()
        ).logits.numpy()
    ours = MaskedLM(cfg).apply({"params": back}, ids, mask).logits
    np.testing.assert_allclose(np.asarray(ours), want, atol=1e-5, rtol=0)


def test_bert_export_loads_without_missing_keys(tmp_path):
    src = save_hf(bert_teacher(), str(tmp_path / "src"))
    cfg, params = hf.load_pretrained(src)
    out = hf.save_pretrained(cfg, params, str(tmp_path / "out"))
    _, info = AutoModelForMaskedLM.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info


def test_student_layer_map():
    assert hf.student_layer_map(12, 6) == [0, 2, 4, 7, 9, 11]
    assert hf.student_layer_map(4, 2) == [0, 3]
    assert hf.student_layer_map(24, 6)[0] == 0 and hf.student_layer_map(24, 6)[-1] == 23
    assert hf.student_layer_map(5, 1) == [0]


def test_init_student_copies_exactly_the_mapped_tensors(tmp_path):
    src = save_hf(bert_teacher(), str(tmp_path / "teacher"))
    tcfg, tparams = hf.load_pretrained(src)
    layers = [0, 3]
    scfg, sparams, _ = hf.init_student(tcfg, tparams, layers)
    assert scfg.arch == "distilbert" and scfg.num_layers == 2

    # Check against the HF names of DESIGN.md §1.5, independently of our table.
    teacher_sd = {k: v.numpy() for k, v in bert_teacher().state_dict().items()}
    student_sd = hf.flax_to_hf(scfg, sparams)
    expected = {
        "distilbert.embeddings.word_embeddings.weight": "bert.embeddings.word_embeddings.weight",
        "distilbert.embeddings.position_embeddings.weight": "bert.embeddings.position_embeddings.weight",  # noqa: E501
        "distilbert.embeddings.LayerNorm.weight": "bert.embeddings.LayerNorm.weight",
        "distilbert.embeddings.LayerNorm.bias": "bert.embeddings.LayerNorm.bias",
        "vocab_transform.weight": "cls.predictions.transform.dense.weight",
        "vocab_transform.bias": "cls.predictions.transform.dense.bias",
        "vocab_layer_norm.weight": "cls.predictions.transform.LayerNorm.weight",
        "vocab_layer_norm.bias": "cls.predictions.transform.LayerNorm.bias",
        "vocab_projector.bias": "cls.predictions.bias",
    }
    sub = {
        "attention.q_lin": "attention.self.query",
        "attention.k_lin": "attention.self.key",
        "attention.v_lin": "attention.self.value",
        "attention.out_lin": "attention.output.dense",
        "sa_layer_norm": "attention.output.LayerNorm",
        "ffn.lin1": "intermediate.dense",
        "ffn.lin2": "output.dense",
        "output_layer_norm": "output.LayerNorm",
    }
    for i, j in enumerate(layers):
        for s, t in sub.items():
            for leaf in ("weight", "bias"):
                expected[f"distilbert.transformer.layer.{i}.{s}.{leaf}"] = (
                    f"bert.encoder.layer.{j}.{t}.{leaf}"
                )
    assert set(student_sd) == set(expected)
    for skey, tkey in expected.items():
        np.testing.assert_array_equal(student_sd[skey], teacher_sd[tkey], err_msg=skey)
    # The student owns its copies (no aliasing of the teacher's arrays).
    assert not np.shares_memory(
        sparams["layer_0"]["ffn"]["output"]["kernel"], tparams["layer_0"]["ffn"]["output"]["kernel"]
    )


@pytest.mark.parametrize("layers", [[0, 9], [2, 1], [1, 1], []])
def test_bad_layer_maps_are_rejected(tmp_path, layers):
    src = save_hf(bert_teacher(), str(tmp_path / "teacher"))
    tcfg, tparams = hf.load_pretrained(src)
    with pytest.raises(ValueError, match="layer map"):
        hf.init_student(tcfg, tparams, layers)


def test_cli_init_student_end_to_end(tmp_path, capsys):
    teacher = save_hf(bert_teacher(), str(tmp_path / "teacher"))
    out = str(tmp_path / "student")
    assert (
        convert.main(["init-student", "--teacher", teacher, "--out", out, "--layers", "0,3"]) == 0
    )
    model, info = AutoModelForMaskedLM.from_pretrained(out, output_loading_info=True)
    assert isinstance(model, DistilBertForMaskedLM) and model.config.n_layers == 2
    assert not info["missing_keys"] and not info["unexpected_keys"]
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.convert_ids_to_tokens(tok("the cat")["input_ids"]) == [
        "[CLS]",
        "the",
        "cat",
        "[SEP]",
    ]
    teacher_sd = bert_teacher().state_dict()
    np.testing.assert_array_equal(
        model.state_dict()["distilbert.transformer.layer.1.ffn.lin1.weight"].numpy(),
        teacher_sd["bert.encoder.layer.3.intermediate.dense.weight"].numpy(),
    )
    # Bad input: a clear message and a non-zero exit, not a traceback.
    assert convert.main(["init-student", "--teacher", str(tmp_path / "nope"), "--out", out]) == 2
    assert "not a model directory" in capsys.readouterr().err


def test_missing_files_and_bad_configs_name_the_problem(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        hf.load_pretrained(str(empty))
    (empty / "config.json").write_text(json.dumps({"model_type": "gpt2", "vocab_size": 5}))
    with pytest.raises(ValueError, match="neither 'bert' nor 'distilbert'"):
        hf.load_pretrained(str(empty))
    (empty / "config.json").write_text(json.dumps({"model_type": "bert", "vocab_size": 5}))
    with pytest.raises(ValueError, match="missing field 'hidden_size'"):
        hf.load_pretrained(str(empty))

    src = save_hf(bert_teacher(), str(tmp_path / "weights_only"))
    os.remove(os.path.join(src, "model.safetensors"))
    with pytest.raises(FileNotFoundError, match="model.safetensors or pytorch_model.bin"):
        hf.load_pretrained(src)


def test_checkpoint_shapes_disagreeing_with_config(tmp_path):
    src = save_hf(bert_teacher(), str(tmp_path / "teacher"))
    with open(os.path.join(src, "config.json")) as f:
        cfg = json.load(f)
    cfg["intermediate_size"] = 40
    with open(os.path.join(src, "config.json"), "w") as f:
        json.dump(cfg, f)
    with pytest.raises(ValueError, match="intermediate.dense.weight.*shape"):
        hf.load_pretrained(src)


def test_pytorch_bin_and_legacy_layernorm_names(tmp_path):
    model = bert_teacher()
    sd = {
        k.replace("LayerNorm.weight", "LayerNorm.gamma").replace(
            "LayerNorm.bias", "LayerNorm.beta"
        ): v
        for k, v in model.state_dict().items()
    }
    d = tmp_path / "legacy"
    d.mkdir()
    model.config.save_pretrained(str(d))
    torch.save(sd, d / "pytorch_model.bin")
    write_tokenizer(str(d))
    _, params = hf.load_pretrained(str(d))
    np.testing.assert_array_equal(
        params["embeddings"]["norm"]["scale"],
        model.state_dict()["bert.embeddings.LayerNorm.weight"].numpy(),
    )
    (d / "pytorch_model.bin").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        hf.load_pretrained(str(d))
