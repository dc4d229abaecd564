"""WebDataset shards as a vitcli dataset: `--dataset wds:DIR` or `wds:PATTERN` (written by `vit shard`).

    wds:shards/                                   every SPLIT.json in the folder, with its shards
    wds:shards/train-{000000..000099}.tar          those shards (brace pattern or glob); the split's JSON
    wds:https://host/data/train-{000000..000099}.tar   is read beside the first one (train.json)

The training split is streamed (vitcli.data.stream: shards split across ranks and DataLoader workers,
a seeded shuffle buffer, the same number of batches on every rank, exact resume); the other splits
(minival, val, test) and a non-training use of train (`vit eval --split train`, LP-FT's probe) are read
at random from local shards through an index of the tar members, built when first needed (headers and
the tiny .cls members only). Selection: a minival or val split of the shards selects the model; none is
carved from a stream (shard one with `vit shard --val-split 0.1`).

`ShardSource` answers as vitcli.data.source.DatasetSource does (names, splits, sizes, `subset`,
unreadable images); it does not import it (datasets.open_dataset opens wds: specs through this module).
"""

from __future__ import annotations

import glob
import json
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from vitcli.data.loader import ImageDataset, Records
from vitcli.errors import DataError, UsageError, VitError

PREFIX = "wds:"
SPLITS = ("train", "minival", "val", "test")
REMOTE = ("http://", "https://", "pipe:", "gs://", "s3://")


def is_wds(spec) -> bool:
    return str(spec).startswith(PREFIX)


def check_val_split(val_split: float | None) -> None:
    """Shards are read as a stream, so no minival is carved from them: a --val-split is refused, not dropped."""
    if val_split is not None:
        raise UsageError(
            "--val-split does not apply to WebDataset shards: nothing is carved from a stream",
            "carve it when sharding: `vit shard SOURCE OUT --val-split 0.1` writes a minival split of shards",
        )


def require():
    try:
        import webdataset
    except ImportError:
        raise VitError(
            "WebDataset shards need the webdataset package, which is not installed", "pip install 'vitcli[wds]'"
        ) from None
    return webdataset


def is_remote(url: str) -> bool:
    return str(url).startswith(REMOTE)


@dataclass
class SplitShards:
    """One split: its JSON (vit shard's) and where each of its shards is."""

    meta: dict
    urls: list

    @property
    def counts(self) -> list[int]:
        by_name = {s["name"]: int(s["samples"]) for s in self.meta["shards"]}
        return [by_name[_basename(u)] for u in self.urls]

    @property
    def samples(self) -> int:
        return sum(self.counts)


def _basename(url: str) -> str:
    return str(url).rstrip("/").rsplit("/", 1)[-1]


def _read_json(location: str) -> dict:
    try:
        if is_remote(location):
            from webdataset import gopen

            with gopen.gopen(location, "rb") as fh:
                meta = json.loads(fh.read().decode("utf-8"))
        else:
            meta = json.loads(Path(location).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(
            f"cannot read the shards' description {location}: {e}",
            "write the shards with `vit shard SRC OUT` (it puts SPLIT.json beside them)",
        ) from None
    if not isinstance(meta, dict) or not {"split", "classes", "shards"} <= set(meta):
        raise DataError(
            f"{location} is not a shards description written by vit shard", "write the shards with `vit shard SRC OUT`"
        )
    if not meta.get("complete", True):
        raise DataError(
            f"the {meta['split']} shards described by {location} are not all written yet",
            "run the same `vit shard` command again: it resumes",
        )
    return meta


def _expand(pattern: str) -> list[str]:
    from braceexpand import braceexpand

    urls = [
        u
        for part in braceexpand(pattern)
        for u in ([part] if is_remote(part) or not glob.has_magic(part) else sorted(glob.glob(part)))
    ]
    return urls


def parse(spec: str) -> dict:
    """split -> SplitShards for `wds:DIR` or `wds:PATTERN`."""
    require()
    body = str(spec)[len(PREFIX) :]
    if not body:
        raise UsageError("--dataset wds: needs a folder or a shard pattern", "e.g. --dataset wds:shards/")
    folder = Path(body).expanduser()
    if not is_remote(body) and folder.is_dir():
        found = {}
        for path in [folder / f"{s}.json" for s in SPLITS if (folder / f"{s}.json").is_file()]:
            meta = _read_json(str(path))
            found[meta["split"]] = SplitShards(meta, [str(folder / s["name"]) for s in meta["shards"]])
        if not found:
            raise DataError(
                f"{folder} holds no shards description (SPLIT.json)",
                f"write shards there with `vit shard SRC {folder}`",
            )
        return found
    urls = _expand(os.path.expanduser(body) if not is_remote(body) else body)
    if not urls:
        raise DataError(
            f"no shards match {body}",
            "give a folder written by vit shard, or a pattern such as shards/train-{000000..000009}.tar",
        )
    first = urls[0]
    split = _basename(first).rsplit("-", 1)[0]
    where = first[: len(first) - len(_basename(first))]
    meta = _read_json(where + f"{split}.json")
    known = {s["name"] for s in meta["shards"]}
    unknown = [u for u in urls if _basename(u) not in known]
    if unknown:
        raise DataError(
            f"{_basename(unknown[0])} is not a shard of {where}{split}.json",
            "give shards of one split, written by one `vit shard`",
        )
    return {meta["split"]: SplitShards(meta, urls)}


# ------------------------------------------------------------------------------------ random access
class TarMembers:
    """Item j of a split's local shards: the image's bytes, read at their offset (for `Records.encoded`)."""

    def __init__(self, entries: list):
        self.entries = entries  # (tar path, offset, size)

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, j: int) -> bytes:
        path, offset, size = self.entries[int(j)]
        with open(path, "rb") as fh:
            fh.seek(offset)
            return fh.read(size)


def index(shards: SplitShards) -> Records:
    """`Records` over the split's samples in shard order (images read at random, labels from .cls)."""
    labels, entries, names = [], [], []
    for url in shards.urls:
        if is_remote(url):
            raise DataError(
                f"{url} is remote: only the training split is streamed",
                "copy the evaluation shards to a local folder (they are read at random)",
            )
        try:
            with tarfile.open(url, "r:") as tar:
                samples: dict = {}
                for m in tar:
                    if not m.isreg():
                        continue
                    key, _, ext = m.name.partition(".")
                    item = samples.setdefault(key, {})
                    if ext == "cls":
                        item["cls"] = int(tar.extractfile(m).read().decode().strip())
                    else:
                        item["image"] = (url, m.offset_data, m.size)
        except (OSError, tarfile.TarError, ValueError) as e:
            raise DataError(
                f"cannot read the shard {url}: {e}", "write it again with `vit shard` (delete the file first)"
            ) from None
        for key, item in samples.items():
            if "cls" not in item or "image" not in item:
                raise DataError(f"{url}: sample {key} lacks its image or class", "write the shard again")
            labels.append(item["cls"])
            entries.append(item["image"])
            names.append(f"{_basename(url)}:{key}")
    return Records(labels, encoded=TarMembers(entries), names=names)


# ------------------------------------------------------------------------------------------- source
@dataclass
class ShardSource:
    name: str
    classes: list
    splits: list
    root: str
    shards: dict = field(repr=False)  # split -> SplitShards
    unreadable: dict = field(default_factory=dict)
    minival_too_small: int | None = None
    multi_label: bool = False  # a shard holds one class index per image (KEY.cls)
    _records: dict = field(default_factory=dict, repr=False)

    @property
    def _parts(self):
        """What a folder source keeps per split; shards have none to convert (multi-hot labels)."""
        raise UsageError(
            "--multi-label on WebDataset shards: shards hold one class index per image",
            "train multi-label on the folder or Hugging Face dataset itself",
        )

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def selection_split(self) -> str | None:
        return next((s for s in ("minival", "val") if s in self.splits), None)

    @property
    def skipped_count(self) -> int:
        return len(self.unreadable)

    def size(self, split: str) -> int:
        return self._split(split).samples

    def _split(self, split: str) -> SplitShards:
        if split not in self.shards:
            raise DataError(f"dataset {self.name} has no {split!r} split", f"its splits are: {', '.join(self.splits)}")
        return self.shards[split]

    def subset(self, split: str, transform=None, augment_seed: int | None = None):
        """The training split with an augmentation seed: a `vitcli.data.stream.ShardStream`; any other
        use: an `ImageDataset` read at random from the local shards."""
        shards = self._split(split)
        if split == "train" and augment_seed is not None:
            from vitcli.data.stream import ShardStream

            return ShardStream(shards.urls, shards.counts, transform=transform, augment_seed=augment_seed)
        if split not in self._records:
            self._records[split] = index(shards)
        return ImageDataset(self._records[split], None, transform, augment_seed)

    def note_skipped(self, skipped) -> None:
        from vitcli import output

        for item in skipped:
            if item.path not in self.unreadable:
                self.unreadable[item.path] = item.reason
                output.warn(f"skipping unreadable image {item.path}: {item.reason}")


def open_shards(spec: str) -> ShardSource:
    found = parse(spec)
    splits = [s for s in SPLITS if s in found]
    if not splits:
        raise DataError(f"{spec}: the shards are of split(s) {', '.join(found)}, none of {', '.join(SPLITS)}")
    classes = found[splits[0]].meta["classes"]
    for s in splits[1:]:
        if found[s].meta["classes"] != classes:
            raise DataError(
                f"{spec}: the {s} shards have other classes than the {splits[0]} shards",
                "shard every split of one dataset with one `vit shard`",
            )
    name = found[splits[0]].meta.get("source") or _basename(spec[len(PREFIX) :]) or "shards"
    return ShardSource(f"{name} (wds)", list(classes), splits, spec[len(PREFIX) :], {s: found[s] for s in splits})
