"""`vit shard SRC OUT`: a dataset written as WebDataset tar shards, for streaming (vitcli.data.wds).

    OUT/train-000000.tar ... OUT/train-000003.tar   samples: KEY.jpg (the image file's bytes as stored,
    OUT/train.json                                  or PNG for an array), KEY.cls (the class index)
    OUT/test-000000.tar, OUT/test.json              one JSON per split, beside its shards

Each split's JSON says what its shards hold: the label names, the images per class, the samples per
shard, the split, the source; `complete` turns true when the last shard is written. The samples go
into the shards in a seeded random order (SHUFFLE_SEED), not class by class: a rank or a DataLoader
worker that streams a few shards then still sees every class, and a shuffle buffer of a few hundred
samples mixes them well.

Atomic and resumable: a shard is written to a temporary file and renamed when whole, so a shard under
its final name is complete; a rerun with the same plan (the JSON matches) skips those shards, and a
different plan in the same folder is refused rather than mixed.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from vitcli.errors import DataError, UsageError

FORMAT = 1
SHUFFLE_SEED = 0
EXTENSIONS = {
    "jpeg": "jpg",
    "jpg": "jpg",
    "png": "png",
    "webp": "webp",
    "bmp": "bmp",
    "gif": "gif",
    "tif": "tiff",
    "tiff": "tiff",
    "ppm": "ppm",
    "heic": "heic",
    "heif": "heif",
    "mpo": "jpg",
}


def shard_name(split: str, index: int) -> str:
    return f"{split}-{index:06d}.tar"


def _image_bytes(records, j: int) -> tuple[bytes, str]:
    """(the image's bytes as stored, their extension); an array item (CIFAR) becomes a PNG."""
    if records.paths is not None:
        path = Path(records.paths[j])
        try:
            data = path.read_bytes()
        except OSError as e:
            raise DataError(
                f"cannot read {path}: {e.strerror or e}",
                "fix or remove the file, then run again (the shards already written are kept)",
            ) from None
        ext = EXTENSIONS.get(path.suffix.lower().lstrip("."))
        return data, ext or _sniff(data)
    if records.encoded is not None:
        item = records.encoded[j]
        data = bytes(item) if isinstance(item, (bytes, bytearray, memoryview)) else Path(item).read_bytes()
        return data, _sniff(data)
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(records.array[j]).save(buffer, format="PNG")
    return buffer.getvalue(), "png"


def _sniff(data: bytes) -> str:
    """The extension of encoded image bytes, from their header (an unreadable file keeps `img`: the
    loader reports it as it would the file)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            return EXTENSIONS.get((im.format or "").lower(), "img")
    except Exception:  # noqa: BLE001 - stored as is; reading it fails later, reported there
        return "img"


def plan_split(source, split: str, shard_size: int) -> dict:
    """The split's JSON as planned: everything but `complete` is known before a byte is written."""
    subset = source.subset(split)
    labels = np.asarray(subset.labels, dtype=np.int64)
    order = np.random.default_rng(SHUFFLE_SEED).permutation(len(labels))
    counts = np.bincount(labels, minlength=source.num_classes)
    sizes = [min(shard_size, len(labels) - start) for start in range(0, len(labels), shard_size)]
    return {
        "format": FORMAT,
        "split": split,
        "source": source.name,
        "classes": list(source.classes),
        "counts": {c: int(n) for c, n in zip(source.classes, counts)},
        "samples": int(len(labels)),
        "shard_size": shard_size,
        "shards": [{"name": shard_name(split, i), "samples": n} for i, n in enumerate(sizes)],
        "order_seed": SHUFFLE_SEED,
        "complete": False,
        "_order": order,
    }


def _check_resumable(path: Path, planned: dict) -> None:
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return  # no plan yet (or a damaged one, rewritten below)
    keys = ("format", "split", "source", "classes", "counts", "samples", "shard_size", "order_seed")
    changed = [k for k in keys if old.get(k) != planned.get(k)]
    if changed:
        raise UsageError(
            f"{path.parent} already holds {planned['split']} shards of another plan ({', '.join(changed)} differ)",
            "write to an empty folder, or delete the old shards",
        )


def write_split(source, split: str, out: Path, shard_size: int, advance=lambda n=1: None) -> dict:
    """Write one split's shards (skipping the complete ones already there) and its JSON; returns the JSON
    plus `written` and `kept` (shards written now, shards found complete)."""
    import webdataset as wds

    from vitcli.output import TMP_MARK, atomic_write, dumps

    planned = plan_split(source, split, shard_size)
    order = planned.pop("_order")
    meta_path = out / f"{split}.json"
    _check_resumable(meta_path, planned)
    for stale in out.glob(f".{split}-*{TMP_MARK}*"):  # a killed writer's half shard
        stale.unlink(missing_ok=True)
    atomic_write(meta_path, dumps(planned, indent=1) + "\n")
    records, indices = source.subset(split).records, source.subset(split).indices
    written = kept = 0
    for i, shard in enumerate(planned["shards"]):
        target = out / shard["name"]
        members = order[i * shard_size : i * shard_size + shard["samples"]]
        if target.is_file():
            kept += 1
            advance(len(members))
            continue

        def write(tmp, members=members, i=i):
            with wds.TarWriter(str(tmp), encoder=False, mtime=0) as sink:
                for k, m in enumerate(members):
                    data, ext = _image_bytes(records, int(indices[m]))
                    sink.write(
                        {
                            "__key__": f"{split}{i:06d}_{k:06d}",
                            ext: data,
                            "cls": str(records.labels[indices[m]]).encode(),
                        }
                    )
                    advance()

        atomic_write(target, write)
        written += 1
    planned["complete"] = True
    atomic_write(meta_path, dumps(planned, indent=1) + "\n")
    return {**planned, "written": written, "kept": kept}


def write_shards(
    spec: str,
    out: str | Path,
    *,
    shard_size: int = 1000,
    splits: list[str] | None = None,
    data_dir: Path | None = None,
    download: bool = True,
    image_column: str | None = None,
    label_column: str | None = None,
    val_split: float | None = None,
) -> dict:
    """Shard the dataset `spec` (a folder, a named dataset, hf:NAME) into `out`: every split it has, or
    `splits`. Returns {"out": ..., "splits": {split: JSON + written/kept}}."""
    from vitcli import output
    from vitcli.data.datasets import open_dataset

    if shard_size < 1:
        raise UsageError(f"--shard-size {shard_size}: expected at least 1")
    source = open_dataset(
        spec,
        data_dir=data_dir,
        download=download,
        image_column=image_column,
        label_column=label_column,
        val_split=val_split,
    )
    chosen = splits or list(source.splits)
    missing = [s for s in chosen if s not in source.splits]
    if missing:
        raise UsageError(
            f"dataset {source.name} has no {missing[0]!r} split", f"its splits: {', '.join(source.splits)}"
        )
    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    result = {"out": str(out), "source": source.name, "splits": {}}
    total = sum(source.size(s) for s in chosen)
    with output.progress("shard", total=total, unit="img") as advance:
        for split in chosen:
            result["splits"][split] = write_split(source, split, out, shard_size, advance)
    return result
