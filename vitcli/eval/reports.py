"""The files of `vit eval --out-dir`: metrics.json, per_class.csv, confusion_matrix.csv, predictions.csv
and the confusion-matrix figure (matplotlib's Figure API: no pyplot, no global backend); with
--few-shot, fewshot.json. A training run with a test split writes the per-class and confusion files of
its kept model too (`write_confusion`).

Up to `FULL_LIMIT` classes the whole matrix is drawn. Beyond that a 1000x1000 picture is unreadable,
so the figure shows the submatrix of the classes in the most confused pairs, beside a bar chart of
those pairs (true -> predicted: count); the full matrix is in confusion_matrix.csv.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from vitcli.output import atomic_write, dumps

METRICS = "metrics.json"
PER_CLASS = "per_class.csv"
CONFUSION_CSV = "confusion_matrix.csv"
CONFUSION_PNG = "confusion.png"
PREDICTIONS = "predictions.csv"
CONFUSION_FILES = (PER_CLASS, CONFUSION_CSV, CONFUSION_PNG)  # what `write_confusion` leaves in a run folder

FULL_LIMIT = 30
SUB_CLASSES = 20
TOP_PAIRS = 15


def _short(name: str, width: int = 24) -> str:
    name = str(name).split(",")[0].strip()  # ImageNet descriptions: "tabby, tabby cat" -> "tabby"
    return name if len(name) <= width else name[: width - 1] + "…"


def _heatmap(ax, cm: np.ndarray, labels: list[str], annotate: bool) -> None:
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros_like(cm, dtype=float), where=rows > 0)  # row-normalised colour
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if annotate:
        for i in range(cm.shape[0]):
            for j in range(cm.shape[1]):
                if cm[i, j]:
                    ax.text(
                        j,
                        i,
                        str(int(cm[i, j])),
                        ha="center",
                        va="center",
                        fontsize=6,
                        color="white" if share[i, j] > 0.5 else "black",
                    )


def confusion_png(cm, class_names: list[str], path: Path, title: str = "") -> Path:
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    from vitcli.eval.metrics import most_confused

    cm = np.asarray(cm)
    n = cm.shape[0]
    if n <= FULL_LIMIT:
        size = max(4.0, 0.32 * n + 2.0)
        fig = Figure(figsize=(size, size))
        ax = fig.subplots()
        _heatmap(ax, cm, [_short(c) for c in class_names], annotate=n <= 20)
        ax.set_title(title or "confusion matrix", fontsize=9)
    else:
        pairs = most_confused(cm, 200)
        chosen: list[int] = []
        for t, p, _ in pairs:
            for c in (t, p):
                if c not in chosen and len(chosen) < SUB_CLASSES:
                    chosen.append(c)
        fig = Figure(figsize=(15, 7.5))
        ax, bars = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.1, 1]})
        if chosen:
            chosen.sort()
            _heatmap(ax, cm[np.ix_(chosen, chosen)], [_short(class_names[c]) for c in chosen], annotate=True)
            ax.set_title(f"{len(chosen)} most confused of {n} classes (rows normalised)", fontsize=9)
            top = pairs[:TOP_PAIRS][::-1]
            bars.barh(range(len(top)), [c for _, _, c in top], color="tab:red")
            bars.set_yticks(
                range(len(top)),
                [f"{_short(class_names[t], 20)} → {_short(class_names[p], 20)}" for t, p, _ in top],
                fontsize=7,
            )
            bars.xaxis.set_major_locator(MaxNLocator(integer=True))
            bars.set_xlabel("images")
            bars.set_title(f"top {len(top)} confusions (true → predicted)", fontsize=9)
        else:
            ax.text(0.5, 0.5, "no confusions", ha="center", va="center")
            ax.axis("off")
            bars.axis("off")
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120))


def write_artefacts(result, out_dir: Path) -> list[Path]:
    """metrics.json, per_class.csv, confusion_matrix.csv, predictions.csv and confusion.png in `out_dir`."""
    out_dir = Path(out_dir)
    summary = {**result.summary, "most_confused": result.most_confused, "per_class": result.per_class}
    files = {
        METRICS: dumps(summary, indent=2) + "\n",
        PER_CLASS: _per_class_csv(result.per_class),
        CONFUSION_CSV: _confusion_csv(result.confusion, result.class_names),
        # one row per readable image, as timm's inference script writes them
        PREDICTIONS: _csv(
            [["path", "true_index", "top1_index", "top1_score"]]
            + [[p["path"], p["true_index"], p["top1_index"], f"{p['top1_score']:.6f}"] for p in result.predictions]
        ),
    }
    written = [atomic_write(out_dir / name, text) for name, text in files.items()]
    title = f"{result.summary['architecture']} on {result.summary['dataset']} ({result.summary['split']})"
    written.append(confusion_png(result.confusion, result.class_names, out_dir / CONFUSION_PNG, title=title))
    return written


def write_confusion(cm, class_names: list[str], out_dir: Path, title: str = "") -> list[Path]:
    """per_class.csv, confusion_matrix.csv and confusion.png of a confusion matrix (rows = true class), as
    `write_artefacts` writes them: the end of a training run with a test split (vitcli.train.report.reporting)."""
    from vitcli.eval.metrics import per_class_rows

    out_dir = Path(out_dir)
    cm = np.asarray(cm)
    return [
        atomic_write(out_dir / PER_CLASS, _per_class_csv(per_class_rows(cm, class_names))),
        atomic_write(out_dir / CONFUSION_CSV, _confusion_csv(cm, class_names)),
        confusion_png(cm, class_names, out_dir / CONFUSION_PNG, title=title),
    ]


def _per_class_csv(per_class: list[dict]) -> str:
    cols = ["index", "name", "support", "correct", "predicted", "accuracy", "precision", "f1", "most_confused_with"]
    return _csv([cols] + [["" if row[c] is None else row[c] for c in cols] for row in per_class])


def _confusion_csv(cm, class_names: list[str]) -> str:
    # rows = true class, columns = predicted class
    return _csv(
        [["true \\ predicted"] + list(class_names)]
        + [[name] + list(map(int, row)) for name, row in zip(class_names, np.asarray(cm))]
    )


def _csv(rows) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    return buffer.getvalue()


def write_few_shot(result: dict, out_dir: Path) -> Path:
    """fewshot.json in `out_dir`."""
    return atomic_write(Path(out_dir) / "fewshot.json", dumps(result, indent=2) + "\n")
