"""Entry point: `python -m distil_jax.main --config=configs/FILE.py [--workdir=DIR]`.

Override any config field with `--config.a.b=value`. A workdir holding a
checkpoint resumes from it. On multi-host jobs every process runs this same
command with `--distributed`; `jax.distributed` joins them (auto-detected on
SLURM and Cloud TPU; elsewhere give `--coordinator_address`, `--num_processes`
and `--process_id`, or their environment variables, see `distil_jax.distributed`).
"""

import logging
import os
import sys

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

config_flags.DEFINE_config_file("config", None, "Training config file.", lock_config=True)
flags.DEFINE_string(
    "workdir",
    None,
    "Run directory (checkpoints, logs, export). Default: workdirs/<config file name>.",
)
flags.DEFINE_bool(
    "distributed",
    False,
    "Join a multi-process job with jax.distributed (implied by the three flags below or "
    "DISTIL_JAX_* variables); settings not given are auto-detected (SLURM, Cloud TPU).",
)
flags.DEFINE_string(
    "coordinator_address", None, "HOST:PORT of process 0's coordinator (multi-process)."
)
flags.DEFINE_integer("num_processes", None, "Number of processes in the job (multi-process).")
flags.DEFINE_integer("process_id", None, "This process's index in [0, num_processes).")
flags.mark_flags_as_required(["config"])
FLAGS = flags.FLAGS


def main(argv):
    del argv
    # Our progress bar and warnings; not the INFO chatter of Orbax, TFDS and XLA.
    logging.getLogger().setLevel(logging.WARNING)
    absl_logging.set_verbosity(absl_logging.WARNING)
    # Before anything touches a device: jax.distributed must come first.
    from distil_jax import distributed

    explicit = (FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
    if FLAGS.distributed or distributed.requested() or any(v is not None for v in explicit):
        distributed.initialize(*explicit)
    from distil_jax.train import Preempted, train

    config = FLAGS.config
    workdir = FLAGS.workdir or os.path.join(
        "workdirs",
        os.path.splitext(os.path.basename(config_flags.get_config_filename(FLAGS["config"])))[0],
    )
    try:
        if config.get("pipeline") == "demo":  # the offline quickstart: several stages
            from distil_jax.demo import run_demo

            run_demo(config, workdir)
        else:
            train(config, workdir)
    except Preempted as e:
        logging.warning("%s; run the same command again to resume", e)
        sys.exit(Preempted.exit_code)
    except (ValueError, FileNotFoundError) as e:  # bad input: the message names the fix
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    app.run(main)
