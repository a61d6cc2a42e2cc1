"""A task's tokenised training set and its scored evaluation sets.

Brings the readers, the tokenizer and the metrics together behind one
interface the fine-tuning loop need not look inside: arrays to train on, and
evaluation sets that turn the model's outputs into metrics.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

import numpy as np

from distil_jax.eval import metrics, readers, squad
from distil_jax.eval.features import Encoded, encode_texts
from distil_jax.eval.tasks import TaskSpec


@dataclasses.dataclass
class EvalSet:
    name: str  # the split, e.g. "validation_matched"
    data: Encoded
    score: Callable  # model outputs over `data`, in row order -> {metric: fraction}


@dataclasses.dataclass
class TaskData:
    task: TaskSpec
    train: Encoded
    evals: list[EvalSet]

    def describe(self) -> str:
        sizes = ", ".join(f"{e.name} {len(e.data)}" for e in self.evals)
        return f"{self.task.display}: train {len(self.train)} rows, {sizes}"


@dataclasses.dataclass(frozen=True)
class DataSettings:
    source: str  # "local" or "tfds"
    data_dir: str  # glue_data-style root (local) or TFDS data dir ("" = TFDS default)
    max_length: int  # tokens per sequence for the GLUE tasks
    tfds_download: bool = False  # let TFDS download and prepare a missing dataset
    max_train_examples: int = 0  # 0 = all; else a fixed random subset
    max_eval_examples: int = 0  # 0 = all; else a fixed random subset
    imdb_dir: str = ""  # local IMDb folder; "" = <data_dir>/IMDb
    squad_dir: str = ""  # local SQuAD folder; "" = <data_dir>/SQuAD
    imdb_max_length: int = 512  # tokens per IMDb review (reviews are long)
    squad_max_length: int = 384  # tokens per SQuAD window
    doc_stride: int = 128  # tokens between the starts of consecutive windows
    max_query_length: int = 64  # questions are cut to this many tokens
    max_answer_length: int = 30  # longest answer span considered, in tokens
    n_best: int = 20  # start and end candidates per window when decoding

    def task_dir(self, task: TaskSpec) -> str:
        return {"imdb": self.imdb_dir, "squad": self.squad_dir}.get(task.name, "")

    def length(self, task: TaskSpec) -> int:
        """Tokens per sequence (or per SQuAD window) for `task`."""
        return {"imdb": self.imdb_max_length, "squad": self.squad_max_length}.get(
            task.name, self.max_length
        )


def _suffix(task: TaskSpec, split: str) -> str:
    """Metric-name suffix: none for one eval split; '_matched' / '_mismatched' for MNLI."""
    return "" if len(task.eval_splits) == 1 else "_" + split.removeprefix("validation_")


def classification_score(task: TaskSpec, labels: np.ndarray, suffix: str = "") -> Callable:
    def score(logits: np.ndarray) -> dict[str, float]:  # [N, C]
        preds = logits[:, 0] if task.kind == "regression" else np.argmax(logits, axis=-1)
        values = metrics.compute(task.metrics, preds, labels)
        return {f"{k}{suffix}": v for k, v in values.items()}

    return score


def load_text_task(task: TaskSpec, tokenizer, s: DataSettings) -> TaskData:
    def read(split):
        return readers.read_split(
            task, split, s.source, s.data_dir, s.task_dir(task), s.tfds_download
        )

    train = readers.subset(read("train"), s.max_train_examples)
    evals = []
    for split in task.eval_splits:
        examples = readers.subset(read(split), s.max_eval_examples)
        evals.append(
            EvalSet(
                split,
                encode_texts(tokenizer, examples, s.length(task)),
                classification_score(task, examples.labels, _suffix(task, split)),
            )
        )
    return TaskData(task, encode_texts(tokenizer, train, s.length(task)), evals)


def _read_squad(task: TaskSpec, split: str, s: DataSettings) -> list[squad.SquadExample]:
    if s.source == "tfds":
        return squad.read_squad_tfds(split, s.data_dir, s.tfds_download)
    if s.source != "local":
        raise ValueError(f"unknown data source {s.source!r}; expected one of {readers.SOURCES}")
    folder = s.task_dir(task) or os.path.join(s.data_dir, task.local.directory)
    return squad.read_squad_json(os.path.join(folder, task.local.files[split]))


def _random_subset(items: list, limit: int) -> list:
    return [items[i] for i in readers.subset_indices(len(items), limit)]


def squad_score(examples, features: squad.SpanFeatures, s: DataSettings) -> Callable:
    golds = squad.gold_answers(examples)

    def score(outputs) -> dict[str, float]:
        start_logits, end_logits = outputs  # [F, L] each
        predictions = squad.decode(
            examples, features, start_logits, end_logits, s.n_best, s.max_answer_length
        )
        return metrics.squad_scores(predictions, golds)

    return score


def load_squad_task(task: TaskSpec, tokenizer, s: DataSettings) -> TaskData:
    def features(examples):
        return squad.featurize(
            tokenizer, examples, s.squad_max_length, s.doc_stride, s.max_query_length
        )

    train = _random_subset(_read_squad(task, "train", s), s.max_train_examples)
    dev = _random_subset(_read_squad(task, "validation", s), s.max_eval_examples)
    dev_features = features(dev)
    evals = [EvalSet("validation", dev_features.encoded, squad_score(dev, dev_features, s))]
    return TaskData(task, features(train).encoded, evals)


def load_task(task: TaskSpec, tokenizer, s: DataSettings) -> TaskData:
    if task.kind == "span":
        return load_squad_task(task, tokenizer, s)
    return load_text_task(task, tokenizer, s)
