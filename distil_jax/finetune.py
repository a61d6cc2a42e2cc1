"""Downstream evaluation: `python -m distil_jax.finetune --config=configs/glue.py [--workdir=DIR]`.

Fine-tunes `config.model` (and `config.teacher`, if set) on `config.task`
with the paper's protocol, then prints the report (also written to
`<workdir>/report.md`, with the figures in `results.json`). Override any
config field with `--config.a.b=value`; see configs/glue.py for all of them.
"""

import logging
import os

from absl import app, flags
from ml_collections import config_flags

config_flags.DEFINE_config_file("config", None, "Fine-tuning config file.", lock_config=True)
flags.DEFINE_string(
    "workdir", None, "Output directory (runs, results, report). Default: workdirs/finetune."
)
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() (multi-host).")
flags.mark_flags_as_required(["config"])
FLAGS = flags.FLAGS


def main(argv):
    del argv
    # Imported after flag parsing: jax and transformers are slow to import.
    import jax

    if FLAGS.distributed:
        jax.distributed.initialize()
    from distil_jax.eval import protocol, report

    logging.getLogger().setLevel(logging.INFO)
    workdir = FLAGS.workdir or os.path.join("workdirs", "finetune")
    results = protocol.run(FLAGS.config, workdir)
    if jax.process_index() == 0:
        print(report.render(results, include_paper=FLAGS.config.report_paper_rows))
        print(f"results: {os.path.join(workdir, protocol.RESULTS_FILE)}")


if __name__ == "__main__":
    app.run(main)
