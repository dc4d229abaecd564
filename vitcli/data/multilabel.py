"""Multi-label data: each image has a set of labels, held as a multi-hot row of `Records.labels` (N, K).

Two sources make it:
  - a CSV folder: `images/` and `train.csv` (plus `val.csv` and/or `test.csv`), each with the header
    `image,labels`: an image path relative to `images/`, and its class names separated by spaces (an
    empty cell: an image with none of the classes). The classes are the union of the training labels,
    sorted; a val/test label that no training image has is an error (the model could never learn it);
  - a Hugging Face dataset whose label column is a `Sequence(ClassLabel)` (vitcli.data.hf), whose
    names are the classes.

vitcli.data.source makes the `DatasetSource` from these parts as for any other layout (`from_parts`);
a minival is carved at random (`carve`: stratifying by label sets does not apply). The rest of the image
path (vitcli.data.loader) hands a label row on as it is, so a batch's labels are (B, K).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vitcli.data.loader import Records
from vitcli.errors import DataError

CSV_SPLITS = {"train": "train.csv", "val": "val.csv", "test": "test.csv"}
HEADER = ("image", "labels")


@dataclass
class Parts:
    name: str
    classes: list
    parts: dict  # train / val / test -> Records with (N, K) multi-hot labels
    root: str


def is_multi_hot(labels) -> bool:
    return np.asarray(labels).ndim == 2


def is_csv_folder(path: Path) -> bool:
    """The CSV layout: an images/ folder beside train.csv."""
    path = Path(path)
    return (path / "images").is_dir() and (path / CSV_SPLITS["train"]).is_file()


def read_csv(path: Path) -> list[tuple[str, list[str]]]:
    """(image, [labels]) rows of one split's CSV file."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text", "save it as UTF-8 CSV with the header image,labels") from None
    if not rows or tuple(c.strip().lower() for c in rows[0][:2]) != HEADER:
        raise DataError(
            f"{path}: the first line must be the header image,labels",
            "one row per image: its path under images/, then its labels separated by spaces",
        )
    out = []
    for number, row in enumerate(rows[1:], 2):
        if not row or not any(c.strip() for c in row):
            continue
        if len(row) > 2 or not row[0].strip():
            raise DataError(
                f"{path}:{number}: expected 'image,labels', got {','.join(row)[:80]!r}",
                "quote a labels cell that holds a comma; separate labels with spaces",
            )
        out.append((row[0].strip(), (row[1] if len(row) > 1 else "").split()))
    return out


def multi_hot(label_sets, classes: list[str]) -> np.ndarray:
    """(N, K) uint8 rows, one per label set (names of `classes`)."""
    index = {c: i for i, c in enumerate(classes)}
    out = np.zeros((len(label_sets), len(classes)), dtype=np.uint8)
    for row, labels in enumerate(label_sets):
        out[row, [index[name] for name in labels]] = 1
    return out


def open_csv_parts(folder: Path) -> Parts:
    """The classes (the sorted union of the training labels) and the Records of each CSV split."""
    folder = Path(folder)
    read = {split: read_csv(folder / name) for split, name in CSV_SPLITS.items() if (folder / name).is_file()}
    if not read["train"]:
        raise DataError(f"{folder / CSV_SPLITS['train']} lists no images", "one 'image,labels' row per image")
    classes = sorted({name for _, labels in read["train"] for name in labels})
    if not classes:
        raise DataError(
            f"{folder / CSV_SPLITS['train']} gives no image a label",
            "the labels column holds class names separated by spaces",
        )
    parts = {}
    for split, rows in read.items():
        unknown = sorted({n for _, labels in rows for n in labels} - set(classes))
        if unknown:
            raise DataError(
                f"{folder / CSV_SPLITS[split]} has labels no training image has: {', '.join(unknown[:5])}",
                "every class needs training images; fix the names or add training images",
            )
        paths = [folder / "images" / image for image, _ in rows]
        parts[split] = Records(multi_hot([labels for _, labels in rows], classes), paths=paths)
    return Parts(folder.resolve().name, classes, parts, str(folder))


def carve(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(keep, held_out) index arrays: a seeded random `fraction` held out (at least one image kept)."""
    n = len(labels)
    held_n = min(round(n * fraction), n - 1) if fraction > 0 else 0
    held = np.sort(np.random.default_rng(seed).permutation(n)[:held_n]).astype(np.int64)
    return np.setdiff1d(np.arange(n), held), held


def one_hot(records: Records, num_classes: int) -> Records:
    """Single-label records as multi-hot ones (a single-label dataset trained with --multi-label)."""
    labels = np.zeros((len(records), num_classes), dtype=np.uint8)
    labels[np.arange(len(records)), records.labels] = 1
    return Records(labels, paths=records.paths, array=records.array, encoded=records.encoded, names=records.names)


# ------------------------------------------------------------------------------ Hugging Face columns
def is_sequence_of_classes(feature) -> bool:
    """A `Sequence(ClassLabel)` feature (datasets >= 4 calls it `List`)."""
    import datasets

    inner = getattr(feature, "feature", None)
    return isinstance(inner, datasets.ClassLabel) and not isinstance(feature, datasets.ClassLabel)


def sequence_classes(feature):
    """The class names of a `Sequence(ClassLabel)` column and its values -> multi-hot rows."""
    names = list(feature.feature.names)

    def encode(values) -> np.ndarray:
        out = np.zeros((len(values), len(names)), dtype=np.uint8)
        for row, indices in enumerate(values):
            out[row, [i for i in (indices or []) if 0 <= i < len(names)]] = 1
        return out

    return names, encode
