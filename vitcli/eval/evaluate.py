"""`vit eval`: a model's accuracy and diagnostics on a labelled split, with timm's exact numbers.

What is evaluated is a `Split`: images with integer targets, from
  - a flat folder plus a labels file of `FILENAME CLASS_INDEX` lines (ImageNet's val layout), whose
    indices are already the model's classes (`open_labelled_folder`);
  - a named dataset or an ImageFolder tree from the dataset layer (`vitcli.data`), whose class names
    are mapped onto the model's by name (`class_mapping`).
Images go through `vitcli.images.load_image` and the model's own timm eval transform
(`resolve_data_config` + `create_transform`), so top-1/top-5 equal timm's. An unreadable image is
counted and named, never replaced by another sample.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from vitcli.errors import DataError, ImageError, UsageError


# ----------------------------------------------------------------------------- what is evaluated

@dataclass
class Split:
    """One labelled split. `classes` is None when targets are already model class indices."""

    name: str
    split: str
    targets: np.ndarray
    classes: list[str] | None
    identity: str  # stable description of the data, for the feature cache
    make_dataset: Callable  # transform -> map-style dataset of (image tensor, label) or a Skipped-like item
    describe: Callable[[int], str]  # position -> path (for failures and ReaL)

    def __len__(self) -> int:
        return len(self.targets)


class _FileList:
    """Image files with labels -> (tensor, label), or an object with .path/.reason when unreadable."""

    def __init__(self, paths: list[Path], labels, transform):
        self.paths, self.labels, self.transform = paths, labels, transform

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        from vitcli.data.images import load_image

        try:
            image = load_image(self.paths[i])
        except ImageError as e:
            return _Unreadable(str(self.paths[i]), e.message.removeprefix(f"{self.paths[i]}: "))
        return self.transform(image) if self.transform else image, int(self.labels[i])


@dataclass
class _Unreadable:
    path: str
    reason: str


def _digest(items) -> str:
    h = hashlib.sha256()
    for item in items:
        h.update(str(item).encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def read_labels_file(path: Path) -> list[tuple[str, int]]:
    """`FILENAME CLASS_INDEX` lines (blank lines and # comments ignored; filenames may hold spaces)."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise DataError(f"cannot read labels file {path}: {e.strerror or e}") from None
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.rsplit(None, 1)
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit() or int(parts[1]) < 0:
            raise DataError(f"{path}:{number}: expected 'FILENAME CLASS_INDEX', got {line[:80]!r}",
                            "one image per line: its file name, a space, its class index (0-based)")
        entries.append((parts[0], int(parts[1])))
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
    return Split(str(folder), Path(labels).name, targets, None, identity,
                 lambda transform: _FileList(paths, targets, transform), lambda i: str(paths[i]))


def dataset_split(source, split: str, display_split: str | None = None) -> Split:
    """A split of a `vitcli.data.DatasetSource`."""
    subset = source.subset(split)
    n = len(subset)
    targets = np.asarray(subset.labels, dtype=np.int64)
    paths = [subset.path(i) for i in range(n)]
    # absolute paths, so the feature cache does not depend on the working folder ("#j" = array item)
    files = [p if p.startswith("#") else os.path.abspath(p) for p in paths]
    identity = f"dataset:{source.name}:{split}:{n}:{_digest(files)}:{_digest(targets.tolist())}"
    return Split(source.name, display_split or split, targets, list(source.classes), identity,
                 lambda transform: source.subset(split, transform), lambda i: paths[i])


def _has_split_folders(folder: Path) -> bool:
    from vitcli.data.datasets import SPLIT_DIRS

    return any((folder / n).is_dir() for names in SPLIT_DIRS.values() for n in names)


def open_source(dataset: str | None = None, data: Path | None = None, *, data_dir: Path | None = None,
                download: bool = True):
    """The `vitcli.data.DatasetSource` for --dataset NAME|PATH, or for --data DIR (class folders)."""
    from vitcli.data.datasets import open_dataset

    if dataset is not None:
        return open_dataset(str(dataset), data_dir=data_dir, download=download)
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
        raise DataError(f"dataset {source.name} has only a training split",
                        "few-shot evaluation needs a train/ and a val/ or test/ folder")
    return "train"


def open_split(*, dataset: str | None = None, data: Path | None = None, labels: Path | None = None,
               split: str | None = None, data_dir: Path | None = None, download: bool = True) -> Split:
    """The split `vit eval` evaluates, from its --dataset / --data / --labels / --split options."""
    if labels is not None:
        if data is None:
            raise UsageError("--labels needs --data (the folder the file names are relative to)")
        if split is not None:
            raise UsageError("--split does not apply to --data with --labels (the labels file is the split)")
        return open_labelled_folder(data, labels)
    source = open_source(dataset, data, data_dir=data_dir, download=download)
    chosen = split or default_split(source)
    single = dataset is None and not _has_split_folders(Path(data).expanduser())
    return dataset_split(source, chosen, "all" if single and split is None else None)


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
            raise DataError(f"the labels file uses class index {top}, but the model has {num} classes",
                            "check the labels file is for this model's classes (0-based indices)")
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
    detail = f"{len(best_missing)} of the dataset's class names are not among the model's, e.g. {best_missing[0]!r}" \
        if best_missing and len(best_missing) < len(classes) else "no class names in common"
    raise DataError(
        f"the model's {num} classes do not match the {len(classes)} classes of {split.name} ({shown}): {detail}",
        "fine-tune it on this dataset (`vit finetune --dataset ...`) and evaluate the run folder, or use "
        "--few-shot for a linear probe on frozen features")


# ----------------------------------------------------------------------------- the forward loop

class _AtPositions:
    """A dataset restricted to `positions`, yielding (position, tensor or None, reason or None)."""

    def __init__(self, base, positions):
        self.base, self.positions = base, list(positions)

    def __len__(self):
        return len(self.positions)

    def __getitem__(self, k):
        pos = self.positions[k]
        item = self.base[pos]
        if hasattr(item, "reason"):  # vitcli.data.Skipped or _Unreadable
            return pos, None, item.reason
        return pos, item[0], None


def forward_batches(fn, split: Split, loaded, runtime, positions=None, *, batch_size: int = 64,
                    workers: int | None = None):
    """Yield (positions, fn(batch) or None, [(position, reason)]) over `positions` of `split`, batched,
    decoded in DataLoader workers, under inference mode and the runtime's autocast. `loaded.model` gets
    the CPU inference kernels of vitcli/kernels.py (in place: evaluation never trains it)."""
    import torch
    from torch.utils.data import DataLoader

    from vitcli.inference import kernels
    from vitcli.models.resolver import eval_transform
    from vitcli.inference.predict import collate, default_workers

    positions = list(range(len(split))) if positions is None else list(positions)
    if not positions:
        return
    kernels.for_inference(loaded, runtime)
    workers = default_workers(len(positions)) if workers is None else workers
    dataset = _AtPositions(split.make_dataset(eval_transform(loaded.data_config)), positions)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=collate,
                        pin_memory=runtime.device.type == "cuda", worker_init_fn=_ignore_sigint if workers else None,
                        prefetch_factor=4 if workers else None)
    with torch.inference_mode():
        for done, batch, errors in loader:
            out = None
            if batch is not None:
                batch = batch.to(runtime.device, non_blocking=True)
                with runtime.autocast():
                    out = fn(batch)
            yield done, out, errors


def _ignore_sigint(_worker_id: int) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


# ----------------------------------------------------------------------------- evaluation

@dataclass
class EvalResult:
    summary: dict  # the --json summary (percentages)
    confusion: np.ndarray  # (C, C) in the model's classes, rows = true
    class_names: list[str]
    per_class: list[dict] = field(default_factory=list)
    most_confused: list[dict] = field(default_factory=list)


_IMAGENET_VAL = re.compile(r"ILSVRC2012_val_(\d{8})")


def read_real_labels(path: Path, split: Split) -> list[list[int]]:
    """ImageNet ReaL: a JSON list (one label list per ImageNet val image, in val-file order) -> one
    list per image of `split`, matched by the ILSVRC2012_val_NNNNNNNN file name, else by position."""
    import json

    try:
        real = json.loads(Path(path).expanduser().read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read ReaL labels {path}: {e}") from None
    if not isinstance(real, list) or not all(isinstance(r, list) for r in real):
        raise DataError(f"{path} is not a JSON list of label lists", "use ImageNet ReaL's real.json")
    names = [split.describe(i) for i in range(len(split))]
    matches = [_IMAGENET_VAL.search(Path(n).name) for n in names]
    if all(matches):
        numbers = [int(m.group(1)) for m in matches]
        if max(numbers) > len(real):
            raise DataError(f"{path} has {len(real)} entries but the images go up to val image {max(numbers)}")
        return [real[n - 1] for n in numbers]
    if len(real) != len(names):
        raise DataError(f"{path} has {len(real)} entries for {len(names)} images and the file names are not "
                        "ILSVRC2012_val_NNNNNNNN", "give the ReaL file that belongs to these images")
    return real


def run(loaded, runtime, split: Split, *, batch_size: int = 64, workers: int | None = None,
        real_labels: Path | None = None, progress=lambda n=1: None) -> EvalResult:
    """Evaluate `loaded` on `split`: loss, top-1/5, ECE, macro P/R/F1, per-class accuracy, confusion."""
    from vitcli.eval import metrics

    mapping = class_mapping(loaded, split)
    targets = split.targets if mapping is None else mapping[split.targets]
    real = read_real_labels(real_labels, split) if real_labels else None
    acc = metrics.MetricAccumulator(loaded.num_classes)
    order: list[int] = []  # positions in the order the accumulator saw them
    failed: list[dict] = []
    started = time.perf_counter()
    for positions, logits, errors in forward_batches(loaded.model, split, loaded, runtime,
                                                     batch_size=batch_size, workers=workers):
        for pos, reason in errors:
            failed.append({"path": split.describe(pos), "error": reason})
        if logits is not None:
            acc.update(logits, targets[positions])
            order.extend(positions)
        progress(len(positions) + len(errors))
    seconds = time.perf_counter() - started
    if acc.count == 0:
        raise DataError(f"none of the {len(split)} images of {split.name} could be read",
                        f"first failure: {failed[0]['path']}: {failed[0]['error']}" if failed else None)

    summary = {"model": loaded.source.spec, "architecture": loaded.architecture, "dataset": split.name,
               "split": split.split, **acc.compute()}
    if real is not None:
        r = metrics.real_accuracy(acc.topk, [real[p] for p in order])
        summary.update({"real_top1": r["top1"], "real_top5": r["top5"], "real_num_images": r["num_images"]})
    summary.update({"num_classes": loaded.num_classes, "num_failed": len(failed), "failed": failed,
                    "seconds": round(seconds, 2), "images_per_second": round(acc.count / seconds, 1) if seconds else None,
                    "device": runtime.describe()})
    names = loaded.label_names
    stats = metrics.per_class_stats(acc.confusion)
    per_class = []
    for c in range(loaded.num_classes):
        if stats["support"][c] == 0 and stats["predicted"][c] == 0:
            continue
        off = acc.confusion[c].copy()
        off[c] = 0
        per_class.append({"index": c, "name": names[c], "support": int(stats["support"][c]),
                          "correct": int(stats["correct"][c]), "predicted": int(stats["predicted"][c]),
                          "accuracy": _pct(stats["recall"][c]), "precision": _pct(stats["precision"][c]),
                          "f1": _pct(stats["f1"][c]),
                          "most_confused_with": names[int(off.argmax())] if off.max() > 0 else ""})
    confused = [{"true": names[t], "predicted": names[p], "true_index": t, "predicted_index": p, "count": n}
                for t, p, n in metrics.most_confused(acc.confusion, 20)]
    return EvalResult(summary, acc.confusion, names, per_class, confused)


def _pct(x) -> float | None:
    return None if x is None or np.isnan(x) else round(100.0 * float(x), 4)


def write_artefacts(result: EvalResult, out_dir: Path) -> list[Path]:
    """metrics.json, per_class.csv, confusion_matrix.csv and confusion.png in `out_dir`."""
    import csv
    import json

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    path = out_dir / "metrics.json"
    path.write_text(json.dumps({**result.summary, "most_confused": result.most_confused,
                                "per_class": result.per_class}, indent=2, ensure_ascii=False) + "\n")
    written.append(path)

    path = out_dir / "per_class.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        cols = ["index", "name", "support", "correct", "predicted", "accuracy", "precision", "f1", "most_confused_with"]
        w.writerow(cols)
        for row in result.per_class:
            w.writerow(["" if row[c] is None else row[c] for c in cols])
    written.append(path)

    path = out_dir / "confusion_matrix.csv"  # rows = true class, columns = predicted class
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["true \\ predicted"] + list(result.class_names))
        for name, row in zip(result.class_names, result.confusion):
            w.writerow([name] + row.tolist())
    written.append(path)

    from vitcli.eval.reports import confusion_png

    path = out_dir / "confusion.png"
    confusion_png(result.confusion, result.class_names, path, title=f"{result.summary['architecture']} on "
                  f"{result.summary['dataset']} ({result.summary['split']})")
    written.append(path)
    return written
