"""ImageFolder trees: `train/` plus `val/` and/or `test/` class folders (`SPLIT_DIRS`), or one folder of
class folders, scanned into the `Records` of each split. A class folder must hold only its own images: a
link that reaches another class, or the dataset root, is an error, and each real file is counted once.
"""

from __future__ import annotations

import os
from pathlib import Path

from vitcli.data.loader import Records
from vitcli.data.source import DatasetSource, from_parts
from vitcli.errors import DataError

SPLIT_DIRS = {"train": ("train", "training"), "val": ("val", "valid", "validation"), "test": ("test", "testing")}


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
                raise DataError(
                    f"class folder {folder / cls} reaches {other} ({other_path}) through a link",
                    "each class folder must hold only its own images: remove or replace that link",
                )
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
        raise DataError(
            f"{path} (class {cls!r}) is {real}, in {where}, through a link",
            "each class folder must hold only its own images: remove or replace that link",
        )


def _inside(path: str, folder: str) -> bool:
    return path.startswith(folder.rstrip(os.sep) + os.sep)


def open_folder(folder: Path, val_split: float | None, seed: int) -> DatasetSource:
    found = {
        split: next((folder / n for n in names if (folder / n).is_dir()), None) for split, names in SPLIT_DIRS.items()
    }
    train_dir = found["train"]
    if train_dir is None:
        if found["val"] or found["test"]:
            raise DataError(
                f"{folder} has a val/ or test/ folder but no train/ folder",
                "put the training images in train/<class>/ beside them",
            )
        train_dir = folder  # one folder of class folders
    classes = _class_dirs(train_dir)
    if not classes:
        raise DataError(
            f"{train_dir} holds no class folders",
            "lay the images out as <class>/<image> (ImageFolder), e.g. train/ants/1.jpg",
        )
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
            raise DataError(
                f"{d} has class folders that train/ lacks: {', '.join(extra[:5])}",
                "every class needs training images; fix the folder names",
            )
        parts[split] = _scan(d, classes)
    return from_parts(folder.name or str(folder), classes, parts, root=str(folder), val_split=val_split, seed=seed)
