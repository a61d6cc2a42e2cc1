"""Prepare a training corpus: tokenise, build sequences, write TFDS array_record shards.

    python -m distil_jax.prepare_data --config=configs/prepare_wikipedia.py

FILE is a training config: its ``data`` section says what to read and where to
write (``data.prepared_dir``); the tokenizer is ``config.tokenizer`` (when the
config has that field), else ``data.tokenizer_dir``, else the teacher's
(``config.teacher``, a directory or a Hub name). A finished preparation is
reused; one made with another tokenizer is refused.
"""

from __future__ import annotations

import logging
import os

from absl import app
from ml_collections import config_flags

from distil_jax.data.preparation import prepare
from distil_jax.data.prepared import load_summary
from distil_jax.data.tokenizer import (
    check_matches_teacher,
    describe,
    load_tokenizer,
    tokenizer_dir_of,
)

__all__ = ["main", "prepare", "tokenizer_dir_of"]

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file.")


def main(argv) -> None:
    del argv
    logging.getLogger().setLevel(logging.INFO)
    config = _CONFIG.value
    if config is None:
        raise app.UsageError("--config=FILE is required")
    tokenizer_dir = tokenizer_dir_of(config)
    teacher = config.get("teacher")
    if teacher and os.path.isdir(teacher):
        # A tokenizer other than the teacher's must still give the teacher's ids.
        check_matches_teacher(describe(load_tokenizer(tokenizer_dir), tokenizer_dir), teacher)
    prepared_dir = prepare(config.data, tokenizer_dir)
    summary = load_summary(prepared_dir)
    print(
        f"{prepared_dir}: {summary['documents']} documents, {summary['num_sequences']} "
        f"sequences, {summary['num_tokens']} tokens (train); "
        f"{summary['timing']['tokens_per_second_per_process']} tokens/s per process"
    )


if __name__ == "__main__":
    app.run(main)
