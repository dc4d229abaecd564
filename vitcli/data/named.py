"""The named datasets (`pets`, `flowers102`, `cifar10`, `cifar100`): torchvision's classes, their
downloads and exactly their on-disk layouts under the data folder (by default `<vit cache>/datasets`),
their aliases and the share of their training images each carves as its minival.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vitcli.data.loader import Records
from vitcli.data.source import DatasetSource, carve_minival
from vitcli.errors import DataError

NAMED = ("pets", "flowers102", "cifar10", "cifar100")
MINIVAL_FRACTION = {"pets": 0.10, "flowers102": 0.10, "cifar10": 0.02, "cifar100": 0.02}
ALIASES = {
    "oxford_iiit_pet": "pets",
    "oxford-iiit-pet": "pets",
    "pet": "pets",
    "flowers": "flowers102",
    "oxford_flowers102": "flowers102",
    "cifar-10": "cifar10",
    "cifar-100": "cifar100",
}

# What torchvision leaves on disk under the data folder (and what a user puts there by hand).
LAYOUTS = {
    "pets": (
        "oxford-iiit-pet/images/*.jpg and oxford-iiit-pet/annotations/{trainval,test}.txt",
        "https://www.robots.ox.ac.uk/~vgg/data/pets/data/{images,annotations}.tar.gz, extracted into oxford-iiit-pet/",
    ),
    "flowers102": (
        "flowers-102/jpg/image_NNNNN.jpg, flowers-102/imagelabels.mat and flowers-102/setid.mat",
        "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/ (102flowers.tgz extracted into "
        "flowers-102/, plus imagelabels.mat and setid.mat)",
    ),
    "cifar10": (
        "cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}",
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz, extracted in place",
    ),
    "cifar100": (
        "cifar-100-python/{train,test,meta}",
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz, extracted in place",
    ),
}


def default_data_dir() -> Path:
    from vitcli import env

    return Path(env.vit_cache_dir()) / "datasets"


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


_SPLITS = {
    "pets": ("trainval", "test"),
    "flowers102": (("train", "val"), "test"),
    "cifar10": ("train", "test"),
    "cifar100": ("train", "test"),
}


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


def open_named(name: str, root: Path, val_split: float | None, seed: int, download: bool) -> DatasetSource:
    from vitcli import env

    where, url = LAYOUTS[name]
    why = (
        "offline mode is on" if env.offline() else "downloads are off" if not download else "it could not be downloaded"
    )
    missing = DataError(
        f"dataset {name} is not in {root} and {why}",
        f"put {where} under {root} (download {url}), or pass --data-dir where they are",
    )
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
            raise DataError(
                f"{missing.message}: {str(e).splitlines()[0] if str(e) else type(e).__name__}", missing.hint
            ) from e
    except (OSError, ValueError) as e:
        raise DataError(
            f"dataset {name} in {root} is damaged: {e}", f"delete it and download again, or put {where} under {root}"
        ) from e
    classes = list(trains[0].classes)
    source = DatasetSource(name, classes, ["train", "minival", "test"], str(root))
    fraction = MINIVAL_FRACTION[name] if val_split is None else val_split
    carve_minival(source, _concat([_records(t) for t in trains]), fraction, seed, val_split is not None)
    test_records = _records(test)
    source._parts["test"] = (test_records, np.arange(len(test_records)))
    source.splits = [s for s in ("train", "minival", "test") if s in source._parts]
    return source
