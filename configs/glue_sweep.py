"""Table 1 for a teacher and its student: all nine GLUE tasks, side by side.

    python -m distil_jax.finetune --config=configs/glue_sweep.py \
        --config.teacher=bert-base-uncased --config.model=workdirs/base/export \
        --config.data_dir=PATH/TO/glue_data --workdir=workdirs/glue_sweep

Same protocol and fields as configs/glue.py (see there); only the defaults
differ: every GLUE task, export off, and a report with the student's retention.
Restarting the same command resumes the sweep from `runs.jsonl`.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from glue import get_config as glue_config  # noqa: E402


def get_config():
    config = glue_config()
    # All nine GLUE tasks (MNLI is scored on matched and mismatched dev).
    config.task = "glue"
    return config
