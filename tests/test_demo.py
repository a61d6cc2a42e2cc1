"""The offline quickstart, shortened: every stage runs and the report comes from measurement."""

import json
import os
import sys

from transformers import AutoModelForMaskedLM

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs.demo import get_config  # noqa: E402
from distil_jax.demo import run_demo  # noqa: E402


def short_demo_config():
    config = get_config()
    config.demo.max_documents = 300
    config.demo.vocab_size = 1500
    config.demo.teacher_layers = 2
    config.demo.hidden_size = 64
    config.demo.num_heads = 2
    config.demo.intermediate_size = 128
    config.demo.teacher_steps = 60
    config.demo.teacher_learning_rate = 1e-2
    config.demo.eval_batches = 4
    config.demo.throughput_batch = 4
    config.demo.throughput_repeats = 3
    config.student.num_layers = 1
    config.num_train_steps = 30
    config.checkpoint_every = 30
    config.optim.learning_rate = 5e-3
    config.batch.micro_batch_size = 16
    config.data.max_len = 64
    config.data.bucket_lengths = (32, 64)
    return config


def test_short_demo_end_to_end_and_reuse(tmp_path):
    workdir = str(tmp_path / "demo")
    report = run_demo(short_demo_config(), workdir)

    assert os.path.exists(os.path.join(workdir, "report.md"))
    assert os.path.getsize(os.path.join(workdir, "loss_curves.png")) > 1000
    with open(os.path.join(workdir, "report.json")) as f:
        saved = json.load(f)
    assert saved["student"]["params"] < saved["teacher"]["params"]
    model, info = AutoModelForMaskedLM.from_pretrained(
        report["student"]["dir"], output_loading_info=True
    )
    assert type(model).__name__ == "DistilBertForMaskedLM"
    assert not info["missing_keys"] and not info["unexpected_keys"]
    # Measured, not configured: the distilled student predicts held-out tokens far better
    # than the same architecture untrained, and its figures are real numbers.
    student, untrained = report["student"], report["random_init_student"]
    assert student["mlm_accuracy"] > untrained["mlm_accuracy"] + 0.015, (student, untrained)
    assert student["mlm_loss"] < untrained["mlm_loss"] - 0.3, (student, untrained)
    assert report["student"]["mlm_predictions"] > 100
    assert report["speedup"] > 0 and report["teacher"]["sequences_per_s"] > 0
    assert len(report["fill_mask"]["student"]) == 5

    # A second run on the same workdir reuses the finished stages.
    lines = sum(1 for _ in open(os.path.join(workdir, "teacher", "metrics.jsonl")))
    again = run_demo(short_demo_config(), workdir)
    assert sum(1 for _ in open(os.path.join(workdir, "teacher", "metrics.jsonl"))) == lines
    assert again["teacher"]["mlm_accuracy"] == report["teacher"]["mlm_accuracy"]
