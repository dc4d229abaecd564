"""The dataset layer's front door, shared by `vit finetune`, `vit train` and `vit eval`: a dataset spec
-> a `DatasetSource` (vitcli.data.source: its splits, the minival carve, unreadable images).

A dataset spec is a name (`pets`, `flowers102`, `cifar10`, `cifar100`: vitcli.data.named), a path to
an ImageFolder tree (`train/` plus `val/` and/or `test/` class folders, or one folder of class folders
split by `val_split`: vitcli.data.imagefolder), a CSV folder of multi-label data (vitcli.data.multilabel),
WebDataset shards (`wds:DIR`, vitcli.data.wds) or a Hugging Face dataset (`hf:NAME[:CONFIG]`, or a
folder written by `save_to_disk`: vitcli.data.hf). `open_dataset` returns a `DatasetSource` whose
`.subset(split, transform)` is the one `vitcli.data.loader.ImageDataset`; `default_val_split` says
what share of the training data a spec's minival takes when none is asked for.
"""

from __future__ import annotations

from pathlib import Path

from vitcli.data.imagefolder import open_folder
from vitcli.data.named import ALIASES, MINIVAL_FRACTION, NAMED, default_data_dir, open_named
from vitcli.data.source import DEFAULT_VAL_SPLIT, DatasetSource, from_parts
from vitcli.errors import DataError


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


def open_dataset(
    spec: str,
    *,
    data_dir: Path | None = None,
    val_split: float | None = None,
    seed: int = 0,
    download: bool = True,
    image_column: str | None = None,
    label_column: str | None = None,
) -> DatasetSource:
    """Open a named dataset, an ImageFolder tree or a Hugging Face dataset. Named datasets are downloaded
    (by torchvision) into `data_dir` only when their files are not already there and `download` is set;
    `image_column` / `label_column` choose the columns of a Hugging Face dataset."""
    from vitcli.data import hf, multilabel, wds

    if wds.is_wds(spec):  # WebDataset shards: the splits vit shard wrote (nothing carved from a stream)
        wds.check_val_split(val_split)
        return wds.open_shards(spec)
    if val_split is not None and not 0.0 <= val_split < 1.0:
        raise DataError(f"--val-split {val_split} is out of range", "give a fraction such as 0.1")
    name = ALIASES.get(spec.strip().lower(), spec.strip().lower())
    path = Path(spec).expanduser()
    if hf.is_hf(spec):
        opened = hf.open_parts(spec, image_column=image_column, label_column=label_column, download=download)
        return from_parts(
            opened.name,
            opened.classes,
            opened.parts,
            root=opened.root,
            val_split=val_split,
            fraction=default_val_split(spec),
            seed=seed,
        )
    if image_column or label_column:
        from vitcli.errors import UsageError

        raise UsageError(
            "--image-column and --label-column choose the columns of a Hugging Face dataset",
            f"{spec} is not one: drop them, or give --dataset hf:NAME or a save_to_disk folder",
        )
    if name in NAMED and not path.is_dir():
        root = Path(data_dir).expanduser() if data_dir else default_data_dir()
        return open_named(name, root, val_split, seed, download)
    if path.is_dir() and multilabel.is_csv_folder(path):
        opened = multilabel.open_csv_parts(path)
        return from_parts(opened.name, opened.classes, opened.parts, root=opened.root, val_split=val_split, seed=seed)
    if path.is_dir():
        return open_folder(path, val_split, seed)
    raise DataError(
        f"dataset {spec!r} is neither a known name nor a folder",
        f"use one of {', '.join(NAMED)} or a path to an ImageFolder tree (train/ and val/ class folders)",
    )
