"""The confusion-matrix figure of `vit eval --out` (matplotlib, Agg backend, written to a PNG).

Up to `FULL_LIMIT` classes the whole matrix is drawn. Beyond that a 1000x1000 picture is unreadable,
so the figure shows the submatrix of the classes in the most confused pairs, beside a bar chart of
those pairs (true -> predicted: count); the full matrix is in confusion_matrix.csv.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

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
                    ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=6,
                            color="white" if share[i, j] > 0.5 else "black")


def confusion_png(cm, class_names: list[str], path: Path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from vitcli.eval.metrics import most_confused

    cm = np.asarray(cm)
    n = cm.shape[0]
    if n <= FULL_LIMIT:
        size = max(4.0, 0.32 * n + 2.0)
        fig, ax = plt.subplots(figsize=(size, size))
        _heatmap(ax, cm, [_short(c) for c in class_names], annotate=n <= 20)
        ax.set_title(title or "confusion matrix", fontsize=9)
    else:
        pairs = most_confused(cm, 200)
        chosen: list[int] = []
        for t, p, _ in pairs:
            for c in (t, p):
                if c not in chosen and len(chosen) < SUB_CLASSES:
                    chosen.append(c)
        fig, (ax, bars) = plt.subplots(1, 2, figsize=(15, 7.5), gridspec_kw={"width_ratios": [1.1, 1]})
        if chosen:
            chosen.sort()
            _heatmap(ax, cm[np.ix_(chosen, chosen)], [_short(class_names[c]) for c in chosen], annotate=True)
            ax.set_title(f"{len(chosen)} most confused of {n} classes (rows normalised)", fontsize=9)
            top = pairs[:TOP_PAIRS][::-1]
            bars.barh(range(len(top)), [c for _, _, c in top], color="tab:red")
            bars.set_yticks(range(len(top)),
                            [f"{_short(class_names[t], 20)} → {_short(class_names[p], 20)}" for t, p, _ in top],
                            fontsize=7)
            bars.xaxis.set_major_locator(MaxNLocator(integer=True))
            bars.set_xlabel("images")
            bars.set_title(f"top {len(top)} confusions (true → predicted)", fontsize=9)
        else:
            ax.text(0.5, 0.5, "no confusions", ha="center", va="center")
            ax.axis("off")
            bars.axis("off")
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
