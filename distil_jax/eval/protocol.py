"""The evaluation protocol: every (model, task) over a learning-rate x epochs grid and
N seeds; per grid point the median over seeds; per task the best grid point.

Each finished run is appended to `<workdir>/runs.jsonl` at once, so a long
sweep that stops resumes where it was (a run is identified by everything that
changes its result). `results.json` and the report are rewritten after every
task. Scores are in percent, as the paper prints them.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import time

import jax
import numpy as np
from jax.experimental import multihost_utils

from distil_jax import hf, sharding
from distil_jax.data.tokenizer import fingerprint
from distil_jax.eval import features, hf_heads, metrics, report, task_data
from distil_jax.eval.readers import SOURCES
from distil_jax.eval.tasks import TaskSpec, parse_tasks
from distil_jax.eval.trainer import Finetuner, Hyper, TrainSettings
from distil_jax.models import DTYPES, ModelConfig

RUNS_FILE = "runs.jsonl"
RESULTS_FILE = "results.json"
EXPORT_CHOICES = ("none", "best")


# ---------------------------------------------------------------------------- config


def _floats(text: str, field: str) -> list[float]:
    try:
        values = [float(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"config.{field} must be comma-separated numbers, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise ValueError(f"config.{field} must list positive numbers, got {text!r}")
    return values


def validate(config) -> list[TaskSpec]:
    """Fails early, naming the field, on a config that cannot run; returns its tasks."""
    if not config.model:
        raise ValueError("set config.model: a Hugging Face BERT/DistilBERT (or exported) directory")
    tasks = parse_tasks(config.task)
    if config.data_source not in SOURCES:
        raise ValueError(f"config.data_source must be one of {SOURCES}, got {config.data_source!r}")
    _floats(config.learning_rates, "learning_rates")
    _floats(config.epochs, "epochs")
    if config.num_seeds < 1:
        raise ValueError(f"config.num_seeds must be >= 1, got {config.num_seeds}")
    for name, value in (
        ("max_length", config.max_length),
        ("imdb_max_length", config.imdb_max_length),
        ("squad.max_length", config.squad.max_length),
    ):
        if value < 8:
            raise ValueError(f"config.{name} must be >= 8, got {value}")
    if config.dtype not in DTYPES:
        raise ValueError(f"config.dtype must be one of {tuple(DTYPES)}, got {config.dtype!r}")
    if config.export not in EXPORT_CHOICES:
        raise ValueError(f"config.export must be one of {EXPORT_CHOICES}, got {config.export!r}")
    if not 0 <= config.optim.warmup_fraction < 1:
        raise ValueError("config.optim.warmup_fraction must be in [0, 1)")
    return tasks


def grid(config) -> list[Hyper]:
    return [
        Hyper(lr, epochs, config.seed + i)
        for lr in _floats(config.learning_rates, "learning_rates")
        for epochs in _floats(config.epochs, "epochs")
        for i in range(config.num_seeds)
    ]


def data_settings(config) -> task_data.DataSettings:
    return task_data.DataSettings(
        source=config.data_source,
        data_dir=config.data_dir,
        tfds_download=config.tfds_download,
        max_length=config.max_length,
        imdb_max_length=config.imdb_max_length,
        max_train_examples=config.max_train_examples,
        max_eval_examples=config.max_eval_examples,
        imdb_dir=config.imdb_dir,
        squad_dir=config.squad_dir,
        squad_max_length=config.squad.max_length,
        doc_stride=config.squad.doc_stride,
        max_query_length=config.squad.max_query_length,
        max_answer_length=config.squad.max_answer_length,
        n_best=config.squad.n_best,
    )


def train_settings(config, max_length: int) -> TrainSettings:
    return TrainSettings(
        batch_size=config.train_batch_size,
        eval_batch_size=config.eval_batch_size,
        warmup_fraction=config.optim.warmup_fraction,
        b1=config.optim.b1,
        b2=config.optim.b2,
        eps=config.optim.eps,
        weight_decay=config.optim.weight_decay,
        clip_norm=config.optim.clip_norm,
        buckets=tuple(features.bucket_lengths(max_length, config.length_buckets)),
        dtype=config.dtype,
        log_every=config.log_every,
        progress=config.progress,
        fast_compile=config.fast_compile,
    )


def model_roles(config) -> list[tuple[str, str]]:
    """[(role, directory)]: the teacher first when one is given, then the model."""
    roles = [("teacher", config.teacher)] if config.teacher else []
    return roles + [("student" if config.teacher else "model", config.model)]


# ---------------------------------------------------------------------------- run records


class RunStore:
    """Finished runs, one JSON object a line; a run is skipped if its key is present."""

    def __init__(self, workdir: str):
        os.makedirs(workdir, exist_ok=True)
        self.path = os.path.join(workdir, RUNS_FILE)
        self.records: list[dict] = []
        if os.path.exists(self.path):
            with open(self.path) as f:
                self.records = [json.loads(line) for line in f if line.strip()]

    def find(self, key: dict) -> dict | None:
        return next((r for r in self.records if r["key"] == key), None)

    def add(self, record: dict) -> None:
        self.records.append(record)
        if jax.process_index() == 0:  # every process ran it; one writes it
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")


def run_key(config, model_dir: str, task: TaskSpec, hyper: Hyper) -> dict:
    """Everything that changes a run's result (so a changed config does not reuse it)."""
    return {
        "model_dir": os.path.abspath(model_dir),
        "task": task.name,
        "learning_rate": hyper.learning_rate,
        "epochs": hyper.epochs,
        "seed": hyper.seed,
        "data_source": config.data_source,
        "max_length": data_settings(config).length(task),
        "train_batch_size": config.train_batch_size,
        "max_train_examples": config.max_train_examples,
        "max_eval_examples": config.max_eval_examples,
        "optim": config.optim.to_dict(),
        "dtype": config.dtype,
        "hidden_dropout": config.hidden_dropout,
        "tokenizer": config.tokenizer,
        "squad": config.squad.to_dict() if task.kind == "span" else None,
    }


def summarise(task: TaskSpec, records: list[dict]) -> dict:
    """Median over seeds per grid point, each metric on its own; the task score of those
    medians picks the best grid point."""
    points: dict[tuple, list[dict]] = {}
    for r in records:
        points.setdefault((r["key"]["learning_rate"], r["key"]["epochs"]), []).append(r)
    candidates = []
    for (lr, epochs), runs in sorted(points.items()):
        names = runs[0]["metrics"].keys()
        medians = {m: statistics.median(r["metrics"][m] for r in runs) for m in names}
        candidates.append(
            {
                "task": task.name,
                "learning_rate": lr,
                "epochs": epochs,
                "seeds": len(runs),
                "metrics": medians,
                # From the medians, so the table's cell agrees with the metrics shown.
                "score": metrics.task_score(medians),
                "score_min": min(r["score"] for r in runs),
                "score_max": max(r["score"] for r in runs),
            }
        )
    best = max(candidates, key=lambda c: c["score"])
    return {**best, "grid": candidates}


# ---------------------------------------------------------------------------- one (model, task)


def evaluate(finetuner: Finetuner, params, data: task_data.TaskData) -> dict[str, float]:
    """{metric: percent} over every evaluation set of the task."""
    out = {}
    for eval_set in data.evals:
        values = eval_set.score(finetuner.predict(params, eval_set.data))
        out.update({k: 100.0 * v for k, v in values.items()})
    return out


def _check_length(cfg: ModelConfig, length: int, model_dir: str) -> None:
    if length > cfg.max_position_embeddings:
        raise ValueError(
            f"sequence length {length} exceeds the model's max_position_embeddings "
            f"{cfg.max_position_embeddings} ({model_dir}); lower config.max_length (or "
            "imdb_max_length, squad.max_length)"
        )


def train_and_score(finetuner, data, hyper: Hyper, key: dict, role: str) -> tuple[dict, dict]:
    """One run: (its record, its fine-tuned params)."""
    desc = f"{role} {key['task']} lr={hyper.learning_rate:g} ep={hyper.epochs:g} s={hyper.seed}"
    t0 = time.perf_counter()
    params, info = finetuner.train(data.train, hyper, desc)
    values = evaluate(finetuner, params, data)
    logging.info("%s: %s", desc, {k: round(v, 2) for k, v in values.items()})
    record = {
        "key": key,
        "role": role,
        "metrics": values,
        "score": metrics.task_score(values),
        "train_rows": len(data.train),
        "seconds": time.perf_counter() - t0,
        **info,
    }
    return record, params


def export_best(config, loaded, model_dir, task, out_dir, best, records) -> str | None:
    """Writes the best run trained now, unless a run of an earlier invocation beat it
    (its export, if that invocation got to write one, stays)."""
    score, params = best
    if jax.process_index() != 0:
        return None
    if params is not None and score >= max(r["score"] for r in records):
        id2label = dict(enumerate(task.labels)) if task.labels else None
        tokenizer_dir = config.tokenizer or model_dir
        return hf_heads.save_task_model(
            loaded.cfg, loaded.head, params, out_dir, tokenizer_dir, id2label
        )
    if os.path.isdir(out_dir):
        return out_dir
    logging.warning("%s: the best run's weights were not kept (an earlier invocation)", out_dir)
    return None


def run_task(config, role, model_dir, task, data, mesh, store, workdir) -> dict:
    """All grid runs of one model on one task (skipping finished ones); its summary."""
    length = data_settings(config).length(task)
    loaded = hf_heads.load_task_model(model_dir, task.kind, task.num_labels, config.hidden_dropout)
    _check_length(loaded.cfg, length, model_dir)
    finetuner = Finetuner(loaded, mesh, train_settings(config, length))
    best, records = (-np.inf, None), []
    for hyper in grid(config):
        key = run_key(config, model_dir, task, hyper)
        record = store.find(key)
        if record is None:
            record, params = train_and_score(finetuner, data, hyper, key, role)
            store.add(record)
            if config.export == "best" and record["score"] > best[0]:
                # One host copy at most; gathered from every process's shards.
                best = (record["score"], multihost_utils.process_allgather(params, tiled=True))
        records.append(record)
    summary = summarise(task, records)
    if config.export == "best":
        out_dir = os.path.join(workdir, "export", role, task.name)
        summary["export_dir"] = export_best(config, loaded, model_dir, task, out_dir, best, records)
    return summary


# ---------------------------------------------------------------------------- the sweep


def run(config, workdir: str) -> dict:
    """Fine-tunes and scores every model on every task; writes results.json and report.md."""
    tasks = validate(config)
    mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor)
    store = RunStore(workdir)
    settings = data_settings(config)
    results: dict = {"models": {}, "tasks": [t.name for t in tasks]}
    data_cache: dict[tuple, task_data.TaskData] = {}
    for role, name in model_roles(config):
        model_dir = hf.resolve_model_dir(name)
        cfg = ModelConfig.from_hf_file(model_dir)
        tokenizer = features.model_tokenizer(model_dir, config.tokenizer, cfg)
        entry = results["models"].setdefault(role, {"model_dir": model_dir, "tasks": {}})
        for task in tasks:
            # Teacher and student usually share a tokenizer: tokenise each task once.
            cache_key = (task.name, fingerprint(tokenizer))
            if cache_key not in data_cache:
                data_cache[cache_key] = task_data.load_task(task, tokenizer, settings)
                logging.info("%s", data_cache[cache_key].describe())
            entry["tasks"][task.name] = run_task(
                config, role, model_dir, task, data_cache[cache_key], mesh, store, workdir
            )
            write_results(results, workdir, config)
    return results


def write_results(results: dict, workdir: str, config) -> None:
    if jax.process_index() != 0:
        return
    with open(os.path.join(workdir, RESULTS_FILE), "w") as f:
        json.dump(results, f, indent=2)
    text = report.render(results, include_paper=config.report_paper_rows)
    with open(os.path.join(workdir, "report.md"), "w") as f:
        f.write(text)
