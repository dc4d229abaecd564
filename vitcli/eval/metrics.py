"""Classification metrics from logits, accumulated batch by batch (torch + numpy, no model, no I/O).

`MetricAccumulator.update(logits, targets)` keeps only what the metrics need (counts, a confusion
matrix, calibration bins and each image's top-5), so a 50 000-image evaluation never holds every logit.
Conventions, chosen to match timm's `validate.py` where it has one:
  - top-k counts a hit when the target is among the k highest logits, k capped at the class count
    (timm's `accuracy`: top-5 of a 2-class model is 100 %);
  - loss is the mean cross-entropy (natural log) of the float32 logits;
  - ECE (Guo et al. 2017): 15 equal-width bins (lo, hi] on the top-1 softmax confidence,
    sum over bins of (bin size / N) * |accuracy - mean confidence|;
  - macro precision/recall/F1 average over the classes present in the targets (support > 0), so a
    100-image subset of a 1000-class problem is not dragged down by 900 absent classes; a class never
    predicted has precision 0;
  - ImageNet ReaL (Beyer et al. 2020): the top-1 is right when it is in the image's set of real labels;
    images whose set is empty are left out, as in timm's `RealLabelsImagenet`.
Percentages are returned as 0-100 floats.
"""

from __future__ import annotations

import numpy as np

ECE_BINS = 15


def _np(x):
    """A torch tensor or array-like -> numpy array (on CPU)."""
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def topk_indices(logits, k: int):
    """(N, C) logits -> (N, min(k, C)) class indices, best first."""
    import torch

    logits = torch.as_tensor(logits)
    return logits.topk(min(k, logits.shape[-1]), dim=-1).indices


def topk_correct(logits, targets, ks=(1, 5)) -> dict[int, int]:
    """How many rows have their target among the k highest logits, for each k (k capped at C)."""
    import torch

    targets = torch.as_tensor(targets).reshape(-1, 1)
    top = topk_indices(logits, max(ks))
    hits = top == targets  # (N, K)
    return {k: int(hits[:, : min(k, top.shape[1])].any(dim=1).sum()) for k in ks}


def confusion_matrix(preds, targets, num_classes: int) -> np.ndarray:
    """(C, C) counts, rows = true class, columns = predicted class."""
    preds, targets = _np(preds).astype(np.int64).ravel(), _np(targets).astype(np.int64).ravel()
    return np.bincount(targets * num_classes + preds, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes
    )


def calibration_bins(confidence, correct, n_bins: int = ECE_BINS):
    """Per-bin (count, sum of confidence, sum of correct) for equal-width bins (lo, hi] over [0, 1]."""
    confidence = _np(confidence).astype(np.float64).ravel()
    correct = _np(correct).astype(np.float64).ravel()
    index = np.clip(np.ceil(confidence * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    count = np.bincount(index, minlength=n_bins).astype(np.float64)
    conf_sum = np.bincount(index, weights=confidence, minlength=n_bins)
    correct_sum = np.bincount(index, weights=correct, minlength=n_bins)
    return count, conf_sum, correct_sum


def ece_from_bins(count, conf_sum, correct_sum) -> float:
    """Expected calibration error as a fraction (0-1)."""
    total = count.sum()
    if total == 0:
        return 0.0
    filled = count > 0
    gap = np.abs(correct_sum[filled] - conf_sum[filled])  # = count * |acc - conf|
    return float(gap.sum() / total)


def expected_calibration_error(probs, targets, n_bins: int = ECE_BINS) -> float:
    """ECE (fraction) of (N, C) probabilities against integer targets."""
    probs, targets = _np(probs), _np(targets).ravel()
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == targets
    return ece_from_bins(*calibration_bins(confidence, correct, n_bins))


def per_class_stats(cm: np.ndarray) -> dict[str, np.ndarray]:
    """support, correct, precision, recall (= per-class accuracy) and F1 per class, as fractions."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    recall = np.divide(tp, support, out=np.full_like(tp, np.nan), where=support > 0)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    both = precision + np.nan_to_num(recall)
    f1 = np.divide(2 * precision * np.nan_to_num(recall), both, out=np.zeros_like(tp), where=both > 0)
    f1[support == 0] = np.nan
    return {
        "support": support.astype(np.int64),
        "correct": tp.astype(np.int64),
        "predicted": predicted.astype(np.int64),
        "precision": precision,
        "recall": recall,
        "f1": f1,
    }


def per_class_rows(cm: np.ndarray, names: list[str]) -> list[dict]:
    """A row per class present in the targets or the predictions: index, name, support, correct, predicted,
    accuracy, precision, f1 (percent; accuracy None without support) and the class it is most taken for."""
    cm = np.asarray(cm)
    stats = per_class_stats(cm)

    def pct(x) -> float | None:
        return None if x is None or np.isnan(x) else round(100.0 * float(x), 4)

    rows = []
    for c in range(cm.shape[0]):
        if stats["support"][c] == 0 and stats["predicted"][c] == 0:
            continue
        off = cm[c].copy()
        off[c] = 0
        rows.append(
            {
                "index": c,
                "name": names[c],
                "support": int(stats["support"][c]),
                "correct": int(stats["correct"][c]),
                "predicted": int(stats["predicted"][c]),
                "accuracy": pct(stats["recall"][c]),
                "precision": pct(stats["precision"][c]),
                "f1": pct(stats["f1"][c]),
                "most_confused_with": names[int(off.argmax())] if off.max() > 0 else "",
            }
        )
    return rows


def macro_scores(cm: np.ndarray) -> dict[str, float]:
    """Macro precision/recall/F1 (fractions) over the classes with support > 0."""
    stats = per_class_stats(cm)
    present = stats["support"] > 0
    if not present.any():
        return {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    return {name: float(np.mean(stats[name][present])) for name in ("precision", "recall", "f1")}


def most_confused(cm: np.ndarray, n: int = 20) -> list[tuple[int, int, int]]:
    """The n largest off-diagonal cells as (true, predicted, count), largest first (ties by index)."""
    off = np.array(cm, dtype=np.int64, copy=True)
    np.fill_diagonal(off, 0)
    flat = off.ravel()
    nonzero = np.flatnonzero(flat)
    order = nonzero[np.lexsort((nonzero, -flat[nonzero]))][:n]
    c = off.shape[1]
    return [(int(i // c), int(i % c), int(flat[i])) for i in order]


def real_accuracy(topk, real_labels: list[list[int]], ks=(1, 5)) -> dict:
    """ReaL top-k (percent) for per-image top-k predictions and per-image real label sets."""
    topk = _np(topk)
    hits = {k: 0 for k in ks}
    counted = 0
    for row, labels in zip(topk, real_labels):
        if not labels:
            continue
        counted += 1
        wanted = set(int(x) for x in labels)
        for k in ks:
            hits[k] += any(int(p) in wanted for p in row[:k])
    return {"num_images": counted, **{f"top{k}": _pct(hits[k], counted) for k in ks}}


def _pct(num: float, den: float) -> float:
    return round(100.0 * num / den, 4) if den else 0.0


class MetricAccumulator:
    """Streaming metrics over batches of (logits, targets) in the model's class space."""

    def __init__(self, num_classes: int, ks=(1, 5), n_bins: int = ECE_BINS):
        self.num_classes = num_classes
        self.ks = tuple(ks)
        self.n_bins = n_bins
        self.count = 0
        self.loss_sum = 0.0
        self.correct = {k: 0 for k in self.ks}
        self.confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
        self.bins = [np.zeros(n_bins) for _ in range(3)]
        self._topk: list[np.ndarray] = []  # per-image top-k classes, for ReaL and per-image records
        self._conf: list[np.ndarray] = []

    def update(self, logits, targets) -> None:
        import torch
        import torch.nn.functional as F

        logits = torch.as_tensor(logits).detach().float().cpu()
        targets = torch.as_tensor(targets).detach().long().cpu().reshape(-1)
        if logits.shape[0] == 0:
            return
        self.count += logits.shape[0]
        self.loss_sum += float(F.cross_entropy(logits, targets, reduction="sum"))
        for k, v in topk_correct(logits, targets, self.ks).items():
            self.correct[k] += v
        probs = logits.softmax(dim=-1)
        confidence, preds = probs.max(dim=-1)
        self.confusion += confusion_matrix(preds, targets, self.num_classes)
        for acc, new in zip(self.bins, calibration_bins(confidence, preds == targets, self.n_bins)):
            acc += new
        self._topk.append(topk_indices(logits, max(self.ks)).numpy().astype(np.int32))
        self._conf.append(confidence.numpy())

    @property
    def topk(self) -> np.ndarray:
        """(N, k) top-k predictions in update order."""
        if not self._topk:
            return np.zeros((0, min(max(self.ks), self.num_classes)), dtype=np.int32)
        return np.concatenate(self._topk)

    @property
    def confidence(self) -> np.ndarray:
        return np.concatenate(self._conf) if self._conf else np.zeros(0)

    def compute(self) -> dict:
        """Summary metrics: percentages for accuracies/ECE/macro scores, mean loss."""
        macro = macro_scores(self.confusion)
        out = {"num_images": self.count}
        for k in self.ks:
            out[f"top{k}"] = _pct(self.correct[k], self.count)
        out["loss"] = round(self.loss_sum / self.count, 6) if self.count else 0.0
        out["ece"] = round(100.0 * ece_from_bins(*self.bins), 4)
        out.update({f"macro_{name}": round(100.0 * value, 4) for name, value in macro.items()})
        return out
