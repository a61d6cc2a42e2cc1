"""Fine-tuning end to end on tiny models: it learns, resumes, reports, exports; and the
inference benchmark."""

import json
import os
import sys

import jax
import numpy as np
import pytest
import torch
from eval_fixtures import squad_json, toy_sentences, write_toy_sst2
from hf_fixtures import bert_teacher, distilbert_student, save_hf
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from distil_jax import benchmark_inference, hf
from distil_jax.eval import protocol, report
from distil_jax.eval.tasks import get_task

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from configs.glue import get_config  # noqa: E402


def _config(model_dir, data_dir, **overrides):
    config = get_config()
    config.model = model_dir
    config.data_dir = data_dir
    config.max_length = 16
    config.length_buckets = "16"  # one shape: one compile
    config.train_batch_size = 32
    config.eval_batch_size = 32
    # A random tiny encoder needs a high rate to find the cue word within 32 steps.
    config.learning_rates = "5e-3"
    config.epochs = "4"
    config.num_seeds = 1
    config.optim.warmup_fraction = 0.0
    config.progress = False
    config.fast_compile = True  # compiles dominate these tiny runs
    config.log_every = 4
    config.report_paper_rows = False
    for key, value in overrides.items():
        node = config
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return config


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    teacher = save_hf(bert_teacher(num_hidden_layers=2), str(root / "teacher"))
    # The student as training exports it: a DistilBERT MLM directory from the teacher.
    cfg, params = hf.load_pretrained(teacher)
    s_cfg, s_params, _ = hf.init_student(cfg, params, [0])
    student = hf.save_pretrained(s_cfg, s_params, str(root / "student"), teacher)
    return teacher, student


def test_finetuning_learns_a_separable_task_resumes_and_exports(tmp_path, tiny_models):
    teacher, student = tiny_models
    data = write_toy_sst2(str(tmp_path / "glue"), n_train=256, n_dev=64)
    config = _config(student, data, teacher=teacher, export="best")
    workdir = str(tmp_path / "work")
    results = protocol.run(config, workdir)

    for role in ("teacher", "student"):
        sst2 = results["models"][role]["tasks"]["sst2"]
        assert sst2["metrics"]["accuracy"] >= 90.0, (role, sst2)
        assert sst2["seeds"] == 1 and sst2["learning_rate"] == 5e-3
    with open(os.path.join(workdir, "results.json")) as f:
        assert json.load(f)["tasks"] == ["sst2"]
    text = open(os.path.join(workdir, "report.md")).read()
    assert "| student retention (%) |" in text and "SST-2" in text

    # A second run finds every run in runs.jsonl and trains nothing.
    lines = open(os.path.join(workdir, protocol.RUNS_FILE)).read().count("\n")
    again = protocol.run(config, workdir)
    assert open(os.path.join(workdir, protocol.RUNS_FILE)).read().count("\n") == lines == 2
    score = results["models"]["student"]["tasks"]["sst2"]["score"]
    assert again["models"]["student"]["tasks"]["sst2"]["score"] == score

    # The exported student is a transformers classifier that predicts the toy task.
    export = results["models"]["student"]["tasks"]["sst2"]["export_dir"]
    model = AutoModelForSequenceClassification.from_pretrained(export).eval()
    assert model.config.id2label == {0: "negative", 1: "positive"}
    sentences, labels = toy_sentences(64, seed=5)
    enc = AutoTokenizer.from_pretrained(export)(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        preds = model(**enc).logits.argmax(-1).numpy()
    assert np.mean(preds == np.asarray(labels)) >= 0.9


def test_squad_pipeline_runs_and_scores(tmp_path, tiny_models):
    _, student = tiny_models
    folder = tmp_path / "SQuAD"
    squad_json(str(folder / "train-v1.1.json"))
    squad_json(str(folder / "dev-v1.1.json"))
    config = _config(
        student,
        str(tmp_path),
        task="squad",
        epochs="1",
        **{"squad.max_length": 24, "squad.doc_stride": 8, "squad.max_query_length": 6},
    )
    config.length_buckets = "24"
    results = protocol.run(config, str(tmp_path / "work"))
    squad = results["models"]["model"]["tasks"]["squad"]
    assert set(squad["metrics"]) == {"exact_match", "f1"}
    assert 0.0 <= squad["metrics"]["exact_match"] <= squad["metrics"]["f1"] <= 100.0
    assert "Table 2" in report.render(results)


def test_bad_configs_fail_early_with_the_field_name(tmp_path, tiny_models):
    _, student = tiny_models
    with pytest.raises(ValueError, match="unknown task 'snli'"):
        protocol.validate(_config(student, str(tmp_path), task="snli"))
    with pytest.raises(ValueError, match="config.learning_rates"):
        protocol.validate(_config(student, str(tmp_path), learning_rates="fast"))
    with pytest.raises(ValueError, match="set config.model"):
        protocol.validate(_config("", str(tmp_path)))
    with pytest.raises(FileNotFoundError, match="SST-2/train.tsv not found"):
        protocol.run(_config(student, str(tmp_path / "nothing")), str(tmp_path / "w"))
    config = _config(student, write_toy_sst2(str(tmp_path / "g"), 8, 8), max_length=128)
    with pytest.raises(ValueError, match="exceeds the model's max_position_embeddings 64"):
        protocol.run(config, str(tmp_path / "w2"))


def test_report_layout_and_retention():
    def entry(scores):
        tasks = {t: {"score": s, "metrics": {"accuracy": s}} for t, s in scores.items()}
        for t in tasks.values():
            t.update(learning_rate=2e-5, epochs=3, seeds=5, score_min=0, score_max=100)
        return {"model_dir": "/x/m", "tasks": tasks}

    results = {
        "models": {
            "teacher": entry({"sst2": 90.0, "cola": 50.0}),
            "student": entry({"sst2": 81.0, "cola": 40.0}),
        }
    }
    table = report.table1(results, include_paper=True)
    lines = table.splitlines()
    assert lines[0].startswith("| model | score | CoLA | MNLI | MRPC")
    assert "*79.5*" in lines[2]  # the paper's BERT-base row
    # Macro over the tasks run: teacher 70, student 60.5; retention 86.4, CoLA 80, SST-2 90.
    assert lines[4].startswith("| teacher (m) | 70.0 | 50.0 | – |")
    assert lines[6] == "| student retention (%) | 86.4 | 80.0 | – | – | – | – | – | 90.0 | – | – |"
    assert "not all nine" in table


def test_benchmark_inference_measures_both_models(tmp_path):
    teacher = save_hf(bert_teacher(), str(tmp_path / "t"))
    student = save_hf(distilbert_student(), str(tmp_path / "s"))
    rows = benchmark_inference.benchmark([teacher, student], [2], seq_len=16, runs=3, warmup=1)
    assert len(rows) == 2
    for r in rows:
        assert np.isfinite(r["median_ms"]) and r["median_ms"] > 0
        assert np.isfinite(r["sequences_per_s"]) and r["speedup"] > 0
    assert rows[0]["speedup"] == 1.0 and rows[0]["parameters"] > rows[1]["parameters"]
    table = benchmark_inference.render(rows)
    assert "| speed-up |" in table and table.count("\n") == 5
    with pytest.raises(ValueError, match="exceeds"):
        benchmark_inference.benchmark([student], [1], seq_len=65)
    assert jax.devices()  # the benchmark left the backend usable


def test_summary_takes_per_metric_medians_and_the_best_grid_point():
    def record(lr, seed, f1, acc):
        key = {"learning_rate": lr, "epochs": 3.0, "seed": seed}
        return {"key": key, "metrics": {"f1": f1, "accuracy": acc}, "score": (f1 + acc) / 2}

    records = [
        record(2e-5, 0, 80.0, 70.0),
        record(2e-5, 1, 90.0, 72.0),
        record(2e-5, 2, 85.0, 90.0),  # medians: f1 85, accuracy 72, score 78.5
        record(5e-5, 0, 70.0, 70.0),
        record(5e-5, 1, 95.0, 95.0),  # medians of two: 82.5 / 82.5, score 82.5
    ]
    summary = protocol.summarise(get_task("mrpc"), records)
    assert summary["learning_rate"] == 5e-5 and summary["seeds"] == 2
    assert summary["score"] == 82.5 and summary["metrics"] == {"f1": 82.5, "accuracy": 82.5}
    other = next(g for g in summary["grid"] if g["learning_rate"] == 2e-5)
    assert other["metrics"] == {"f1": 85.0, "accuracy": 72.0} and other["score"] == 78.5
    assert (other["score_min"], other["score_max"]) == (75.0, 87.5)
