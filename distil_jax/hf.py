"""The bridge to Hugging Face: a declarative name table plus small transforms.

Our Flax parameter names are arch-neutral (`layer_3/attention/query/kernel`);
each architecture has one table of (our module, HF module, kind) rows, and the
kind says how a module's tensors move (`dense`: kernel = weight.T). Import,
export and the shape checks are all driven by that table.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile

import jax
import numpy as np

from distil_jax.models import MaskedLM, ModelConfig
from distil_jax.models.transformer import sinusoidal_table

# kind -> [(our leaf name, HF tensor name, transposed?)]
_KINDS = {
    "dense": [("kernel", "weight", True), ("bias", "bias", False)],
    "norm": [("scale", "weight", False), ("bias", "bias", False)],
    "embed": [("embedding", "weight", False)],
    "param": [(None, None, False)],
}

_LAYER = "{i}"
_TABLES = {
    "bert": [
        ("embeddings/word_embeddings", "bert.embeddings.word_embeddings", "embed"),
        ("embeddings/position_embeddings", "bert.embeddings.position_embeddings", "embed"),
        ("embeddings/token_type_embeddings", "bert.embeddings.token_type_embeddings", "embed"),
        ("embeddings/norm", "bert.embeddings.LayerNorm", "norm"),
        ("layer_{i}/attention/query", "bert.encoder.layer.{i}.attention.self.query", "dense"),
        ("layer_{i}/attention/key", "bert.encoder.layer.{i}.attention.self.key", "dense"),
        ("layer_{i}/attention/value", "bert.encoder.layer.{i}.attention.self.value", "dense"),
        ("layer_{i}/attention/out", "bert.encoder.layer.{i}.attention.output.dense", "dense"),
        ("layer_{i}/attention_norm", "bert.encoder.layer.{i}.attention.output.LayerNorm", "norm"),
        ("layer_{i}/ffn/intermediate", "bert.encoder.layer.{i}.intermediate.dense", "dense"),
        ("layer_{i}/ffn/output", "bert.encoder.layer.{i}.output.dense", "dense"),
        ("layer_{i}/output_norm", "bert.encoder.layer.{i}.output.LayerNorm", "norm"),
        ("head_transform", "cls.predictions.transform.dense", "dense"),
        ("head_norm", "cls.predictions.transform.LayerNorm", "norm"),
        ("head_bias", "cls.predictions.bias", "param"),
        ("pooler", "bert.pooler.dense", "dense"),
    ],
    "distilbert": [
        ("embeddings/word_embeddings", "distilbert.embeddings.word_embeddings", "embed"),
        ("embeddings/position_embeddings", "distilbert.embeddings.position_embeddings", "embed"),
        ("embeddings/norm", "distilbert.embeddings.LayerNorm", "norm"),
        ("layer_{i}/attention/query", "distilbert.transformer.layer.{i}.attention.q_lin", "dense"),
        ("layer_{i}/attention/key", "distilbert.transformer.layer.{i}.attention.k_lin", "dense"),
        ("layer_{i}/attention/value", "distilbert.transformer.layer.{i}.attention.v_lin", "dense"),
        ("layer_{i}/attention/out", "distilbert.transformer.layer.{i}.attention.out_lin", "dense"),
        ("layer_{i}/attention_norm", "distilbert.transformer.layer.{i}.sa_layer_norm", "norm"),
        ("layer_{i}/ffn/intermediate", "distilbert.transformer.layer.{i}.ffn.lin1", "dense"),
        ("layer_{i}/ffn/output", "distilbert.transformer.layer.{i}.ffn.lin2", "dense"),
        ("layer_{i}/output_norm", "distilbert.transformer.layer.{i}.output_layer_norm", "norm"),
        ("head_transform", "vocab_transform", "dense"),
        ("head_norm", "vocab_layer_norm", "norm"),
        ("head_bias", "vocab_projector.bias", "param"),
    ],
}
# Tensors that transformers ties to others (written by neither side) or
# derives itself: present in some checkpoints, never needed.
_DERIVED = {
    "bert": re.compile(r"cls\.predictions\.decoder\.(weight|bias)|.*position_ids|.*token_type_ids"),
    "distilbert": re.compile(r"vocab_projector\.weight|.*position_ids"),
}
_PREFIX = {"bert": "bert.", "distilbert": "distilbert."}


def abstract_params(cfg: ModelConfig) -> dict:
    """Shapes and dtypes of `cfg`'s float32 parameters, without allocating them."""
    model = MaskedLM(cfg)
    ids = jax.ShapeDtypeStruct((1, 8), np.int32)
    shapes = jax.eval_shape(lambda i: model.init(jax.random.key(0), i, i), ids)["params"]
    return jax.tree_util.tree_map(lambda x: getattr(x, "value", x), shapes, is_leaf=_is_boxed)


def _is_boxed(x) -> bool:
    return hasattr(x, "value") and hasattr(x, "names")


def _flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    flat = {}
    for k, v in tree.items():
        path = f"{prefix}/{k}" if prefix else k
        flat.update(_flatten(v, path) if isinstance(v, dict) else {path: v})
    return flat


def _unflatten(flat: dict[str, object]) -> dict:
    tree: dict = {}
    for path, v in flat.items():
        *parents, leaf = path.split("/")
        node = tree
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    return tree


def name_map(cfg: ModelConfig) -> dict[str, tuple[str, bool]]:
    """Our leaf path -> (HF tensor name, transposed?) for every parameter of `cfg`."""
    expected = _flatten(abstract_params(cfg))
    mapping = {}
    for ours, theirs, kind in _TABLES[cfg.arch]:
        layers = range(cfg.num_layers) if _LAYER in ours else [None]
        for i in layers:
            o = ours.replace(_LAYER, str(i))
            t = theirs.replace(_LAYER, str(i))
            for our_leaf, their_leaf, transposed in _KINDS[kind]:
                path = f"{o}/{our_leaf}" if our_leaf else o
                if path in expected:  # optional modules (pooler, learned positions) may be absent
                    mapping[path] = (f"{t}.{their_leaf}" if their_leaf else t, transposed)
    unmapped = set(expected) - set(mapping)
    assert not unmapped, f"name table misses {sorted(unmapped)}"
    return mapping


# ---------------------------------------------------------------------------- import


def _normalise_keys(state: dict[str, np.ndarray], cfg: ModelConfig) -> dict[str, np.ndarray]:
    """Accepts the older spellings found on the Hub (LayerNorm gamma/beta, no prefix)."""
    out = {}
    for k, v in state.items():
        k = re.sub(r"\.gamma$", ".weight", k)
        k = re.sub(r"\.beta$", ".bias", k)
        out[k] = v
    prefix = _PREFIX[cfg.arch]
    if not any(k.startswith(prefix) for k in out) and any(k.startswith("embeddings.") for k in out):
        out = {(k if k.startswith(("cls.", "vocab_")) else prefix + k): v for k, v in out.items()}
    return out


def hf_to_flax(cfg: ModelConfig, state: dict[str, np.ndarray], source: str = "checkpoint") -> dict:
    """Converts a transformers state dict into our nested float32 params."""
    state = _normalise_keys(state, cfg)
    expected = _flatten(abstract_params(cfg))
    flat, used = {}, set()
    for path, (key, transposed) in name_map(cfg).items():
        if key not in state:
            raise ValueError(
                f"{source}: tensor {key!r} is missing (needed for {cfg.arch} parameter {path}); "
                "is this a *ForMaskedLM checkpoint of the architecture its config.json names?"
            )
        value = np.asarray(state[key], np.float32)
        value = value.T if transposed else value
        want = tuple(expected[path].shape)
        if value.shape != want:
            raise ValueError(
                f"{source}: tensor {key!r} has shape {tuple(state[key].shape)} but config.json "
                f"implies {want if not transposed else want[::-1]}"
            )
        flat[path] = value
        used.add(key)
    if cfg.sinusoidal_pos_embds:
        used.add(_PREFIX[cfg.arch] + "embeddings.position_embeddings.weight")
    leftover = [k for k in state if k not in used and not _DERIVED[cfg.arch].fullmatch(k)]
    leftover = [k for k in leftover if "pooler" not in k]  # an unused pooler is harmless
    if leftover:
        raise ValueError(f"{source}: unexpected tensors for {cfg.arch}: {sorted(leftover)[:8]}")
    return _unflatten(flat)


def read_state_dict(model_dir: str) -> dict[str, np.ndarray]:
    """Reads model.safetensors (single or sharded) or pytorch_model.bin as float32 numpy."""
    import torch  # local: torch is only needed at the HF boundary

    safetensors_file = os.path.join(model_dir, "model.safetensors")
    index_file = safetensors_file + ".index.json"
    bin_file = os.path.join(model_dir, "pytorch_model.bin")
    if os.path.exists(safetensors_file) or os.path.exists(index_file):
        from safetensors.torch import load_file

        files = [safetensors_file]
        if not os.path.exists(safetensors_file):
            with open(index_file) as f:
                files = sorted(
                    {os.path.join(model_dir, v) for v in json.load(f)["weight_map"].values()}
                )
        tensors = {}
        for file in files:
            try:
                tensors.update(load_file(file))
            except Exception as e:  # safetensors raises its own error types
                raise ValueError(f"{file} is not a readable safetensors file: {e}") from e
    elif os.path.exists(bin_file):
        # weights_only: an untrusted pickle must not run code.
        try:
            tensors = torch.load(bin_file, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ValueError(f"{bin_file} is not a readable PyTorch checkpoint: {e}") from e
    else:
        raise FileNotFoundError(
            f"no model.safetensors or pytorch_model.bin in {model_dir}: expected a Hugging Face "
            "model directory"
        )
    return {k: v.detach().to(torch.float32).numpy() for k, v in tensors.items()}


def resolve_model_dir(name_or_dir: str) -> str:
    """A local directory as is; otherwise a Hub name, downloaded (needs a network)."""
    if os.path.isdir(name_or_dir):
        return name_or_dir
    if os.path.exists(name_or_dir) or name_or_dir.startswith((".", "/")):
        raise FileNotFoundError(f"{name_or_dir} is not a model directory")
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(
            name_or_dir, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.bin"]
        )
    except Exception as e:
        raise FileNotFoundError(
            f"{name_or_dir!r} is neither a local directory nor a downloadable Hub model "
            f"(offline? set HF_HUB_OFFLINE=0 and check the name): {e}"
        ) from e


def load_pretrained(name_or_dir: str, **overrides) -> tuple[ModelConfig, dict]:
    """(config, float32 numpy params) of a Hugging Face BERT or DistilBERT checkpoint."""
    model_dir = resolve_model_dir(name_or_dir)
    cfg = ModelConfig.from_hf_file(model_dir)
    if overrides:
        cfg = cfg.replace(**overrides)
    return cfg, hf_to_flax(cfg, read_state_dict(model_dir), source=model_dir)


# ---------------------------------------------------------------------------- export


def flax_to_hf(cfg: ModelConfig, params: dict, mapping: dict | None = None) -> dict:
    """Our params -> a transformers state dict (tied tensors omitted, as transformers saves).

    mapping: our path -> (HF name, transposed?); default the MLM model's `name_map`.
    """
    flat = _flatten(jax.device_get(params))
    state = {}
    for path, (key, transposed) in (mapping or name_map(cfg)).items():
        value = np.asarray(flat[path], np.float32)
        state[key] = np.ascontiguousarray(value.T if transposed else value)
    if cfg.sinusoidal_pos_embds:
        key = _PREFIX[cfg.arch] + "embeddings.position_embeddings.weight"
        state[key] = sinusoidal_table(cfg.max_position_embeddings, cfg.hidden_size)
    return state


@contextlib.contextmanager
def atomic_directory(out_dir: str):
    """Yields a temporary sibling that replaces `out_dir` only if the block succeeds,
    so an interrupted export never leaves a half-written directory where a good one was."""
    out_dir = os.path.abspath(out_dir)
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=os.path.basename(out_dir) + ".tmp-", dir=parent)
    try:
        yield tmp
        if os.path.exists(out_dir):
            old = tmp + ".old"
            os.rename(out_dir, old)
            os.rename(tmp, out_dir)
            shutil.rmtree(old)
        else:
            os.rename(tmp, out_dir)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp)


def write_model_dir(
    directory: str, hf_config: dict, state: dict[str, np.ndarray], tokenizer_dir: str | None
) -> None:
    """config.json, model.safetensors and (optionally) the tokenizer files."""
    import torch
    from safetensors.torch import save_file

    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(hf_config, f, indent=2, sort_keys=True)
    tensors = {k: torch.from_numpy(np.array(v)) for k, v in state.items()}
    save_file(tensors, os.path.join(directory, "model.safetensors"), metadata={"format": "pt"})
    if tokenizer_dir is not None:
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(directory)


def save_pretrained(
    cfg: ModelConfig, params: dict, out_dir: str, tokenizer_dir: str | None = None
) -> str:
    """Writes a directory that `AutoModelForMaskedLM.from_pretrained` loads (atomically)."""
    with atomic_directory(out_dir) as tmp:
        write_model_dir(tmp, cfg.to_hf_dict(), flax_to_hf(cfg, params), tokenizer_dir)
    return os.path.abspath(out_dir)


def push_to_hub(local_dir: str, repo_id: str, private: bool = False) -> str:
    """Uploads an exported directory; the token comes from the environment, never logged."""
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, exist_ok=True, private=private)
    api.upload_folder(folder_path=local_dir, repo_id=repo_id)
    return f"https://huggingface.co/{repo_id}"


# ---------------------------------------------------------------------------- student init


def student_layer_map(teacher_layers: int, student_layers: int) -> list[int]:
    """Teacher layers to copy: spread evenly, first and last included.

    12 -> 6 gives [0, 2, 4, 7, 9, 11], the map DistilBERT was initialised with.
    """
    if not 1 <= student_layers <= teacher_layers:
        raise ValueError(
            f"student depth {student_layers} must be between 1 and the teacher's {teacher_layers}"
        )
    if student_layers == 1:
        return [0]
    return [int(x) for x in np.floor(np.linspace(0, teacher_layers - 1, student_layers) + 0.5)]


def validate_layer_map(layers: list[int], teacher_layers: int) -> None:
    if not layers:
        raise ValueError("the layer map is empty")
    bad = [j for j in layers if not 0 <= j < teacher_layers]
    if bad:
        raise ValueError(
            f"layer map {layers}: {bad} out of range for a {teacher_layers}-layer teacher "
            f"(valid: 0..{teacher_layers - 1})"
        )
    if any(b <= a for a, b in zip(layers, layers[1:], strict=False)):
        raise ValueError(f"layer map {layers} must be strictly increasing")


def init_student(
    teacher_cfg: ModelConfig, teacher_params: dict, layers: list[int] | None = None
) -> tuple[ModelConfig, dict, dict[str, str]]:
    """DistilBERT student initialised from a BERT teacher (DESIGN.md §1.5).

    Copies word and position embeddings, the embedding LayerNorm, the mapped
    layers and the whole MLM head; drops token-type embeddings and the pooler.
    Returns (student config, student params, student path -> teacher path).
    """
    if layers is None:
        layers = student_layer_map(teacher_cfg.num_layers, max(1, teacher_cfg.num_layers // 2))
    validate_layer_map(layers, teacher_cfg.num_layers)
    student_cfg = teacher_cfg.student(len(layers))
    teacher_flat = _flatten(teacher_params)
    student_flat, source = {}, {}
    for path in _flatten(abstract_params(student_cfg)):
        top, _, rest = path.partition("/")
        if top.startswith("layer_"):
            from_path = f"layer_{layers[int(top[len('layer_') :])]}/{rest}"
        else:
            from_path = path
        if from_path not in teacher_flat:
            raise ValueError(f"teacher has no parameter {from_path} to initialise {path}")
        student_flat[path] = np.array(teacher_flat[from_path], np.float32, copy=True)
        source[path] = from_path
    return student_cfg, _unflatten(student_flat), source
