"""GLUE and SQuAD metrics against values worked out by hand."""

import math

import numpy as np
import pytest

from distil_jax.eval import metrics

# preds / labels with TP=2, FP=1, FN=1, TN=1.
PREDS = [1, 1, 0, 0, 1]
LABELS = [1, 0, 0, 1, 1]


def test_accuracy_and_f1():
    assert metrics.accuracy(PREDS, LABELS) == pytest.approx(3 / 5)
    # F1 = 2TP / (2TP + FP + FN) = 4 / 6.
    assert metrics.binary_f1(PREDS, LABELS) == pytest.approx(2 / 3)
    assert metrics.binary_f1([0, 0], [1, 1]) == 0.0  # no true positive


def test_matthews_binary():
    # (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (2 - 1) / sqrt(3*3*2*2) = 1/6.
    assert metrics.matthews_corrcoef(PREDS, LABELS) == pytest.approx(1 / 6)
    assert metrics.matthews_corrcoef([1, 0, 1], [1, 0, 1]) == pytest.approx(1.0)
    assert metrics.matthews_corrcoef([1, 0, 1], [0, 1, 0]) == pytest.approx(-1.0)
    # A constant prediction (a CoLA model that says "acceptable" to everything) scores 0.
    assert metrics.matthews_corrcoef([1, 1, 1, 1], [1, 0, 1, 0]) == 0.0


def test_matthews_multiclass():
    # Confusion (rows true, columns predicted): [[1,1,0],[0,2,0],[1,0,1]].
    # t = (2,2,2), p = (2,3,1), c = 4, s = 6:
    # (c*s - t.p) / sqrt((s^2 - p.p)(s^2 - t.t)) = (24 - 12) / sqrt(22 * 24).
    labels = [0, 0, 1, 1, 2, 2]
    preds = [0, 1, 1, 1, 2, 0]
    assert metrics.matthews_corrcoef(preds, labels) == pytest.approx(12 / math.sqrt(528))


def test_pearson_and_spearman():
    # Centred x = (-1.5,-.5,.5,1.5), y = (-3,-1,0,4): 11 / sqrt(5 * 26).
    assert metrics.pearson([1, 2, 3, 4], [2, 4, 5, 9]) == pytest.approx(11 / math.sqrt(130))
    # Ties share their average rank: x -> (1, 2.5, 2.5, 4), y -> (1, 3, 2, 4);
    # centred (-1.5,0,0,1.5) and (-1.5,.5,-.5,1.5): 4.5 / sqrt(4.5 * 5).
    np.testing.assert_array_equal(metrics.average_ranks([1, 2, 2, 3]), [1, 2.5, 2.5, 4])
    assert metrics.spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(4.5 / math.sqrt(22.5))
    # Monotone but not linear: Spearman 1, Pearson below.
    x = [0.0, 1.0, 2.0, 3.0, 4.0]
    y = [v**3 for v in x]
    assert metrics.spearman(x, y) == pytest.approx(1.0)
    assert metrics.pearson(x, y) < 0.95
    assert metrics.pearson([1, 1, 1], [1, 2, 3]) == 0.0


def test_agrees_with_scipy_when_installed():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 6, 50).astype(float)  # many ties
    y = x + rng.normal(size=50)
    assert metrics.spearman(x, y) == pytest.approx(stats.spearmanr(x, y)[0])
    assert metrics.pearson(x, y) == pytest.approx(stats.pearsonr(x, y)[0])


def test_glue_compute_and_scores():
    values = metrics.compute(("f1", "accuracy"), PREDS, LABELS)
    assert values == pytest.approx({"f1": 2 / 3, "accuracy": 3 / 5})
    assert metrics.task_score(values) == pytest.approx((2 / 3 + 3 / 5) / 2)
    assert metrics.macro_score({"a": 0.5, "b": 1.0}) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="unknown metrics"):
        metrics.compute(("bleu",), PREDS, LABELS)
    with pytest.raises(ValueError, match="predictions for"):
        metrics.accuracy([1, 0], [1])


def test_squad_normalisation():
    assert metrics.normalize_answer("The  Cat!") == "cat"
    assert metrics.normalize_answer("an apple, a pear") == "apple pear"
    # Punctuation goes first, so a hyphenated article survives as part of a word.
    assert metrics.normalize_answer("the-cat") == "thecat"
    assert metrics.normalize_answer("Theatre") == "theatre"  # 'the' only as a whole word


def test_squad_exact_match_and_f1():
    assert metrics.squad_exact_match("The cat.", "cat") == 1.0
    # "cat sat" vs "cat sat on": overlap 2, precision 1, recall 2/3 -> F1 0.8.
    assert metrics.squad_f1("the cat sat", "a cat sat on") == pytest.approx(0.8)
    assert metrics.squad_f1("dog", "cat") == 0.0
    # Max over gold answers, mean over questions; a missing prediction scores 0.
    scores = metrics.squad_scores(
        {"q1": "cat sat", "q2": "blue"},
        {"q1": ["a dog", "the cat sat on"], "q2": ["Blue!"], "q3": ["x"]},
    )
    assert scores["exact_match"] == pytest.approx(1 / 3)
    assert scores["f1"] == pytest.approx((0.8 + 1.0 + 0.0) / 3)
