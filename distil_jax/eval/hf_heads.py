"""Task models <-> transformers directories: the head rows of the HF name table.

The encoder rows are `distil_jax.hf`'s tables (minus the MLM head); the head
rows add `bert.pooler.dense`, `pre_classifier`, `classifier` and `qa_outputs`.

Loading accepts any BERT/DistilBERT checkpoint: a *ForMaskedLM one (an
exported student, bert-base-uncased) gives the encoder and a freshly drawn
head, as `AutoModelForSequenceClassification.from_pretrained` does; a
fine-tuned one gives its head too. Saving writes a directory that
transformers' task class loads with no missing or unexpected tensors.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import re

import jax
import numpy as np

from distil_jax import hf
from distil_jax.eval.heads import HeadConfig, abstract_boxed_params, make_task_model
from distil_jax.models import ModelConfig

_MLM_HEAD = ("head_transform", "head_norm", "head_bias")
_HEAD_ROWS = {
    "bert": [
        ("pooler", "bert.pooler.dense", "dense"),
        ("classifier", "classifier", "dense"),
        ("qa_outputs", "qa_outputs", "dense"),
    ],
    "distilbert": [
        ("pre_classifier", "pre_classifier", "dense"),
        ("classifier", "classifier", "dense"),
        ("qa_outputs", "qa_outputs", "dense"),
    ],
}
HEAD_MODULES = {row[0] for rows in _HEAD_ROWS.values() for row in rows}
# Tensors a checkpoint may hold that a task model never uses: the MLM head, buffers,
# and a pooler the DistilBERT / span models have no place for.
_UNUSED_OK = re.compile(
    r"cls\..*|vocab_(transform|layer_norm|projector)\..*|.*position_ids|.*token_type_ids"
    r"|bert\.pooler\..*"
)
ARCHITECTURES = {
    ("bert", "classification"): "BertForSequenceClassification",
    ("bert", "regression"): "BertForSequenceClassification",
    ("bert", "span"): "BertForQuestionAnswering",
    ("distilbert", "classification"): "DistilBertForSequenceClassification",
    ("distilbert", "regression"): "DistilBertForSequenceClassification",
    ("distilbert", "span"): "DistilBertForQuestionAnswering",
}


def table(arch: str) -> list[tuple[str, str, str]]:
    encoder = [r for r in hf._TABLES[arch] if r[0] not in _MLM_HEAD and r[0] != "pooler"]
    return encoder + _HEAD_ROWS[arch]


@functools.lru_cache(maxsize=32)
def abstract_params(cfg: ModelConfig, head: HeadConfig) -> dict[str, jax.ShapeDtypeStruct]:
    """Flat {our path: shape struct} of the task model built from (cfg, head).

    Cached: tracing the model is the slow part of loading and exporting a small one."""
    boxed = abstract_boxed_params(make_task_model(cfg, head))
    unboxed = jax.tree_util.tree_map(
        lambda x: getattr(x, "value", x), boxed, is_leaf=lambda x: hasattr(x, "names")
    )
    return hf._flatten(unboxed)


def name_map(cfg: ModelConfig, head: HeadConfig) -> dict[str, tuple[str, bool]]:
    """Our leaf path -> (HF tensor name, transposed?) for every parameter of the task model."""
    expected = abstract_params(cfg, head)
    mapping = {}
    for ours, theirs, kind in table(cfg.arch):
        layers = range(cfg.num_layers) if "{i}" in ours else [None]
        for i in layers:
            o, t = ours.replace("{i}", str(i)), theirs.replace("{i}", str(i))
            for our_leaf, their_leaf, transposed in hf._KINDS[kind]:
                path = f"{o}/{our_leaf}"
                if path in expected:
                    mapping[path] = (f"{t}.{their_leaf}", transposed)
    unmapped = set(expected) - set(mapping)
    assert not unmapped, f"head name table misses {sorted(unmapped)}"
    return mapping


# ---------------------------------------------------------------------------- head config


def read_hf_config(model_dir: str) -> dict:
    path = os.path.join(model_dir, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"no config.json in {model_dir}: expected a Hugging Face model dir")
    with open(path) as f:
        return json.load(f)


def head_config(cfg: ModelConfig, hf_config: dict, kind: str, num_labels: int) -> HeadConfig:
    """The head's dropout as transformers takes it from config.json."""
    if kind == "span":
        dropout = hf_config.get("qa_dropout", 0.1) if cfg.arch == "distilbert" else 0.0
    elif cfg.arch == "distilbert":
        dropout = hf_config.get("seq_classif_dropout", 0.2)
    else:
        dropout = hf_config.get("classifier_dropout")
        dropout = cfg.hidden_dropout if dropout is None else dropout
    return HeadConfig(kind, num_labels, float(dropout))


# ---------------------------------------------------------------------------- loading


@dataclasses.dataclass
class LoadedTaskModel:
    cfg: ModelConfig  # with_pooler set as the head needs
    head: HeadConfig
    params: dict  # nested float32 numpy; fresh head tensors are placeholders (see `draw_fresh`)
    fresh: list[str]  # our paths absent from the checkpoint: drawn anew for every seed
    hf_config: dict  # the source config.json (labels, dropouts)


def load_task_model(
    model_dir: str, kind: str, num_labels: int, hidden_dropout: float | None = None
) -> LoadedTaskModel:
    """Encoder (and head, when present) of a transformers BERT/DistilBERT directory."""
    hf_config = read_hf_config(model_dir)
    cfg = ModelConfig.from_hf_dict(hf_config, source=os.path.join(model_dir, "config.json"))
    if hidden_dropout is not None and hidden_dropout >= 0:
        cfg = cfg.replace(hidden_dropout=hidden_dropout)
    head = head_config(cfg, hf_config, kind, num_labels)
    cfg = make_task_model(cfg, head).cfg
    state = hf._normalise_keys(hf.read_state_dict(model_dir), cfg)
    expected = abstract_params(cfg, head)
    flat, fresh, used = {}, [], set()
    for path, (key, transposed) in name_map(cfg, head).items():
        want = tuple(expected[path].shape)
        if key not in state:
            if path.split("/")[0] not in HEAD_MODULES:
                raise ValueError(
                    f"{model_dir}: tensor {key!r} is missing (needed for {path}); is this a "
                    f"{cfg.arch} checkpoint of the architecture its config.json names?"
                )
            fresh.append(path)
            flat[path] = np.zeros(want, np.float32)
            continue
        value = np.asarray(state[key], np.float32)
        value = value.T if transposed else value
        if value.shape != want:
            hint = ""
            if path.startswith(("classifier", "qa_outputs")):
                hint = f" (the checkpoint's head has another number of labels than {num_labels})"
            raise ValueError(
                f"{model_dir}: tensor {key!r} has shape {tuple(state[key].shape)}, the "
                f"{head.kind} model needs {want[::-1] if transposed else want}{hint}"
            )
        flat[path] = value
        used.add(key)
    if cfg.sinusoidal_pos_embds:
        used.add(hf._PREFIX[cfg.arch] + "embeddings.position_embeddings.weight")
    unused = sorted(k for k in state if k not in used and not _UNUSED_OK.fullmatch(k))
    if unused:
        logging.warning("%s: tensors not used by the %s model: %s", model_dir, kind, unused[:8])
    if fresh:
        logging.info("%s: newly initialised head tensors: %s", model_dir, fresh)
    return LoadedTaskModel(cfg, head, hf._unflatten(flat), fresh, hf_config)


def draw_fresh(loaded: LoadedTaskModel, seed: int) -> dict:
    """The params with every fresh head tensor drawn as transformers initialises them:
    weights N(0, initializer_range), biases 0."""
    if not loaded.fresh:
        return loaded.params
    rng = np.random.default_rng(seed)
    flat = hf._flatten(loaded.params)
    for path in loaded.fresh:
        shape = flat[path].shape
        if path.endswith("/kernel"):
            flat[path] = (rng.standard_normal(shape) * loaded.cfg.initializer_range).astype(
                np.float32
            )
        else:
            flat[path] = np.zeros(shape, np.float32)
    return hf._unflatten(flat)


# ---------------------------------------------------------------------------- export


def hf_config_dict(
    cfg: ModelConfig, head: HeadConfig, id2label: dict[int, str] | None = None
) -> dict:
    """config.json of the task model: the encoder's, plus architecture, labels and dropout."""
    out = cfg.to_hf_dict()
    out["architectures"] = [ARCHITECTURES[(cfg.arch, head.kind)]]
    if head.kind == "span":
        if cfg.arch == "distilbert":
            out["qa_dropout"] = head.dropout
        return out
    labels = id2label or {i: f"LABEL_{i}" for i in range(head.num_labels)}
    out["id2label"] = {str(i): name for i, name in labels.items()}
    out["label2id"] = {name: i for i, name in labels.items()}
    out["problem_type"] = (
        "regression" if head.kind == "regression" else "single_label_classification"
    )
    if cfg.arch == "distilbert":
        out["seq_classif_dropout"] = head.dropout
    else:
        out["classifier_dropout"] = head.dropout
    return out


def flax_to_hf(cfg: ModelConfig, head: HeadConfig, params: dict) -> dict[str, np.ndarray]:
    return hf.flax_to_hf(cfg, params, name_map(cfg, head))


def save_task_model(
    cfg: ModelConfig,
    head: HeadConfig,
    params: dict,
    out_dir: str,
    tokenizer_dir: str | None = None,
    id2label: dict[int, str] | None = None,
) -> str:
    """Writes a directory that transformers' *ForSequenceClassification /
    *ForQuestionAnswering loads with `from_pretrained`."""
    with hf.atomic_directory(out_dir) as tmp:
        hf.write_model_dir(
            tmp, hf_config_dict(cfg, head, id2label), flax_to_hf(cfg, head, params), tokenizer_dir
        )
    return os.path.abspath(out_dir)
