"""Entry point: `python -m distil_jax.main --config=configs/FILE.py [--workdir=DIR]`.

Override any config field with `--config.a.b=value`. A workdir holding a
checkpoint resumes from it. On multi-host jobs every process runs this same
command; `jax.distributed` joins them (auto-detected on SLURM and Cloud TPU).
"""

import logging
import os

from absl import app, flags
from ml_collections import config_flags

config_flags.DEFINE_config_file("config", None, "Training config file.", lock_config=True)
flags.DEFINE_string(
    "workdir",
    None,
    "Run directory (checkpoints, logs, export). Default: workdirs/<config file name>.",
)
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() (multi-host).")
flags.mark_flags_as_required(["config"])
FLAGS = flags.FLAGS


def main(argv):
    del argv
    import jax

    if FLAGS.distributed:
        jax.distributed.initialize()
    from distil_jax.train import train

    config = FLAGS.config
    workdir = FLAGS.workdir or os.path.join(
        "workdirs",
        os.path.splitext(os.path.basename(config_flags.get_config_filename(FLAGS["config"])))[0],
    )
    logging.getLogger().setLevel(logging.INFO)
    if hasattr(config, "run"):  # configs that orchestrate several stages (the demo)
        config.run(config, workdir)
    else:
        train(config, workdir)


if __name__ == "__main__":
    app.run(main)
