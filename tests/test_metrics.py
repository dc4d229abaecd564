"""Metrics on hand-made logits: top-k, loss, confusion matrix, ECE, macro scores, ReaL, streaming."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vitcli.eval import metrics


def _logits(probs) -> torch.Tensor:
    """Logits whose softmax is exactly `probs`."""
    return torch.tensor(probs, dtype=torch.float64).log().float()


# 3 classes, 6 images. argmax per row: 0, 1, 1, 2, 0, 2 ; targets 0, 0, 1, 2, 2, 2
PROBS = [
    [0.70, 0.20, 0.10],
    [0.30, 0.60, 0.10],
    [0.10, 0.80, 0.10],
    [0.05, 0.05, 0.90],
    [0.50, 0.15, 0.35],
    [0.20, 0.30, 0.50],
]
TARGETS = [0, 0, 1, 2, 2, 2]
CM = np.array([[1, 1, 0], [0, 1, 0], [1, 0, 2]])


def test_confusion_matrix_and_topk():
    logits = _logits(PROBS)
    preds = logits.argmax(1)
    assert (metrics.confusion_matrix(preds, TARGETS, 3) == CM).all()
    assert metrics.topk_correct(logits, TARGETS, (1, 2, 5)) == {1: 4, 2: 6, 5: 6}  # k capped at 3 classes


def test_topk_is_timms_accuracy():
    from timm.utils import accuracy

    g = torch.Generator().manual_seed(0)
    logits, targets = torch.randn(200, 12, generator=g), torch.randint(0, 12, (200,), generator=g)
    ours = metrics.topk_correct(logits, targets, (1, 5))
    t1, t5 = accuracy(logits, targets, topk=(1, 5))
    assert 100 * ours[1] / 200 == pytest.approx(float(t1))
    assert 100 * ours[5] / 200 == pytest.approx(float(t5))


def test_per_class_and_macro_scores():
    stats = metrics.per_class_stats(CM)
    assert stats["support"].tolist() == [2, 1, 3]
    np.testing.assert_allclose(stats["recall"], [1 / 2, 1, 2 / 3])  # per-class accuracy
    np.testing.assert_allclose(stats["precision"], [1 / 2, 1 / 2, 1])
    f1 = [2 * p * r / (p + r) for p, r in zip(stats["precision"], stats["recall"])]
    np.testing.assert_allclose(stats["f1"], f1)
    macro = metrics.macro_scores(CM)
    assert macro["recall"] == pytest.approx((1 / 2 + 1 + 2 / 3) / 3)
    assert macro["precision"] == pytest.approx((1 / 2 + 1 / 2 + 1) / 3)
    assert macro["f1"] == pytest.approx(sum(f1) / 3)


def test_macro_ignores_absent_classes_and_never_predicted_has_precision_zero():
    cm = np.zeros((5, 5), dtype=int)
    cm[0, 0], cm[0, 1], cm[1, 1] = 3, 1, 2  # classes 2-4 absent; class 1 predicted for a class-0 image
    macro = metrics.macro_scores(cm)
    assert macro["recall"] == pytest.approx((3 / 4 + 1) / 2)
    assert macro["precision"] == pytest.approx((1 + 2 / 3) / 2)
    stats = metrics.per_class_stats(cm)
    assert math.isnan(stats["recall"][3]) and stats["precision"][3] == 0


def test_ece_by_hand():
    # two classes; confidences 0.95 (right), 0.83 (wrong), 0.71 (right), 0.62 (right): one per bin
    probs = [[0.95, 0.05], [0.83, 0.17], [0.29, 0.71], [0.62, 0.38]]
    targets = [0, 1, 1, 0]
    expected = (0.05 + 0.83 + 0.29 + 0.38) / 4
    assert metrics.expected_calibration_error(np.array(probs), targets) == pytest.approx(expected)
    # two in the same bin (14: (0.933, 1]): |mean acc - mean conf| weighted by the bin's share
    probs = [[0.95, 0.05], [0.94, 0.06]]
    assert metrics.expected_calibration_error(np.array(probs), [0, 1]) == pytest.approx(abs(0.5 - 0.945))
    # perfectly calibrated at 1.0
    assert metrics.expected_calibration_error(np.array([[1.0, 0.0]]), [0]) == 0


def test_calibration_bins_edges():
    count, _, _ = metrics.calibration_bins([0.0, 1 / 15 - 1e-9, 1 / 15 + 1e-9, 1.0], [1, 1, 1, 1], 15)
    assert count[0] == 2 and count[1] == 1 and count[14] == 1


def test_accumulator_streams_like_one_batch():
    logits = _logits(PROBS)
    targets = torch.tensor(TARGETS)
    whole = metrics.MetricAccumulator(3)
    whole.update(logits, targets)
    parts = metrics.MetricAccumulator(3)
    for i in range(0, 6, 4):
        parts.update(logits[i : i + 4], targets[i : i + 4])
    a, b = whole.compute(), parts.compute()
    assert a == pytest.approx(b)
    assert (parts.confusion == CM).all()
    assert a["num_images"] == 6 and a["top1"] == pytest.approx(100 * 4 / 6, abs=1e-3) and a["top5"] == 100.0
    loss = torch.nn.functional.cross_entropy(logits.float(), targets).item()
    assert a["loss"] == pytest.approx(loss, abs=1e-6)
    assert a["ece"] == pytest.approx(100 * metrics.expected_calibration_error(np.array(PROBS), TARGETS), abs=1e-3)
    assert a["macro_recall"] == pytest.approx(100 * (1 / 2 + 1 + 2 / 3) / 3, abs=1e-3)
    assert parts.topk.shape == (6, 3)


def test_most_confused():
    cm = np.array([[5, 2, 0], [4, 1, 1], [0, 2, 9]])
    assert metrics.most_confused(cm, 3) == [(1, 0, 4), (0, 1, 2), (2, 1, 2)]


def test_real_accuracy():
    topk = np.array([[1, 2, 3, 4, 5], [7, 8, 9, 10, 11], [0, 1, 2, 3, 4]])
    real = [[1], [9], []]  # the third image has no real label: left out
    r = metrics.real_accuracy(topk, real)
    assert r == {"num_images": 2, "top1": 50.0, "top5": 100.0}
