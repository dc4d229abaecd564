"""What `vit eval` and few-shot evaluation evaluate: a `Split`, images with integer targets, from

- a flat folder plus a labels file of `FILENAME CLASS_INDEX` lines (ImageNet's val layout), whose
  indices are already the model's classes (`open_labelled_folder`);
- a named dataset or an ImageFolder tree from the dataset layer (vitcli.data.datasets), whose class
  names are mapped onto the model's by name (`class_mapping`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vitcli.data.datasets import open_dataset
from vitcli.data.imagefolder import SPLIT_DIRS
from vitcli.data.loader import ImageDataset, Records
from vitcli.errors import DataError, UsageError

# ----------------------------------------------------------------------------- what is evaluated


@dataclass
class Split:
    """One labelled split. `classes` is None when targets are already model class indices."""

    name: str
    split: str
    targets: np.ndarray
    classes: list[str] | None
    identity: str  # stable description of the data, for the feature cache
    make_dataset: Callable  # transform -> vitcli.data.loader.ImageDataset (positions = places in the split)
    describe: Callable[[int], str]  # position -> path (for failures and ReaL)

    def __len__(self) -> int:
        return len(self.targets)


def _digest(items) -> str:
    h = hashlib.sha256()
    for item in items:
        h.update(str(item).encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def read_labels_file(path: Path) -> list[tuple[str, int]]:
    """`FILENAME CLASS_INDEX` lines (blank lines and # comments ignored; filenames may hold spaces)."""
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except OSError as e:
        raise DataError(f"cannot read labels file {path}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise DataError(
            f"labels file {path} is not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start})",
            "one 'FILENAME CLASS_INDEX' line per image, saved as UTF-8",
        ) from None
    entries = []
    where: dict[str, tuple[int, int]] = {}  # file -> (line, class) of its first mention
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.rsplit(None, 1)
        if len(parts) != 2 or not parts[1].isascii() or not parts[1].isdigit() or int(parts[1]) >= 2**31:
            raise DataError(
                f"{path}:{number}: expected 'FILENAME CLASS_INDEX', got {line[:80]!r}",
                "one image per line: its file name, a space, its class index (0-based)",
            )
        name, label = os.path.normpath(parts[0]), int(parts[1])
        if name in where:  # one image listed twice: the same class is read once, two classes are an error
            first, first_label = where[name]
            if first_label != label:
                raise DataError(
                    f"{path}:{number}: {parts[0]} is class {label} here and class {first_label} at line {first}",
                    "list each image once, with its one class",
                )
            continue
        where[name] = (number, label)
        entries.append((parts[0], label))
    if not entries:
        raise DataError(f"labels file {path} lists no images", "one 'FILENAME CLASS_INDEX' line per image")
    return entries


def open_labelled_folder(folder: Path, labels: Path) -> Split:
    """A flat folder of images and a labels file (ImageNet's val layout); a listed file that is
    missing counts as unreadable."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DataError(f"--data {folder}: no such folder")
    entries = read_labels_file(Path(labels).expanduser())
    paths = [folder / name for name, _ in entries]
    targets = np.array([t for _, t in entries], dtype=np.int64)
    identity = f"labels:{folder.resolve()}:{_digest(f'{n} {t}' for n, t in entries)}"
    records = Records(targets, paths=paths)
    return Split(
        str(folder),
        Path(labels).name,
        targets,
        None,
        identity,
        lambda transform: ImageDataset(records, transform=transform),
        lambda i: str(paths[i]),
    )


def dataset_split(source, split: str, display_split: str | None = None) -> Split:
    """A split of a `vitcli.data.DatasetSource`."""
    subset = source.subset(split)
    n = len(subset)
    targets = np.asarray(subset.labels, dtype=np.int64)
    paths = [subset.path(i) for i in range(n)]
    # absolute paths, so the feature cache does not depend on the working folder ("#j" = array item)
    files = [p if p.startswith("#") else os.path.abspath(p) for p in paths]
    identity = f"dataset:{source.name}:{split}:{n}:{_digest(files)}:{_digest(targets.tolist())}"
    return Split(
        source.name,
        display_split or split,
        targets,
        list(source.classes),
        identity,
        lambda transform: source.subset(split, transform),
        lambda i: paths[i],
    )


def _has_split_folders(folder: Path) -> bool:
    return any((folder / n).is_dir() for names in SPLIT_DIRS.values() for n in names)


def open_source(
    dataset: str | None = None,
    data: Path | None = None,
    *,
    data_dir: Path | None = None,
    download: bool = True,
    image_column: str | None = None,
    label_column: str | None = None,
):
    """The `DatasetSource` for --dataset NAME|PATH|hf:NAME, or for --data DIR (class folders)."""
    if dataset is not None:
        return open_dataset(
            str(dataset), data_dir=data_dir, download=download, image_column=image_column, label_column=label_column
        )
    if image_column or label_column:
        raise UsageError("--image-column and --label-column go with --dataset (a Hugging Face dataset)")
    folder = Path(data).expanduser()
    if not folder.is_dir():
        raise DataError(f"--data {folder}: no such folder")
    if _has_split_folders(folder):
        return open_dataset(str(folder), data_dir=data_dir, download=download)
    # one folder of class folders: all of it is the split (nothing carved out)
    return open_dataset(str(folder), val_split=0.0, download=False)


def default_split(source, few_shot: bool = False) -> str:
    """test, else val, else minival; a single folder of class folders is evaluated whole."""
    for split in ("test", "val", "minival"):
        if split in source.splits:
            return split
    if few_shot:
        raise DataError(
            f"dataset {source.name} has only a training split",
            "few-shot evaluation needs a train/ and a val/ or test/ folder",
        )
    return "train"


def run_dataset(model: str | None) -> dict | None:
    """What a training run folder given as --model was trained on, from its run.json: {"dataset", "data_dir",
    "image_column", "label_column"}; None when `model` is not a run folder or records no dataset."""
    import json

    from vitcli.train import files  # a leaf module: the run folder's file names

    if not model:
        return None
    try:
        record = json.loads((Path(model).expanduser() / files.RUN_JSON).read_text())
    except (OSError, ValueError):
        return None
    cfg = record.get("config") if isinstance(record, dict) else None
    if not isinstance(cfg, dict) or not cfg.get("dataset"):
        return None
    return {k: cfg.get(k) for k in ("dataset", "data_dir", "image_column", "label_column")}


def open_split(
    *,
    dataset: str | None = None,
    data: Path | None = None,
    labels: Path | None = None,
    split: str | None = None,
    data_dir: Path | None = None,
    download: bool = True,
    image_column: str | None = None,
    label_column: str | None = None,
) -> Split:
    """The split `vit eval` evaluates, from its --dataset / --data / --labels / --split options."""
    if labels is not None:
        if data is None:
            raise UsageError("--labels needs --data (the folder the file names are relative to)")
        if split is not None:
            raise UsageError("--split does not apply to --data with --labels (the labels file is the split)")
        return open_labelled_folder(data, labels)
    source = open_source(
        dataset, data, data_dir=data_dir, download=download, image_column=image_column, label_column=label_column
    )
    chosen = split or default_split(source)
    single = dataset is None and not _has_split_folders(Path(data).expanduser())
    return dataset_split(source, chosen, "all" if single and split is None else None)


def few_shot_splits(
    *,
    dataset: str | None = None,
    data: Path | None = None,
    labels: Path | None = None,
    split: str | None = None,
    data_dir: Path | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
) -> tuple[Split, Split]:
    """(train, test) of few-shot evaluation: the shots are drawn from train, tested on --split (default:
    test, else val, else minival)."""
    if labels is not None:
        raise UsageError(
            "--few-shot needs a dataset with a training split",
            "use --dataset NAME|PATH (an ImageFolder tree with train/ and val/ or test/)",
        )
    source = open_source(dataset, data, data_dir=data_dir, image_column=image_column, label_column=label_column)
    if "train" not in source.splits:
        raise UsageError(f"dataset {source.name} has no training split to draw the shots from")
    test = split or default_split(source, few_shot=True)
    if test == "train":
        raise UsageError("--split train: the shots are drawn from the train split; evaluate on another split")
    return dataset_split(source, "train"), dataset_split(source, test)


# ----------------------------------------------------------------------------- classes


def _imagenet_synsets(model) -> list[str] | None:
    try:
        from timm.data import ImageNetInfo, infer_imagenet_subset

        subset = infer_imagenet_subset(model)
        return list(ImageNetInfo(subset).label_names()) if subset else None
    except Exception:  # noqa: BLE001 - only a convenience for ImageNet folders named by WordNet id
        return None


def class_mapping(loaded, split: Split) -> np.ndarray | None:
    """dataset class index -> model class index, or None when the targets already are model indices.

    Names are matched exactly, then case-insensitively, against the model's `label_names` (a run
    folder's config.json), its displayed names and, for ImageNet heads, the WordNet ids. A model
    without names and the same number of classes is taken to be in the dataset's order.
    """
    num = loaded.num_classes
    if split.classes is None:
        top = int(split.targets.max()) if len(split.targets) else -1
        if top >= num:
            raise DataError(
                f"the labels file uses class index {top}, but the model has {num} classes",
                "check the labels file is for this model's classes (0-based indices)",
            )
        return None
    classes = split.classes
    candidates = [loaded.config.get("label_names"), loaded.label_names, _imagenet_synsets(loaded.model)]
    best_missing = None
    for names in filter(None, candidates):
        for fold in (lambda s: s, lambda s: s.casefold()):
            index = {}
            for i, n in enumerate(names):
                index.setdefault(fold(str(n)), i)
            missing = [c for c in classes if fold(c) not in index]
            if not missing:
                return np.array([index[fold(c)] for c in classes], dtype=np.int64)
            if best_missing is None or len(missing) < len(best_missing):
                best_missing = missing
    unnamed = loaded.label_names == [str(i) for i in range(num)] and not loaded.config.get("label_names")
    if unnamed and num == len(classes):
        from vitcli import output

        output.warn(f"the model has no class names; assuming its {num} classes are in the dataset's order")
        return np.arange(num, dtype=np.int64)
    shown = ", ".join(classes[:4]) + (", ..." if len(classes) > 4 else "")
    detail = (
        f"{len(best_missing)} of the dataset's class names are not among the model's, e.g. {best_missing[0]!r}"
        if best_missing and len(best_missing) < len(classes)
        else "no class names in common"
    )
    raise DataError(
        f"the model's {num} classes do not match the {len(classes)} classes of {split.name} ({shown}): {detail}",
        "fine-tune it on this dataset (`vit finetune --dataset ...`) and evaluate the run folder, or use "
        "--few-shot for a linear probe on frozen features",
    )
