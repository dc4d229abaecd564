"""The dataset layer shared by `vit finetune`, `vit train` and `vit eval`.

A dataset spec is a name (`pets`, `flowers102`, `cifar10`, `cifar100`: torchvision's classes, their
downloads and exactly their on-disk layouts under the data folder) or a path to an ImageFolder tree
(`train/` plus `val/` and/or `test/` class folders, or one folder of class folders split by
`val_split`). `open_dataset` returns a `DatasetSource` whose `.subset(split, transform)` is a
map-style dataset of `(image, label)`.

Splits. "train" trains; "minival" is the paper's held-out split, carved deterministically (stratified,
seeded) from the training data, and "train" then excludes it; "val" is a validation folder the user
made; "test" gives the final number. `selection_split` names the split that picks the best model.

Unreadable images are never replaced by another sample: an item that cannot be decoded comes back as
a `Skipped(path, reason)` record, `collate` drops it from the batch and passes it along, and
`DatasetSource.note_skipped` (called in the main process) names each file once in a warning and
counts it in `DatasetSource.unreadable`.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np

from vitcli.errors import DataError, ImageError

NAMED = ("pets", "flowers102", "cifar10", "cifar100")
MINIVAL_FRACTION = {"pets": 0.10, "flowers102": 0.10, "cifar10": 0.02, "cifar100": 0.02}
DEFAULT_VAL_SPLIT = 0.10
ALIASES = {"oxford_iiit_pet": "pets", "oxford-iiit-pet": "pets", "pet": "pets", "flowers": "flowers102",
           "oxford_flowers102": "flowers102", "cifar-10": "cifar10", "cifar-100": "cifar100"}

# What torchvision leaves on disk under the data folder (and what a user puts there by hand).
LAYOUTS = {
    "pets": ("oxford-iiit-pet/images/*.jpg and oxford-iiit-pet/annotations/{trainval,test}.txt",
             "https://www.robots.ox.ac.uk/~vgg/data/pets/data/{images,annotations}.tar.gz, "
             "extracted into oxford-iiit-pet/"),
    "flowers102": ("flowers-102/jpg/image_NNNNN.jpg, flowers-102/imagelabels.mat and flowers-102/setid.mat",
                   "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/ (102flowers.tgz extracted into "
                   "flowers-102/, plus imagelabels.mat and setid.mat)"),
    "cifar10": ("cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}",
                "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz, extracted in place"),
    "cifar100": ("cifar-100-python/{train,test,meta}",
                 "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz, extracted in place"),
}


class Skipped(NamedTuple):
    """An item that could not be read: dropped from its batch, named once, counted."""

    path: str
    reason: str


class Batch(NamedTuple):
    images: Any  # (B, C, H, W) tensor, or None when every item of the batch was unreadable
    labels: Any  # (B,) int64 tensor, or None
    skipped: list  # [Skipped]


def default_data_dir() -> Path:
    from vitcli.env import vit_cache_dir

    return Path(vit_cache_dir()) / "datasets"


# ---------------------------------------------------------------------------------------- records
class Records:
    """The items of one underlying split: image files (paths) or a uint8 array (CIFAR), with labels."""

    def __init__(self, labels: Sequence[int], paths: Sequence[str] | None = None, array=None):
        self.labels = np.asarray(labels, dtype=np.int64)
        self.paths = list(map(str, paths)) if paths is not None else None
        self.array = array  # (N, H, W, 3) uint8

    def __len__(self) -> int:
        return len(self.labels)

    def name(self, j: int) -> str:
        return self.paths[j] if self.paths is not None else f"#{j}"

    def image(self, j: int):
        from PIL import Image

        if self.paths is None:
            return Image.fromarray(self.array[j])
        from vitcli.data.images import load_image

        return load_image(self.paths[j])


class SplitDataset:
    """Map-style dataset over `records[indices]`: `(image, label)`, or `Skipped` when unreadable.

    With `augment_seed` set, the random transforms of item j in epoch e are seeded from
    (augment_seed, e, j), so the augmentation of a sample does not depend on DataLoader workers,
    their number, or where a resumed run restarted.
    """

    def __init__(self, records: Records, indices: Sequence[int], transform: Callable | None = None,
                 augment_seed: int | None = None):
        self.records = records
        self.indices = np.asarray(indices, dtype=np.int64)
        self.transform = transform
        self.augment_seed = augment_seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def labels(self) -> np.ndarray:
        return self.records.labels[self.indices]

    def path(self, i: int) -> str:
        return self.records.name(int(self.indices[i]))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, i: int):
        j = int(self.indices[i])
        try:
            image = self.records.image(j)
        except ImageError as e:
            return Skipped(self.records.name(j), e.message.removeprefix(f"{self.records.name(j)}: "))
        label = int(self.records.labels[j])
        if self.transform is None:
            return image, label
        if self.augment_seed is None:
            return self.transform(image), label
        import torch

        seed = (self.augment_seed * 1_000_003 + self.epoch * 1_000_033 + j) % (2 ** 63)
        state = random.getstate()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            random.seed(seed)
            try:
                return self.transform(image), label
            finally:
                random.setstate(state)


def collate(items) -> Batch:
    """Stack the readable items; pass the unreadable ones along (they are never replaced)."""
    import torch

    ok = [it for it in items if not isinstance(it, Skipped)]
    skipped = [it for it in items if isinstance(it, Skipped)]
    if not ok:
        return Batch(None, None, skipped)
    images = torch.stack([torch.as_tensor(im) if not isinstance(im, torch.Tensor) else im for im, _ in ok])
    labels = torch.tensor([label for _, label in ok], dtype=torch.int64)
    return Batch(images, labels, skipped)


def worker_init(_worker_id: int) -> None:
    """DataLoader workers ignore Ctrl-C: the main process decides what an interrupt means."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


# ---------------------------------------------------------------------------------------- source
@dataclass
class DatasetSource:
    name: str
    classes: list[str]
    splits: list[str]
    root: str = ""
    _parts: dict = field(default_factory=dict, repr=False)  # split -> (Records, indices)
    unreadable: dict = field(default_factory=dict)  # path -> reason, filled by note_skipped

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def selection_split(self) -> str | None:
        """The split that selects the model: minival, else val (else None)."""
        return next((s for s in ("minival", "val") if s in self.splits), None)

    @property
    def skipped_count(self) -> int:
        return len(self.unreadable)

    def size(self, split: str) -> int:
        return len(self._part(split)[1])

    def _part(self, split: str):
        if split not in self._parts:
            raise DataError(f"dataset {self.name} has no {split!r} split",
                            f"its splits are: {', '.join(self.splits)}")
        return self._parts[split]

    def subset(self, split: str, transform: Callable | None = None,
               augment_seed: int | None = None) -> SplitDataset:
        records, indices = self._part(split)
        return SplitDataset(records, indices, transform, augment_seed)

    def note_skipped(self, skipped: Sequence[Skipped]) -> None:
        """Record unreadable items seen in a batch: each file is named once in a warning."""
        from vitcli import output

        for item in skipped:
            if item.path not in self.unreadable:
                self.unreadable[item.path] = item.reason
                output.warn(f"skipping unreadable image {item.path}: {item.reason}")


def loader(dataset: SplitDataset, *, batch_size: int, workers: int = 0, shuffle: bool = False,
           sampler=None, drop_last: bool = False, pin_memory: bool = False, seed: int = 0):
    """A DataLoader with `collate` (drops unreadable items), workers that ignore Ctrl-C, and its own
    generator: without one, creating an iterator draws from the global torch RNG and shifts it."""
    import torch
    from torch.utils.data import DataLoader

    generator = torch.Generator()
    generator.manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle if sampler is None else False,
                      sampler=sampler, num_workers=workers, collate_fn=collate, drop_last=drop_last,
                      pin_memory=pin_memory, worker_init_fn=worker_init if workers else None,
                      generator=generator, persistent_workers=False,
                      prefetch_factor=2 if workers else None)


def batches(source: DatasetSource, data_loader):
    """Iterate `(images, labels)` of a loader built with `loader`, recording unreadable items."""
    for batch in data_loader:
        if batch.skipped:
            source.note_skipped(batch.skipped)
        if batch.images is not None:
            yield batch.images, batch.labels


# ---------------------------------------------------------------------------------------- splits
def carve(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(keep, held_out) index arrays: a stratified, seeded `fraction` of each class held out."""
    rng = np.random.default_rng(seed)
    held = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        n = int(round(len(idx) * fraction))
        if len(idx) > 1:
            n = min(max(n, 1), len(idx) - 1) if fraction > 0 else 0
        else:
            n = 0
        held.extend(rng.permutation(idx)[:n].tolist())
    held_arr = np.array(sorted(held), dtype=np.int64)
    keep = np.setdiff1d(np.arange(len(labels)), held_arr)
    return keep, held_arr


def _with_minival(source: DatasetSource, records: Records, fraction: float, seed: int) -> None:
    keep, held = carve(records.labels, fraction, seed)
    source._parts["train"] = (records, keep)
    if len(held):
        source._parts["minival"] = (records, held)


# ---------------------------------------------------------------------------------------- opening
def open_dataset(spec: str, *, data_dir: Path | None = None, val_split: float | None = None, seed: int = 0,
                 download: bool = True) -> DatasetSource:
    """Open a named dataset or an ImageFolder tree. Named datasets are downloaded (by torchvision)
    into `data_dir` only when their files are not already there and `download` is set."""
    if val_split is not None and not 0.0 <= val_split < 1.0:
        raise DataError(f"--val-split {val_split} is out of range", "give a fraction such as 0.1")
    name = ALIASES.get(spec.strip().lower(), spec.strip().lower())
    path = Path(spec).expanduser()
    if name in NAMED and not path.is_dir():
        root = Path(data_dir).expanduser() if data_dir else default_data_dir()
        return _open_named(name, root, val_split, seed, download)
    if path.is_dir():
        return _open_folder(path, val_split, seed)
    raise DataError(f"dataset {spec!r} is neither a known name nor a folder",
                    f"use one of {', '.join(NAMED)} or a path to an ImageFolder tree (train/ and val/ class folders)")


def _tv_dataset(name: str, root: Path, split: str, download: bool):
    from torchvision import datasets

    if name == "pets":
        return datasets.OxfordIIITPet(str(root), split=split, target_types="category", download=download)
    if name == "flowers102":
        try:
            import scipy  # noqa: F401 - torchvision reads Flowers102's .mat label files with scipy
        except ImportError:
            raise DataError("flowers102 needs scipy to read its label files", "pip install scipy") from None
        return datasets.Flowers102(str(root), split=split, download=download)
    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    return cls(str(root), train=split == "train", download=download)


_SPLITS = {"pets": ("trainval", "test"), "flowers102": (("train", "val"), "test"),
           "cifar10": ("train", "test"), "cifar100": ("train", "test")}


def _load_named(name: str, root: Path, download: bool):
    train_split, test_split = _SPLITS[name]
    parts = train_split if isinstance(train_split, tuple) else (train_split,)
    trains = [_tv_dataset(name, root, s, download) for s in parts]
    test = _tv_dataset(name, root, test_split, False)
    return trains, test


def _records(ds) -> Records:
    """torchvision's file list (so images are read by vitcli's loader) or its array (CIFAR)."""
    if hasattr(ds, "_images"):  # OxfordIIITPet
        return Records(ds._labels, paths=ds._images)
    if hasattr(ds, "_image_files"):  # Flowers102
        return Records(ds._labels, paths=ds._image_files)
    return Records(ds.targets, array=ds.data)  # CIFAR10/100


def _concat(parts: list[Records]) -> Records:
    if len(parts) == 1:
        return parts[0]
    return Records(np.concatenate([p.labels for p in parts]), paths=sum((p.paths for p in parts), []))


def _open_named(name: str, root: Path, val_split: float | None, seed: int, download: bool) -> DatasetSource:
    from vitcli import env as hub_env

    where, url = LAYOUTS[name]
    why = "offline mode is on" if hub_env.offline() else "downloads are off" if not download else \
        "it could not be downloaded"
    missing = DataError(
        f"dataset {name} is not in {root} and {why}",
        f"put {where} under {root} (download {url}), or pass --data-dir where they are")
    try:
        trains, test = _load_named(name, root, download=False)
    except RuntimeError:  # torchvision: "Dataset not found ..."
        if not download or hub_env.offline():
            raise missing from None
        from vitcli import output

        output.info(f"downloading {name} into {root} (torchvision)")
        root.mkdir(parents=True, exist_ok=True)
        try:
            trains, test = _load_named(name, root, download=True)
        except DataError:
            raise
        except Exception as e:  # URLError, socket errors, a corrupt archive
            raise DataError(f"{missing.message}: {str(e).splitlines()[0] if str(e) else type(e).__name__}",
                            missing.hint) from e
    except (OSError, ValueError) as e:
        raise DataError(f"dataset {name} in {root} is damaged: {e}",
                        f"delete it and download again, or put {where} under {root}") from e
    classes = list(trains[0].classes)
    source = DatasetSource(name, classes, ["train", "minival", "test"], str(root))
    fraction = MINIVAL_FRACTION[name] if val_split is None else val_split
    _with_minival(source, _concat([_records(t) for t in trains]), fraction, seed)
    test_records = _records(test)
    source._parts["test"] = (test_records, np.arange(len(test_records)))
    source.splits = [s for s in ("train", "minival", "test") if s in source._parts]
    return source


def _class_dirs(folder: Path) -> list[str]:
    return sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def _scan(folder: Path, classes: list[str]) -> Records:
    from vitcli.data.images import is_image_file

    paths, labels = [], []
    for label, cls in enumerate(classes):
        cdir = folder / cls
        if not cdir.is_dir():
            continue
        for p in sorted(x for x in cdir.rglob("*") if x.is_file() and is_image_file(x)):
            paths.append(p)
            labels.append(label)
    return Records(labels, paths=paths)


SPLIT_DIRS = {"train": ("train", "training"), "val": ("val", "valid", "validation"), "test": ("test", "testing")}


def _open_folder(folder: Path, val_split: float | None, seed: int) -> DatasetSource:
    found = {split: next((folder / n for n in names if (folder / n).is_dir()), None)
             for split, names in SPLIT_DIRS.items()}
    train_dir = found["train"]
    if train_dir is None:
        if found["val"] or found["test"]:
            raise DataError(f"{folder} has a val/ or test/ folder but no train/ folder",
                            "put the training images in train/<class>/ beside them")
        train_dir = folder  # one folder of class folders
    classes = _class_dirs(train_dir)
    if not classes:
        raise DataError(f"{train_dir} holds no class folders",
                        "lay the images out as <class>/<image> (ImageFolder), e.g. train/ants/1.jpg")
    source = DatasetSource(folder.name or str(folder), classes, [], str(folder))
    records = _scan(train_dir, classes)
    if len(records) == 0:
        raise DataError(f"{train_dir} holds no images", "lay the images out as <class>/<image>")
    for split in ("val", "test"):
        d = found[split]
        if d is None:
            continue
        extra = sorted(set(_class_dirs(d)) - set(classes))
        if extra:
            raise DataError(f"{d} has class folders that train/ lacks: {', '.join(extra[:5])}",
                            "every class needs training images; fix the folder names")
        part = _scan(d, classes)
        if len(part):
            source._parts[split] = (part, np.arange(len(part)))
    if "val" not in source._parts or val_split:
        _with_minival(source, records, DEFAULT_VAL_SPLIT if val_split is None else val_split, seed)
    else:
        source._parts["train"] = (records, np.arange(len(records)))
    source.splits = [s for s in ("train", "minival", "val", "test") if s in source._parts]
    return source


def describe(source: DatasetSource) -> str:
    sizes = ", ".join(f"{s} {source.size(s)}" for s in source.splits)
    return f"{source.name}: {source.num_classes} classes, {sizes}"


def workers_default(n_items: int) -> int:
    if n_items < 64:
        return 0
    return min(4, os.cpu_count() or 1)
