"""Export the student of a training run's checkpoint as a transformers directory."""

from __future__ import annotations

import json
import os

from distil_jax import hf
from distil_jax.checkpoint import Checkpoints
from distil_jax.models import ModelConfig
from distil_jax.train import RUN_FILE


def export_from_workdir(workdir: str, out_dir: str, step: int | None = None) -> str:
    run_file = os.path.join(workdir, RUN_FILE)
    if not os.path.exists(run_file):
        raise FileNotFoundError(
            f"{run_file} not found: is {workdir} a distil_jax training workdir?"
        )
    with open(run_file) as f:
        run = json.load(f)
    cfg = ModelConfig.from_hf_dict(run["student_config"], source=run_file)
    ckpt = Checkpoints(workdir, async_save=False)
    try:
        _, params = ckpt.restore_params(step)
    finally:
        ckpt.close()
    tokenizer_dir = run.get("tokenizer_dir")
    if tokenizer_dir and not os.path.isdir(tokenizer_dir):
        tokenizer_dir = None  # moved since training: export the weights alone
    return hf.save_pretrained(cfg, params, out_dir, tokenizer_dir)
