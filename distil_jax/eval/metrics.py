"""GLUE and SQuAD metrics in plain numpy, as the benchmarks define them.

Every function returns a fraction in [0, 1] (correlations in [-1, 1]); the
report multiplies by 100. No scipy / sklearn: the formulas are short and
having them here pins down the tie and degenerate-case conventions.
"""

from __future__ import annotations

import collections
import re
import string

import numpy as np

# ---------------------------------------------------------------------------- classification


def accuracy(preds, labels) -> float:
    preds, labels = np.asarray(preds), np.asarray(labels)
    _check_same_length(preds, labels)
    return float(np.mean(preds == labels))


def binary_f1(preds, labels, positive: int = 1) -> float:
    """F1 of the positive class (GLUE's MRPC / QQP); 0 when there is no true positive."""
    preds, labels = np.asarray(preds), np.asarray(labels)
    _check_same_length(preds, labels)
    tp = np.sum((preds == positive) & (labels == positive))
    fp = np.sum((preds == positive) & (labels != positive))
    fn = np.sum((preds != positive) & (labels == positive))
    if tp == 0:
        return 0.0
    return float(2 * tp / (2 * tp + fp + fn))


def matthews_corrcoef(preds, labels) -> float:
    """Matthews correlation (CoLA), multi-class form; 0 when either side is constant.

    With the confusion matrix C, t_k = row sums (true), p_k = column sums
    (predicted), c = trace, s = total:
        MCC = (c*s - t.p) / sqrt((s^2 - p.p) * (s^2 - t.t))
    which reduces to (TP*TN - FP*FN) / sqrt(...) for two classes.
    """
    preds, labels = np.asarray(preds), np.asarray(labels)
    _check_same_length(preds, labels)
    classes, codes = np.unique(np.concatenate([labels, preds]), return_inverse=True)
    true_codes, pred_codes = codes[: len(labels)], codes[len(labels) :]
    k = len(classes)
    confusion = np.zeros((k, k), np.float64)
    np.add.at(confusion, (true_codes, pred_codes), 1.0)
    t, p = confusion.sum(axis=1), confusion.sum(axis=0)
    c, s = np.trace(confusion), confusion.sum()
    denominator = np.sqrt((s * s - p @ p) * (s * s - t @ t))
    if denominator == 0:
        return 0.0
    return float((c * s - t @ p) / denominator)


# ---------------------------------------------------------------------------- regression


def pearson(x, y) -> float:
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    _check_same_length(x, y)
    xc, yc = x - x.mean(), y - y.mean()
    denominator = np.sqrt(np.sum(xc * xc) * np.sum(yc * yc))
    if denominator == 0:
        return 0.0  # a constant prediction carries no correlation
    return float(np.sum(xc * yc) / denominator)


def average_ranks(x) -> np.ndarray:
    """1-based ranks; tied values share the mean of their ranks (as Spearman needs)."""
    x = np.asarray(x, np.float64)
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), np.float64)
    sorted_x = x[order]
    start = 0
    while start < len(x):
        end = start
        while end + 1 < len(x) and sorted_x[end + 1] == sorted_x[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2.0 + 1.0
        start = end + 1
    return ranks


def spearman(x, y) -> float:
    """Pearson correlation of the average ranks (handles ties like scipy.stats.spearmanr)."""
    return pearson(average_ranks(x), average_ranks(y))


def _check_same_length(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"{a.shape[0]} predictions for {b.shape[0]} labels")
    if a.shape[0] == 0:
        raise ValueError("no examples to score")


# ---------------------------------------------------------------------------- GLUE

METRIC_FUNCTIONS = {
    "accuracy": accuracy,
    "f1": binary_f1,
    "mcc": matthews_corrcoef,
    "pearson": pearson,
    "spearman": spearman,
}


def compute(metric_names, preds, labels) -> dict[str, float]:
    """{metric name: fraction} for the names a task lists (see `tasks.TaskSpec.metrics`)."""
    unknown = [m for m in metric_names if m not in METRIC_FUNCTIONS]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; known: {sorted(METRIC_FUNCTIONS)}")
    return {m: METRIC_FUNCTIONS[m](preds, labels) for m in metric_names}


def task_score(values: dict[str, float]) -> float:
    """One number per task: the mean of its metrics, GLUE's convention for two-metric tasks."""
    if not values:
        raise ValueError("a task score needs at least one metric")
    return float(np.mean(list(values.values())))


def macro_score(task_scores: dict[str, float]) -> float:
    """The GLUE score: unweighted mean over tasks."""
    if not task_scores:
        raise ValueError("a macro score needs at least one task")
    return float(np.mean(list(task_scores.values())))


# ---------------------------------------------------------------------------- SQuAD v1.1

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """The official SQuAD v1.1 normalisation: lower, drop punctuation and articles, squeeze spaces.

    The order matters and is the script's: punctuation goes before articles are
    matched, so "the-cat" becomes "thecat" and keeps its "the".
    """
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def squad_exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def squad_f1(prediction: str, gold: str) -> float:
    """Bag-of-tokens F1 between the normalised strings."""
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    common = collections.Counter(pred_tokens) & collections.Counter(gold_tokens)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(pred_tokens)
    recall = overlap / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def squad_scores(predictions: dict[str, str], golds: dict[str, list[str]]) -> dict[str, float]:
    """Exact match and F1 as fractions, each the max over the gold answers, averaged over
    questions. A question without a prediction scores 0 (as the official script does)."""
    if not golds:
        raise ValueError("no SQuAD questions to score")
    em = f1 = 0.0
    for qid, answers in golds.items():
        if not answers:
            raise ValueError(f"question {qid!r} has no gold answer")
        pred = predictions.get(qid)
        if pred is None:
            continue
        em += max(squad_exact_match(pred, a) for a in answers)
        f1 += max(squad_f1(pred, a) for a in answers)
    return {"exact_match": em / len(golds), "f1": f1 / len(golds)}
