"""Data side of distil_jax: text sources, preparation into TFDS shards, loaders.

See README.md in this folder for the on-disk layout and the loader's design.
"""

from distil_jax.data.config import data_config, text_files_source, tfds_source, validate
from distil_jax.data.loader import (
    Loader,
    make_eval_loader,
    make_train_loader,
    per_process_batch_size,
)
from distil_jax.data.preparation import prepare
from distil_jax.data.prepared import load_summary, load_token_counts

__all__ = [
    "Loader",
    "data_config",
    "load_summary",
    "load_token_counts",
    "make_eval_loader",
    "make_train_loader",
    "per_process_batch_size",
    "prepare",
    "text_files_source",
    "tfds_source",
    "validate",
]
