"""Building a run from its config: validation, models, initial params, step settings.

Everything the trainer needs before its first step, with errors that name the
config field at fault. No device work happens here.
"""

from __future__ import annotations

import math
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from distil_jax import hf
from distil_jax.data import config as data_config_lib
from distil_jax.data.tokenizer import tokenizer_dir_of
from distil_jax.models import DTYPES, MaskedLM, ModelConfig
from distil_jax.steps import StepConfig

MODES = ("distill", "pretrain")


def validate(config: ml_collections.ConfigDict) -> None:
    """Fails early, naming the field, on a config that cannot run."""
    if config.mode not in MODES:
        raise ValueError(f"config.mode must be one of {MODES}, got {config.mode!r}")
    if config.mode == "distill" and not config.teacher:
        raise ValueError("config.teacher must be set in distill mode (a HF directory or name)")
    if config.dtype not in DTYPES:
        raise ValueError(f"config.dtype must be one of {tuple(DTYPES)}, got {config.dtype!r}")
    init = config.student.init
    if init not in ("teacher", "random") and not os.path.isdir(init):
        raise ValueError(
            f"config.student.init must be 'teacher', 'random' or a model directory; "
            f"{init!r} is none of these"
        )
    if init == "teacher" and config.mode != "distill" and not config.teacher:
        raise ValueError("config.student.init='teacher' needs config.teacher")
    if config.loss.temperature <= 0:
        raise ValueError(f"config.loss.temperature must be > 0, got {config.loss.temperature}")
    for name in ("alpha_ce", "alpha_mlm", "alpha_cos", "alpha_mse"):
        if config.loss[name] < 0:
            raise ValueError(f"config.loss.{name} must be >= 0, got {config.loss[name]}")
    if config.mode == "pretrain" and config.loss.alpha_mlm <= 0:
        raise ValueError(
            "config.loss.alpha_mlm must be > 0 in pretrain mode (MLM is the only loss)"
        )
    m = config.masking
    if not 0 < m.mlm_mask_prop < 1:
        raise ValueError(f"config.masking.mlm_mask_prop must be in (0, 1), got {m.mlm_mask_prop}")
    if (
        abs(m.word_mask + m.word_keep + m.word_rand - 1.0) > 1e-6
        or min(m.word_mask, m.word_keep, m.word_rand) < 0
    ):
        raise ValueError("config.masking.word_mask + word_keep + word_rand must be 1, each >= 0")
    if config.batch.micro_batch_size < 1 or config.batch.accumulation_steps < 1:
        raise ValueError("config.batch.micro_batch_size and accumulation_steps must be >= 1")
    if config.num_train_steps < 0 or (config.num_train_steps == 0 and config.num_epochs <= 0):
        raise ValueError("set config.num_train_steps > 0 or config.num_epochs > 0")
    if not 0 <= config.optim.warmup_fraction < 1:
        raise ValueError(
            f"config.optim.warmup_fraction must be in [0, 1), got {config.optim.warmup_fraction}"
        )
    for name in ("log_every", "checkpoint_every", "keep_checkpoints"):
        if config[name] < 1:
            raise ValueError(f"config.{name} must be >= 1, got {config[name]}")
    if config.attention_implementation not in ("", "xla", "cudnn"):
        raise ValueError("config.attention_implementation must be '', 'xla' or 'cudnn'")
    data_config_lib.validate(config.data)


def tokenizer_dir(config) -> str:
    """config.tokenizer, else data.tokenizer_dir, else the teacher's, else the student's."""
    if config.tokenizer or config.data.tokenizer_dir or config.teacher:
        return tokenizer_dir_of(config)
    if os.path.isdir(config.student.init):
        return config.student.init
    raise ValueError("set config.tokenizer: no teacher or student directory to take it from")


def load_teacher(config) -> tuple[ModelConfig, dict] | tuple[None, None]:
    if config.mode != "distill" and config.student.init != "teacher":
        return None, None
    return hf.load_pretrained(config.teacher)


def _dropout_overrides(config) -> dict:
    out = {}
    if config.student.hidden_dropout >= 0:
        out["hidden_dropout"] = float(config.student.hidden_dropout)
    if config.student.attention_dropout >= 0:
        out["attention_dropout"] = float(config.student.attention_dropout)
    return out


def build_student(config, teacher_cfg: ModelConfig | None, teacher_params, vocab_size: int):
    """(student config, initial numpy params or None for a jitted random init)."""
    init = config.student.init
    overrides = _dropout_overrides(config)
    if init == "teacher":
        layers = (
            [int(x) for x in config.student.layers.split(",")]
            if config.student.layers
            else (hf.student_layer_map(teacher_cfg.num_layers, config.student.num_layers))
        )
        cfg, params, _ = hf.init_student(teacher_cfg, teacher_params, layers)
        return cfg.replace(**overrides), params
    if init != "random":
        cfg, params = hf.load_pretrained(init)
        return cfg.replace(**overrides), params
    s = config.student
    base = teacher_cfg
    if base is None and config.teacher:  # sizes default to the teacher's, weights unused
        base = ModelConfig.from_hf_file(hf.resolve_model_dir(config.teacher))
    pick = lambda value, fallback: value if value else fallback
    if base is None and not (s.hidden_size and s.num_heads and s.intermediate_size):
        raise ValueError(
            "random init without a teacher needs config.student.hidden_size, "
            "num_heads and intermediate_size"
        )
    cfg = ModelConfig(
        arch=s.arch,
        vocab_size=pick(s.vocab_size, vocab_size),
        hidden_size=pick(s.hidden_size, base and base.hidden_size),
        num_layers=s.num_layers,
        num_heads=pick(s.num_heads, base and base.num_heads),
        intermediate_size=pick(s.intermediate_size, base and base.intermediate_size),
        max_position_embeddings=pick(
            s.max_position_embeddings, base.max_position_embeddings if base else config.data.max_len
        ),
        type_vocab_size=2 if s.arch == "bert" else 0,
    )
    return cfg.replace(**overrides), None


def make_model(cfg: ModelConfig, config, trainable: bool) -> MaskedLM:
    return MaskedLM(
        cfg,
        dtype=DTYPES[config.dtype],
        param_dtype=jnp.float32,
        remat=bool(config.remat) and trainable,
        attention_implementation=config.attention_implementation or None,
    )


def step_config(config, student_cfg: ModelConfig, mask_token_id: int) -> StepConfig:
    return StepConfig(
        mode=config.mode,
        temperature=float(config.loss.temperature),
        alpha_ce=float(config.loss.alpha_ce),
        alpha_mlm=float(config.loss.alpha_mlm),
        alpha_cos=float(config.loss.alpha_cos),
        alpha_mse=float(config.loss.alpha_mse),
        restrict_ce_to_mask=bool(config.loss.restrict_ce_to_mask),
        logits_chunk_len=int(config.loss.logits_chunk_len),
        fused_vocab_grad=bool(config.loss.fused_vocab_grad),
        mask_token_id=int(mask_token_id),
        vocab_size=student_cfg.vocab_size,
        mlm_mask_prop=float(config.masking.mlm_mask_prop),
        word_mask=float(config.masking.word_mask),
        word_keep=float(config.masking.word_keep),
        word_rand=float(config.masking.word_rand),
    )


def check_vocab(summary: dict, model_cfgs: list[ModelConfig], tok_dir: str) -> None:
    for cfg in model_cfgs:
        if cfg is not None and summary["vocab_size"] > cfg.vocab_size:
            raise ValueError(
                f"the prepared data was tokenised with a {summary['vocab_size']}-token vocabulary "
                f"({tok_dir}) but the {cfg.arch} model has {cfg.vocab_size} embeddings: use the "
                "teacher's tokenizer (config.tokenizer) and prepare the data again"
            )


def total_optimizer_steps(config, num_sequences: int) -> int:
    if config.num_train_steps:
        return int(config.num_train_steps)
    per_step = config.batch.micro_batch_size * config.batch.accumulation_steps
    return max(1, math.ceil(config.num_epochs * num_sequences / per_step))


def token_counts_or_uniform(counts: np.ndarray | None, vocab_size: int) -> np.ndarray:
    if counts is None:
        return np.ones(vocab_size, np.int64)
    if counts.shape[0] < vocab_size:  # a model vocabulary padded beyond the tokenizer's
        counts = np.concatenate([counts, np.zeros(vocab_size - counts.shape[0], counts.dtype)])
    return counts


def frozen_params(params: dict, dtype) -> dict:
    """Kernels and embeddings of a frozen model cast to `dtype`; the rest float32."""

    def cast(path, x):
        name = getattr(path[-1], "key", None)
        return np.asarray(x, dtype if name in ("kernel", "embedding") else np.float32)

    return jax.tree_util.tree_map_with_path(cast, params)
