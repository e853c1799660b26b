"""Scores from confusion matrices: by hand, and against scikit-learn on random maps."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix as sk_confusion
from sklearn.metrics import jaccard_score, precision_recall_fscore_support

from snakemap.core.metrics import confusion_matrix, scores
from snakemap.evaluation.calval import pr_curve


def test_hand_computed_with_ignore_and_nodata() -> None:
    true = np.array([0, 0, 1, 1, 2, 255, 2, 1])
    pred = np.array([0, 1, 1, 1, 2, 0, 255, 0])  # 255 in pred: a nodata prediction
    cm = confusion_matrix(true, pred, 3, ignore_index=255)
    assert cm.tolist() == [[1, 1, 0], [1, 2, 0], [0, 0, 1]]
    s = scores(cm, ["a", "b", "c"])
    a, b, c = (s["per_class"][k] for k in "abc")
    assert (a["precision"], a["recall"], a["iou"]) == (0.5, 0.5, 1 / 3)
    assert (b["precision"], b["recall"], b["f1"], b["iou"]) == pytest.approx((2 / 3, 2 / 3, 2 / 3, 0.5))
    assert (c["iou"], c["support"]) == (1.0, 1)
    assert s["overall_accuracy"] == pytest.approx(4 / 6)
    assert s["macro"]["iou"] == pytest.approx((1 / 3 + 0.5 + 1) / 3)
    assert s["micro"]["f1"] == pytest.approx(4 / 6)
    assert s["pixels"] == 6


def test_absent_class_is_undefined_not_zero() -> None:
    s = scores(np.array([[5, 0], [0, 0]]), ["a", "b"])
    assert np.isnan(s["per_class"]["b"]["iou"]) and s["macro"]["iou"] == 1.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_against_scikit_learn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    true = rng.integers(0, 4, 5000)
    pred = np.where(rng.random(5000) < 0.6, true, rng.integers(0, 4, 5000))
    cm = confusion_matrix(true, pred, 4)
    np.testing.assert_array_equal(cm, sk_confusion(true, pred, labels=range(4)))
    s = scores(cm, list("abcd"))
    p, r, f, support = precision_recall_fscore_support(true, pred, labels=range(4), zero_division=0)
    for i, k in enumerate("abcd"):
        assert s["per_class"][k]["precision"] == pytest.approx(p[i])
        assert s["per_class"][k]["recall"] == pytest.approx(r[i])
        assert s["per_class"][k]["f1"] == pytest.approx(f[i])
        assert s["per_class"][k]["support"] == support[i]
    assert s["macro"]["iou"] == pytest.approx(jaccard_score(true, pred, average="macro"))
    assert s["micro"]["iou"] == pytest.approx(jaccard_score(true, pred, average="micro"))
    assert s["macro"]["f1"] == pytest.approx(f.mean())


def test_pr_curve_from_histograms() -> None:
    rng = np.random.default_rng(0)
    probs = rng.integers(0, 251, 4000)
    truth = rng.random(4000) < probs / 250  # calibrated: higher probability, more positives
    pos = np.bincount(probs[truth], minlength=251)
    neg = np.bincount(probs[~truth], minlength=251)
    curve = pr_curve(pos, neg)
    for t in (0, 50, 125, 249):
        hit = probs >= t
        tp = (hit & truth).sum()
        assert curve["precision"][t] == pytest.approx(tp / hit.sum())
        assert curve["recall"][t] == pytest.approx(tp / truth.sum())
    assert curve["recall"][0] == 1.0
