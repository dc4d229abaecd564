"""Hugging Face datasets as vitcli datasets (the `datasets` library, extra `vitcli[datasets]`).

    --dataset hf:beans                 datasets.load_dataset("beans"), cached under HF_HOME/datasets
    --dataset hf:uoft-cs/cifar100      an org/name id; hf:NAME:CONFIG picks a configuration
    --dataset hf:./my_repo_folder      a local dataset folder, as load_dataset reads it (parquet, imagefolder)
    --dataset ./beans-saved            a folder written by Dataset(Dict).save_to_disk, recognised as such

The image column is the first `Image` feature, the label column the first `ClassLabel` (its names become
the class names; else a `Sequence(ClassLabel)`: multi-label, vitcli.data.multilabel; else an integer or
string column named label/labels/class/target);
`--image-column` / `--label-column` choose others. Splits: train -> train, validation (valid, val,
dev) -> val, test -> test; a single `Dataset` is the training set. vitcli.data.source.from_parts then
makes the `DatasetSource` as for an ImageFolder tree (val selects, else minival is carved from train).
Rows whose label is missing (-1, as in some unlabelled test splits) are left out.

Images are read through the one image path: each row's Image column is read undecoded (the stored
file's bytes, or the path of the file it points to) and decoded by vitcli.data.images.load_image, so a
saved copy of a folder gives exactly the folder's pixels, and so its accuracy. Offline mode
(`--offline`, HF_HUB_OFFLINE) is passed to `datasets`, which then uses its cache only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vitcli.data.loader import Records
from vitcli.errors import DataError, VitError

PREFIX = "hf:"
SPLIT_NAMES = {
    "train": ("train", "training"),
    "val": ("validation", "valid", "val", "dev"),
    "test": ("test", "testing"),
}
LABEL_NAMES = ("label", "labels", "class", "target")


def is_saved(path: Path) -> bool:
    """A folder written by `save_to_disk` (a DatasetDict, or one Dataset)."""
    path = Path(path)
    return (path / "dataset_dict.json").is_file() or (
        (path / "dataset_info.json").is_file() and (path / "state.json").is_file()
    )


def is_hf(spec: str) -> bool:
    return str(spec).startswith(PREFIX) or is_saved(Path(str(spec)).expanduser())


def base_name(spec: str) -> str:
    """The last part of a Hugging Face dataset's name (the Hub id's, or the saved folder's), lower case:
    what picks a named set's minival fraction (`hf:uoft-cs/cifar10` -> cifar10)."""
    spec = str(spec)
    name = spec[len(PREFIX) :].partition(":")[0] if spec.startswith(PREFIX) else Path(spec).expanduser().resolve().name
    return name.rstrip("/").rsplit("/", 1)[-1].lower()


@dataclass
class Opened:
    name: str  # as shown (the Hub id, or the folder's name)
    classes: list
    parts: dict  # train / val / test -> Records
    root: str


class Encoded:
    """Item j: the image file's bytes stored in the row, or the path of the file it points to. Holds the
    `datasets.Dataset` (one column, undecoded), which pickles by reference to its Arrow files, so
    DataLoader workers do not copy the images."""

    def __init__(self, dataset, column: str):
        import datasets

        self.column = column
        self.dataset = dataset.select_columns([column]).cast_column(column, datasets.Image(decode=False))

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, j: int):
        item = self.dataset[int(j)][self.column] or {}
        return item.get("bytes") or item.get("path")


def _import():
    try:
        import datasets
    except ImportError:
        raise VitError(
            "Hugging Face datasets need the datasets package, which is not installed", "pip install 'vitcli[datasets]'"
        ) from None
    from huggingface_hub import constants

    from vitcli import env, output

    offline = env.offline()
    datasets.config.HF_HUB_OFFLINE = constants.HF_HUB_OFFLINE = offline  # as set now, not at first import
    if not output.show_progress():
        datasets.disable_progress_bars()
    if not env.debug():
        datasets.logging.set_verbosity_error()
    return datasets


def open_parts(
    spec: str, *, image_column: str | None = None, label_column: str | None = None, download: bool = True
) -> Opened:
    """The classes and the train / val / test `Records` of a Hugging Face dataset."""
    datasets = _import()
    spec = str(spec)
    if spec.startswith(PREFIX):
        name, _, config = spec[len(PREFIX) :].partition(":")
        if not name:
            raise DataError(f"--dataset {spec}: no dataset name", "e.g. --dataset hf:beans or hf:NAME:CONFIG")
        loaded = _load(datasets, name, config or None, download)
        root = name
    else:
        path = Path(spec).expanduser()
        name = path.resolve().name
        try:
            loaded = datasets.load_from_disk(str(path))
        except (OSError, ValueError) as e:
            raise DataError(
                f"{path} looks like a saved Hugging Face dataset but cannot be read: {e}",
                "write it again with save_to_disk",
            ) from None
        root = str(path)
    splits = _map_splits(loaded, name)
    first = next(iter(splits.values()))
    image_col = _image_column(first.features, image_column, name)
    label_col = _label_column(first.features, label_column, name)
    classes, encode = _classes(splits, label_col)
    parts = {}
    for split, ds in splits.items():
        labels = encode(ds[label_col])
        if labels.ndim == 1:
            bad = np.flatnonzero((labels < -1) | (labels >= len(classes)))
            if len(bad):  # checked when the dataset is opened, not as an index error deep in a loss
                raise DataError(
                    f"{name} {split}: row {int(bad[0])} has label {int(labels[bad[0]])}, outside the "
                    f"{len(classes)} classes of its {label_col!r} column ({len(bad)} such rows)",
                    "fix the dataset's labels (-1 marks a row without one)",
                )
        keep = np.flatnonzero(labels >= 0) if labels.ndim == 1 else np.arange(len(labels))
        if len(keep) < len(labels):
            ds, labels = ds.select(keep), labels[keep]
        if len(ds) == 0:
            continue
        paths = _stored_paths(ds, image_col)
        names = [f"{name}/{split}#{j}" + (f" ({p})" if p else "") for j, p in enumerate(paths)]
        parts[split] = Records(labels, encoded=Encoded(ds, image_col), names=names)
    return Opened(name, classes, parts, root)


def _load(datasets, name: str, config: str | None, download: bool):
    from vitcli import env

    try:
        return datasets.load_dataset(
            name,
            config,
            cache_dir=env.datasets_cache_dir(),
            download_mode=None if download else "reuse_cache_if_exists",
        )
    except VitError:
        raise
    except Exception as e:  # noqa: BLE001 - datasets raises many kinds; the first line says which
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        if env.offline():
            raise DataError(
                f"Hugging Face dataset {name} is not in the cache and offline mode is on ({first})",
                "run it once online (it is then cached under HF_HOME/datasets), or drop --offline",
            ) from None
        raise DataError(
            f"cannot load Hugging Face dataset {name}{f' ({config})' if config else ''}: {first}",
            "check the name (and :CONFIG) on the Hub, your network and HF_ENDPOINT",
        ) from None


def _map_splits(loaded, name: str) -> dict:
    if not hasattr(loaded, "keys"):  # one Dataset: the training set
        return {"train": loaded}
    out = {}
    for split, names in SPLIT_NAMES.items():
        found = next((n for n in names if n in loaded), None)
        if found is not None:
            out[split] = loaded[found]
    if not out:
        raise DataError(
            f"Hugging Face dataset {name} has no train, validation or test split (its splits: {', '.join(loaded)})",
            "save the split you want as its own dataset (save_to_disk) and give that folder",
        )
    return out


def _image_column(features, chosen: str | None, name: str) -> str:
    import datasets

    images = [c for c, f in features.items() if isinstance(f, datasets.Image)]
    if chosen is not None:
        if chosen not in features:
            raise DataError(
                f"--image-column {chosen}: dataset {name} has no such column", f"its columns: {', '.join(features)}"
            )
        if not isinstance(features[chosen], datasets.Image):
            raise DataError(
                f"--image-column {chosen} is a {type(features[chosen]).__name__} column, not images",
                f"image columns: {', '.join(images) or 'none'}",
            )
        return chosen
    if not images:
        raise DataError(
            f"dataset {name} has no Image column (its columns: {', '.join(features)})",
            "vitcli trains and evaluates on images; give --image-column for an Image feature",
        )
    return images[0]


def _label_column(features, chosen: str | None, name: str) -> str:
    import datasets

    from vitcli.data import multilabel

    def usable(f) -> bool:
        kinds = ("int", "uint", "string", "large_string")
        return (
            isinstance(f, datasets.ClassLabel)
            or (isinstance(f, datasets.Value) and f.dtype.startswith(kinds))
            or multilabel.is_sequence_of_classes(f)
        )

    if chosen is not None:
        if chosen not in features:
            raise DataError(
                f"--label-column {chosen}: dataset {name} has no such column", f"its columns: {', '.join(features)}"
            )
        if not usable(features[chosen]):
            raise DataError(
                f"--label-column {chosen} holds {features[chosen]}, not class labels",
                "give a ClassLabel, integer or string column",
            )
        return chosen
    found = (
        next((c for c, f in features.items() if isinstance(f, datasets.ClassLabel)), None)
        or next((c for c, f in features.items() if multilabel.is_sequence_of_classes(f)), None)
        or next((c for c in LABEL_NAMES if c in features and usable(features[c])), None)
    )
    if found is None:
        raise DataError(
            f"dataset {name} has no label column (its columns: {', '.join(features)})",
            "give --label-column for the column that holds the class",
        )
    return found


def _classes(splits: dict, column: str):
    """The class names and a function from a column's values to class indices (-1: no label)."""
    import datasets

    from vitcli.data import multilabel

    feature = next(iter(splits.values())).features[column]
    if multilabel.is_sequence_of_classes(feature):  # multi-label: multi-hot rows
        return multilabel.sequence_classes(feature)
    if isinstance(feature, datasets.ClassLabel):
        return list(feature.names), lambda values: np.asarray([-1 if v is None else v for v in values], dtype=np.int64)
    values = [np.asarray(ds[column]) for ds in splits.values()]
    if feature.dtype in ("string", "large_string"):
        names = sorted({str(v) for vs in values for v in vs if v is not None and str(v) != ""})
        index = {n: i for i, n in enumerate(names)}
        return names, lambda vs: np.array([index.get(str(v), -1) for v in vs], dtype=np.int64)
    top = max((int(vs.max()) for vs in values if len(vs)), default=-1)
    return [str(i) for i in range(top + 1)], lambda vs: np.asarray(vs, dtype=np.int64)


def _stored_paths(ds, column: str) -> list:
    """The file name each row's image was stored from (for messages), read from Arrow without the bytes."""
    import pyarrow.compute as pc

    table = ds.select_columns([column]).with_format("arrow")[:]
    try:
        return [p or "" for p in pc.struct_field(table.column(column), "path").to_pylist()]
    except Exception:  # noqa: BLE001 - names only
        return [""] * len(ds)
