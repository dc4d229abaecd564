"""The dataset layer shared by `vit finetune`, `vit train` and `vit eval`.

A dataset spec is a name (`pets`, `flowers102`, `cifar10`, `cifar100`: torchvision's classes, their
downloads and exactly their on-disk layouts under the data folder), a path to an ImageFolder tree
(`train/` plus `val/` and/or `test/` class folders, or one folder of class folders split by
`val_split`), or a Hugging Face dataset (`hf:NAME[:CONFIG]`, or a folder written by `save_to_disk`:
vitcli.data.hf). `open_dataset` returns a `DatasetSource` whose `.subset(split, transform)` is the one
`vitcli.data.loader.ImageDataset`.

Splits. "train" trains; "minival" is the paper's held-out split, carved deterministically (stratified,
seeded) from the training data, and "train" then excludes it; "val" is a validation folder the user
made; "test" gives the final number. `selection_split` names the split that picks the best model.

Unreadable images are never replaced by another sample (vitcli.data.loader): the training loop hands
the `Skipped` records of each batch to `DatasetSource.note_skipped` (in the main process), which names
each file once in a warning and counts it in `DatasetSource.unreadable`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vitcli.data.loader import ImageDataset, Records, Skipped
from vitcli.errors import DataError

NAMED = ("pets", "flowers102", "cifar10", "cifar100")
MINIVAL_FRACTION = {"pets": 0.10, "flowers102": 0.10, "cifar10": 0.02, "cifar100": 0.02}
DEFAULT_VAL_SPLIT = 0.10
# A default minival (`val_split` not given) smaller than this is not carved: on a few dozen images the
# candidates of a run differ by less than the minival's own noise (a standard error of 5-8 points), so
# selecting on it costs a tenth of the training images for a coin flip (benchmarks/recipes.txt).
MIN_MINIVAL = 100
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


def default_data_dir() -> Path:
    from vitcli import env

    return Path(env.vit_cache_dir()) / "datasets"


# ---------------------------------------------------------------------------------------- source
@dataclass
class DatasetSource:
    name: str
    classes: list[str]
    splits: list[str]
    root: str = ""
    _parts: dict = field(default_factory=dict, repr=False)  # split -> (Records, indices)
    unreadable: dict = field(default_factory=dict)  # path -> reason, filled by note_skipped
    minival_too_small: int | None = None  # the images a default minival would have held, when not carved

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def multi_label(self) -> bool:
        """Images with sets of labels (multi-hot rows: vitcli.data.multilabel)."""
        return any(records.labels.ndim > 1 for records, _ in self._parts.values())

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
               augment_seed: int | None = None) -> ImageDataset:
        records, indices = self._part(split)
        return ImageDataset(records, indices, transform, augment_seed)

    def note_skipped(self, skipped: Sequence[Skipped]) -> None:
        """Record unreadable items seen in a batch: each file is named once in a warning."""
        from vitcli import output

        for item in skipped:
            if item.path not in self.unreadable:
                self.unreadable[item.path] = item.reason
                output.warn(f"skipping unreadable image {item.path}: {item.reason}")


# ---------------------------------------------------------------------------------------- splits
def carve(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(keep, held_out) index arrays: a stratified, seeded `fraction` of each class held out."""
    if labels.ndim > 1:  # multi-hot label sets
        from vitcli.data import multilabel

        return multilabel.carve(labels, fraction, seed)
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


def _with_minival(source: DatasetSource, records: Records, fraction: float, seed: int, asked: bool) -> None:
    """Carve the minival; a default one (not `asked` for) under MIN_MINIVAL images is left in train."""
    keep, held = carve(records.labels, fraction, seed)
    if not asked and 0 < len(held) < MIN_MINIVAL:
        source.minival_too_small = len(held)
        keep, held = np.arange(len(records)), held[:0]
    source._parts["train"] = (records, keep)
    if len(held):
        source._parts["minival"] = (records, held)


def default_val_split(spec: str) -> float:
    """The minival fraction `open_dataset(spec)` carves when `val_split` is not given (MIN_MINIVAL aside):
    a named set's own (also as a Hugging Face dataset's last name part), else DEFAULT_VAL_SPLIT. A run
    that must select (a sweep, `--patience`) passes it as its `val_split`, so it is carved whatever its size."""
    from vitcli.data import hf

    if hf.is_hf(spec):
        base = hf.base_name(spec)
    elif not Path(spec).expanduser().is_dir():
        base = spec.strip().lower()
    else:
        return DEFAULT_VAL_SPLIT
    return MINIVAL_FRACTION.get(ALIASES.get(base, base), DEFAULT_VAL_SPLIT)


# ---------------------------------------------------------------------------------------- opening
def open_dataset(spec: str, *, data_dir: Path | None = None, val_split: float | None = None, seed: int = 0,
                 download: bool = True, image_column: str | None = None,
                 label_column: str | None = None) -> DatasetSource:
    """Open a named dataset, an ImageFolder tree or a Hugging Face dataset. Named datasets are downloaded
    (by torchvision) into `data_dir` only when their files are not already there and `download` is set;
    `image_column` / `label_column` choose the columns of a Hugging Face dataset."""
    from vitcli.data import hf, multilabel, wds

    if wds.is_wds(spec):  # WebDataset shards: the splits vit shard wrote (nothing carved from a stream)
        return wds.open_shards(spec)
    if val_split is not None and not 0.0 <= val_split < 1.0:
        raise DataError(f"--val-split {val_split} is out of range", "give a fraction such as 0.1")
    name = ALIASES.get(spec.strip().lower(), spec.strip().lower())
    path = Path(spec).expanduser()
    if hf.is_hf(spec):
        opened = hf.open_parts(spec, image_column=image_column, label_column=label_column, download=download)
        return from_parts(opened.name, opened.classes, opened.parts, root=opened.root, val_split=val_split,
                          fraction=default_val_split(spec), seed=seed)
    if image_column or label_column:
        from vitcli.errors import UsageError

        raise UsageError("--image-column and --label-column choose the columns of a Hugging Face dataset",
                         f"{spec} is not one: drop them, or give --dataset hf:NAME or a save_to_disk folder")
    if name in NAMED and not path.is_dir():
        root = Path(data_dir).expanduser() if data_dir else default_data_dir()
        return _open_named(name, root, val_split, seed, download)
    if path.is_dir() and multilabel.is_csv_folder(path):
        opened = multilabel.open_csv_parts(path)
        return from_parts(opened.name, opened.classes, opened.parts, root=opened.root, val_split=val_split, seed=seed)
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
    from vitcli import env

    where, url = LAYOUTS[name]
    why = "offline mode is on" if env.offline() else "downloads are off" if not download else \
        "it could not be downloaded"
    missing = DataError(
        f"dataset {name} is not in {root} and {why}",
        f"put {where} under {root} (download {url}), or pass --data-dir where they are")
    try:
        trains, test = _load_named(name, root, download=False)
    except RuntimeError:  # torchvision: "Dataset not found ..."
        if not download or env.offline():
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
    _with_minival(source, _concat([_records(t) for t in trains]), fraction, seed, val_split is not None)
    test_records = _records(test)
    source._parts["test"] = (test_records, np.arange(len(test_records)))
    source.splits = [s for s in ("train", "minival", "test") if s in source._parts]
    return source


def _class_dirs(folder: Path) -> list[str]:
    return sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def _scan(folder: Path, classes: list[str]) -> Records:
    from vitcli.data.inputs import is_image_file, walk

    paths, labels = [], []
    real_dirs = _real_class_dirs(folder, classes)
    seen: set[str] = set()
    for label, cls in enumerate(classes):
        cdir = folder / cls
        if not cdir.is_dir():
            continue
        for p in sorted(x for x in walk(cdir) if is_image_file(x) and x.is_file()):
            real = os.path.realpath(p)
            _check_reach(folder, cls, p, real, real_dirs)
            if real not in seen:  # each real file once (two links to one image in a class)
                seen.add(real)
                paths.append(p)
                labels.append(label)
    return Records(labels, paths=paths)


def _real_class_dirs(folder: Path, classes: list[str]) -> dict[str, str]:
    """Each class folder's real path; a class folder that is (or holds, or lies in) another class, or
    the dataset root, through a link, is an error: its images would count under two labels."""
    root = os.path.realpath(folder)
    real = {cls: os.path.realpath(folder / cls) for cls in classes if (folder / cls).is_dir()}
    linked = sorted(real, key=lambda c: not (folder / c).is_symlink())  # the links first: they are the cause
    for cls in linked:
        path = real[cls]
        for other, other_path in [("the dataset root", root)] + [(f"class {o!r}", real[o]) for o in real if o != cls]:
            if path == other_path or _inside(other_path, path) or _inside(path, other_path) and other_path != root:
                raise DataError(f"class folder {folder / cls} reaches {other} ({other_path}) through a link",
                                "each class folder must hold only its own images: remove or replace that link")
    return real


def _check_reach(folder: Path, cls: str, path: Path, real: str, real_dirs: dict[str, str]) -> None:
    """An image reached from class `cls` must not lie in another class folder or at the dataset root."""
    own = real_dirs.get(cls)
    if own is not None and _inside(real, own):
        return
    root = os.path.realpath(folder)
    other = next((o for o, q in real_dirs.items() if o != cls and _inside(real, q)), None)
    if other is not None or os.path.dirname(real) == root:
        where = f"class {other!r}" if other is not None else "the dataset root"
        raise DataError(f"{path} (class {cls!r}) is {real}, in {where}, through a link",
                        "each class folder must hold only its own images: remove or replace that link")


def _inside(path: str, folder: str) -> bool:
    return path.startswith(folder.rstrip(os.sep) + os.sep)


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
    records = _scan(train_dir, classes)
    if len(records) == 0:
        raise DataError(f"{train_dir} holds no images", "lay the images out as <class>/<image>")
    parts = {"train": records}
    for split in ("val", "test"):
        d = found[split]
        if d is None:
            continue
        extra = sorted(set(_class_dirs(d)) - set(classes))
        if extra:
            raise DataError(f"{d} has class folders that train/ lacks: {', '.join(extra[:5])}",
                            "every class needs training images; fix the folder names")
        parts[split] = _scan(d, classes)
    return from_parts(folder.name or str(folder), classes, parts, root=str(folder), val_split=val_split, seed=seed)


def from_parts(name: str, classes: list[str], parts: dict, *, root: str = "", val_split: float | None = None,
               fraction: float = DEFAULT_VAL_SPLIT, seed: int = 0) -> DatasetSource:
    """A source from the `Records` of its train, val and test parts (an ImageFolder tree's folders, a
    Hugging Face dataset's splits): a val part selects the model; without one (or with `val_split`) a
    minival of `val_split`, else `fraction`, is carved from train. Empty parts are left out."""
    source = DatasetSource(name, classes, [], root)
    for split in ("val", "test"):
        part = parts.get(split)
        if part is not None and len(part):
            source._parts[split] = (part, np.arange(len(part)))
    train = parts.get("train")
    if train is not None and len(train):
        if "val" not in source._parts or val_split:
            _with_minival(source, train, fraction if val_split is None else val_split, seed, val_split is not None)
        else:
            source._parts["train"] = (train, np.arange(len(train)))
    source.splits = [s for s in ("train", "minival", "val", "test") if s in source._parts]
    return source


def describe(source: DatasetSource) -> str:
    sizes = ", ".join(f"{s} {source.size(s)}" for s in source.splits)
    return f"{source.name}: {source.num_classes} classes, {sizes}"
