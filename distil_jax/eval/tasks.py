"""The downstream tasks: what each one reads, predicts and is scored by.

One `TaskSpec` per task is the single source of truth for the readers (TFDS
field names, local TSV columns and files), the head (classification over
`labels`, regression, or span extraction) and the metrics. Label indices
follow TFDS's `ClassLabel` order, so the local and TFDS readers agree and a
model fine-tuned on one scores on the other.
"""

from __future__ import annotations

import dataclasses

GLUE_TASKS = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli")
TABLE2_TASKS = ("imdb", "squad")
KINDS = ("classification", "regression", "span")


@dataclasses.dataclass(frozen=True)
class LocalLayout:
    """Where a task lives in a local directory (the `download_glue_data.py` layout)."""

    directory: str  # sub-directory of the data root, e.g. "SST-2"
    files: dict[str, str]  # split -> file name, e.g. {"train": "train.tsv"}
    header: bool  # False: columns are addressed by position (CoLA)
    text_columns: tuple  # header names, or indices when header is False
    label_column: str | int
    # QQP's official train.tsv has a few rows with missing fields: the reference
    # processors skip them, so we do too (and say how many). Elsewhere a short row
    # is an error.
    skip_malformed: bool = False


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    name: str  # the command-line name, e.g. "sst2"
    display: str  # the paper's column header, e.g. "SST-2"
    benchmark: str  # "glue", "imdb" or "squad": which report table it belongs to
    kind: str  # one of KINDS
    labels: tuple[str, ...]  # class names in TFDS order (index = class id); () otherwise
    metrics: tuple[str, ...]  # names in `metrics.METRIC_FUNCTIONS`, or SQuAD's
    eval_splits: tuple[str, ...]  # labelled evaluation splits (GLUE dev sets)
    tfds_name: str
    tfds_text_fields: tuple[str, ...]  # one field (single sentence) or two (pair)
    local: LocalLayout
    value_range: tuple[float, float] | None = None  # regression targets must lie in it

    @property
    def num_labels(self) -> int:
        """Outputs of the head: classes, 1 for regression, 2 (start, end) for spans."""
        if self.kind == "classification":
            return len(self.labels)
        return 1 if self.kind == "regression" else 2


def _pair_layout(directory, a, b, label, dev="dev.tsv", **kw) -> LocalLayout:
    return LocalLayout(
        directory, {"train": "train.tsv", "validation": dev}, True, (a, b), label, **kw
    )


TASKS: dict[str, TaskSpec] = {
    t.name: t
    for t in [
        TaskSpec(
            "cola",
            "CoLA",
            "glue",
            "classification",
            ("unacceptable", "acceptable"),
            ("mcc",),
            ("validation",),
            "glue/cola",
            ("sentence",),
            # No header: source, label, original mark, sentence.
            LocalLayout("CoLA", {"train": "train.tsv", "validation": "dev.tsv"}, False, (3,), 1),
        ),
        TaskSpec(
            "sst2",
            "SST-2",
            "glue",
            "classification",
            ("negative", "positive"),
            ("accuracy",),
            ("validation",),
            "glue/sst2",
            ("sentence",),
            LocalLayout(
                "SST-2",
                {"train": "train.tsv", "validation": "dev.tsv"},
                True,
                ("sentence",),
                "label",
            ),
        ),
        TaskSpec(
            "mrpc",
            "MRPC",
            "glue",
            "classification",
            ("not_equivalent", "equivalent"),
            ("f1", "accuracy"),
            ("validation",),
            "glue/mrpc",
            ("sentence1", "sentence2"),
            _pair_layout("MRPC", "#1 String", "#2 String", "Quality"),
        ),
        TaskSpec(
            "stsb",
            "STS-B",
            "glue",
            "regression",
            (),
            ("pearson", "spearman"),
            ("validation",),
            "glue/stsb",
            ("sentence1", "sentence2"),
            _pair_layout("STS-B", "sentence1", "sentence2", "score"),
            value_range=(0.0, 5.0),
        ),
        TaskSpec(
            "qqp",
            "QQP",
            "glue",
            "classification",
            ("not_duplicate", "duplicate"),
            ("f1", "accuracy"),
            ("validation",),
            "glue/qqp",
            ("question1", "question2"),
            _pair_layout("QQP", "question1", "question2", "is_duplicate", skip_malformed=True),
        ),
        TaskSpec(
            "mnli",
            "MNLI",
            "glue",
            "classification",
            ("entailment", "neutral", "contradiction"),
            ("accuracy",),
            ("validation_matched", "validation_mismatched"),
            "glue/mnli",
            ("premise", "hypothesis"),
            LocalLayout(
                "MNLI",
                {
                    "train": "train.tsv",
                    "validation_matched": "dev_matched.tsv",
                    "validation_mismatched": "dev_mismatched.tsv",
                },
                True,
                ("sentence1", "sentence2"),
                "gold_label",
            ),
        ),
        TaskSpec(
            "qnli",
            "QNLI",
            "glue",
            "classification",
            ("entailment", "not_entailment"),
            ("accuracy",),
            ("validation",),
            "glue/qnli",
            ("question", "sentence"),
            _pair_layout("QNLI", "question", "sentence", "label"),
        ),
        TaskSpec(
            "rte",
            "RTE",
            "glue",
            "classification",
            ("entailment", "not_entailment"),
            ("accuracy",),
            ("validation",),
            "glue/rte",
            ("sentence1", "sentence2"),
            _pair_layout("RTE", "sentence1", "sentence2", "label"),
        ),
        TaskSpec(
            "wnli",
            "WNLI",
            "glue",
            "classification",
            ("not_entailment", "entailment"),
            ("accuracy",),
            ("validation",),
            "glue/wnli",
            ("sentence1", "sentence2"),
            _pair_layout("WNLI", "sentence1", "sentence2", "label"),
        ),
        TaskSpec(
            "imdb",
            "IMDb",
            "imdb",
            "classification",
            ("neg", "pos"),
            ("accuracy",),
            ("test",),  # IMDb has no dev set; the paper reports test accuracy
            "imdb_reviews",
            ("text",),
            LocalLayout(
                "IMDb", {"train": "train.tsv", "test": "test.tsv"}, True, ("sentence",), "label"
            ),
        ),
        TaskSpec(
            "squad",
            "SQuAD",
            "squad",
            "span",
            (),
            ("exact_match", "f1"),
            ("validation",),
            "squad/v1.1",
            ("question", "context"),
            LocalLayout(
                "SQuAD",
                {"train": "train-v1.1.json", "validation": "dev-v1.1.json"},
                True,
                (),
                "",
            ),
        ),
    ]
}

GROUPS = {"glue": GLUE_TASKS, "all": GLUE_TASKS + TABLE2_TASKS}


def get_task(name: str) -> TaskSpec:
    key = name.strip().lower().replace("-", "").replace("_", "")
    if key not in TASKS:
        raise ValueError(
            f"unknown task {name!r}; known tasks: {', '.join(TASKS)} (or the groups "
            f"{', '.join(repr(g) for g in GROUPS)})"
        )
    return TASKS[key]


def parse_tasks(spec: str) -> list[TaskSpec]:
    """'sst2', 'sst2,mrpc,cola', 'glue' (the nine GLUE tasks) or 'all' (+ IMDb, SQuAD)."""
    names: list[str] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        names.extend(GROUPS.get(part.lower(), (part,)))
    if not names:
        raise ValueError("no task given: set config.task (e.g. 'sst2', 'glue' or 'all')")
    seen: dict[str, TaskSpec] = {}
    for n in names:
        task = get_task(n)
        seen.setdefault(task.name, task)
    return list(seen.values())


def label_index(task: TaskSpec, token: str) -> int:
    """A label as written in a file (class name or its index) -> its class index.

    Raises ValueError for anything outside the task's label set.
    """
    token = token.strip()
    if token in task.labels:
        return task.labels.index(token)
    if token.lstrip("-").isdigit() and 0 <= int(token) < len(task.labels):
        return int(token)
    raise ValueError(
        f"label {token!r} is outside {task.display}'s label set "
        f"{list(task.labels)} (or their indices 0..{len(task.labels) - 1})"
    )


def regression_value(task: TaskSpec, token: str) -> float:
    """A regression target as written in a file -> float, checked against the task's range."""
    try:
        value = float(token)
    except ValueError:
        raise ValueError(f"{task.display} target {token!r} is not a number") from None
    low, high = task.value_range or (float("-inf"), float("inf"))
    if not low <= value <= high:  # also rejects NaN
        raise ValueError(f"{task.display} target {value} is outside [{low}, {high}]")
    return value


def parse_label(task: TaskSpec, token) -> int | float:
    """Class index (classification) or float target (regression) of one raw label."""
    if task.kind == "regression":
        return regression_value(task, str(token))
    return label_index(task, str(token))
