"""Multi-label metrics from sigmoid scores and multi-hot targets (numpy; no model, no I/O).

Conventions:
  - AP of a class (average precision, as scikit-learn's `average_precision_score` and timm's
    `mAPMeter`): sum over the ranked images of (recall_n - recall_(n-1)) x precision_n, ties in score
    ranked together; undefined (NaN) for a class with no positive image;
  - mAP: the mean AP over the classes with at least one positive image;
  - at a threshold, an image has label c when its score for c is at or above threshold c. Micro
    precision/recall/F1 pool every (image, class) decision; macro ones average the per-class values over
    the classes with positives (a class never predicted has precision 0);
  - per-class thresholds (`choose_thresholds`) maximise each class's F1 on a held-out split, shrunk
    towards 0.5 by a prior of `PRIOR` positives; a class without positives there keeps 0.5.
Percentages are returned as 0-100 floats.
"""

from __future__ import annotations

import numpy as np

DEFAULT_THRESHOLD = 0.5
# The F1-best threshold of a class with a handful of held-out positives is noise: on 64 validation mosaics
# (5-16 positives per class, benchmarks/multilabel.py) the raw ones spread from 0.11 to 0.92 and gave the
# exact label set of 48.3 % of the test mosaics, against 55.0 % at 0.5 for all and 57.5 % shrunk with
# this prior (5 or 20: 57.5 / 58.3 %). A class needs many more positives than this to move far from 0.5.
PRIOR = 10


def sigmoid(logits) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))


def _ranked(scores, targets):
    """Per distinct score, best first: (cumulative true positives, cumulative predictions, that score)."""
    order = np.argsort(-scores, kind="stable")
    s, t = scores[order], targets[order].astype(np.float64)
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # the last image of each run of equal scores
    return np.cumsum(t)[last], last + 1.0, s[last]


def average_precision(scores, targets) -> float:
    """AP of one class: scores (N,), targets (N,) of 0/1. NaN without a positive."""
    scores, targets = np.asarray(scores, dtype=np.float64), np.asarray(targets)
    positives = targets.sum()
    if positives == 0:
        return float("nan")
    tp, predicted, _ = _ranked(scores, targets)
    recall = tp / positives
    return float(np.sum(np.diff(np.r_[0.0, recall]) * tp / predicted))


def per_class_ap(scores, targets) -> np.ndarray:
    scores, targets = np.asarray(scores), np.asarray(targets)
    return np.array([average_precision(scores[:, c], targets[:, c]) for c in range(scores.shape[1])])


def mean_ap(ap: np.ndarray) -> float:
    present = ~np.isnan(ap)
    return float(np.mean(ap[present])) if present.any() else 0.0


def counts(scores, targets, thresholds) -> dict[str, np.ndarray]:
    """Per class: true positives, false positives, false negatives, support at the thresholds."""
    predicted = np.asarray(scores) >= np.asarray(thresholds, dtype=np.float64)[None, :]
    truth = np.asarray(targets).astype(bool)
    return {
        "tp": (predicted & truth).sum(0),
        "fp": (predicted & ~truth).sum(0),
        "fn": (~predicted & truth).sum(0),
        "support": truth.sum(0),
        "predicted": predicted.sum(0),
    }


def _prf(tp, fp, fn):
    precision = np.divide(tp, tp + fp, out=np.zeros(np.shape(tp), dtype=np.float64), where=(tp + fp) > 0)
    recall = np.divide(tp, tp + fn, out=np.zeros(np.shape(tp), dtype=np.float64), where=(tp + fn) > 0)
    both = precision + recall
    f1 = np.divide(2 * precision * recall, both, out=np.zeros(np.shape(tp), dtype=np.float64), where=both > 0)
    return precision, recall, f1


def threshold_scores(scores, targets, thresholds) -> dict:
    """Micro and macro precision / recall / F1 (%), exact-set accuracy (%) and the per-class values."""
    c = counts(scores, targets, thresholds)
    micro = _prf(c["tp"].sum(), c["fp"].sum(), c["fn"].sum())
    precision, recall, f1 = _prf(c["tp"], c["fp"], c["fn"])
    present = c["support"] > 0
    macro = [float(np.mean(v[present])) if present.any() else 0.0 for v in (precision, recall, f1)]
    predicted = np.asarray(scores) >= np.asarray(thresholds)[None, :]
    exact = float(np.mean((predicted == np.asarray(targets).astype(bool)).all(1))) if len(predicted) else 0.0
    pct = lambda v: round(100.0 * float(v), 4)
    return {
        "micro_precision": pct(micro[0]),
        "micro_recall": pct(micro[1]),
        "micro_f1": pct(micro[2]),
        "macro_precision": pct(macro[0]),
        "macro_recall": pct(macro[1]),
        "macro_f1": pct(macro[2]),
        "exact_match": pct(exact),
        "per_class": {"precision": precision, "recall": recall, "f1": f1, **c},
    }


def choose_thresholds(scores, targets, default: float = DEFAULT_THRESHOLD, prior: float = PRIOR) -> list[float]:
    """Per class, the threshold with the highest F1 on (scores, targets) (half-way between the lowest score
    it takes and the next lower one, so a close score on new images falls the same side), shrunk towards
    `default` as if `prior` positives had voted for it: (n t + prior default) / (n + prior) for a class with
    n positives. A class without positives keeps `default`."""
    scores, targets = np.asarray(scores, dtype=np.float64), np.asarray(targets)
    out = []
    for c in range(scores.shape[1]):
        positives = targets[:, c].sum()
        if positives == 0:
            out.append(default)
            continue
        tp, predicted, at = _ranked(scores[:, c], targets[:, c])
        f1 = 2 * tp / (predicted + positives)
        best = int(np.argmax(f1))
        below = at[best + 1] if best + 1 < len(at) else 0.0
        out.append(round(float((positives * (at[best] + below) / 2 + prior * default) / (positives + prior)), 6))
    return out


def pr_curve(scores, targets) -> tuple[np.ndarray, np.ndarray]:
    """(recall, precision) of one class at each distinct score, best first."""
    scores, targets = np.asarray(scores, dtype=np.float64), np.asarray(targets)
    tp, predicted, _ = _ranked(scores, targets)
    return tp / max(targets.sum(), 1), tp / predicted


def bce(logits, targets) -> float:
    """The training loss: binary cross-entropy of the logits, summed over classes, mean over images."""
    x, y = np.asarray(logits, dtype=np.float64), np.asarray(targets, dtype=np.float64)
    return float(np.mean(np.sum(np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x))), axis=1))) if len(x) else 0.0
