"""The one image -> batch path, for every command: a Dataset, a collate and a DataLoader factory.

    Records (labels + image files, or a uint8 array) --ImageDataset--> Sample | Skipped
        --collate--> Batch(positions, images, labels, skipped) --make_loader--> batches

`ImageDataset` reads each item with `vitcli.data.images.load_image` (JPEGs draft-decoded as far as the
transform's `draft_size` allows) and applies the transform. An image that cannot be read becomes a
`Skipped(position, path, reason)` record, never another sample: `collate` stacks the readable ones and
passes the skipped ones along, so predict reports them, eval counts them and training names them once.
`position` is the item's place in the dataset it was selected from, so results can be put back in
input order and a shard or subset still speaks of the original items.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

from vitcli.errors import ImageError
from vitcli.output import display

LABELLESS = -1  # the label of an image that has none (vit predict)
SMALL_JOB = 64  # fewer items than this: no worker processes (starting them costs more than decoding)


class Sample(NamedTuple):
    position: int
    image: Any  # the transformed image (a (C, H, W) tensor), or the PIL image without a transform
    label: int


class Skipped(NamedTuple):
    """An item that could not be read: dropped from its batch, reported, counted."""

    position: int
    path: str
    reason: str


class Batch(NamedTuple):
    positions: list  # of the readable items, in batch order
    images: Any  # (B, C, H, W) tensor, or None when every item of the batch was unreadable
    labels: Any  # (B,) int64 tensor, or None
    skipped: list  # [Skipped]


class Records:
    """The items of one underlying split, with labels: image files (paths), a uint8 array (CIFAR), or
    encoded images stored in dataset rows (a Hugging Face dataset's Image column: `encoded[j]` is the
    image file's bytes, or the path of a file, and `names[j]` names it)."""

    def __init__(
        self,
        labels: Sequence[int],
        paths: Sequence | None = None,
        array=None,
        encoded=None,
        names: Sequence[str] | None = None,
    ):
        labels = np.asarray(labels)
        self.labels = labels.astype(np.uint8 if labels.ndim > 1 else np.int64)  # (N,) or multi-hot (N, K)
        # paths: file paths (as str), http(s) URLs, or a StdinImage (vitcli.data.inputs)
        self.paths = [p if isinstance(p, str) else str(p) for p in paths] if paths is not None else None
        self.array = array  # (N, H, W, 3) uint8
        self.encoded = encoded
        self.names = list(names) if names is not None else None

    @classmethod
    def of_paths(cls, paths: Sequence) -> Records:
        """Image files without labels (vit predict, vit visualize)."""
        return cls([LABELLESS] * len(paths), paths=paths)

    def __len__(self) -> int:
        return len(self.labels)

    def name(self, j: int) -> str:
        if self.paths is not None:
            return display(self.paths[j])
        return self.names[j] if self.names is not None else f"#{j}"

    def image(self, j: int, draft_size: int | None = None):
        from vitcli.data import images, urls

        if self.paths is not None:
            item = self.paths[j]
            if hasattr(item, "data"):  # the image read from stdin
                return images.decode_image(item.data, "-", draft_size)
            if urls.is_url(item):
                return images.decode_image(urls.fetch(item), item, draft_size)
            return images.load_image(item, draft_size=draft_size)
        if self.encoded is not None:
            item = self.encoded[j]
            if isinstance(item, (bytes, bytearray, memoryview)):
                return images.decode_image(bytes(item), self.name(j), draft_size)
            return images.load_image(item or self.name(j), draft_size=draft_size)  # a file the row points to
        from PIL import Image

        return Image.fromarray(self.array[j])


class ImageDataset:
    """Map-style dataset over `records[indices]`: a `Sample`, or a `Skipped` record when unreadable.

    With `augment_seed` set, the random transforms of item j in epoch e (Python's, numpy's and torch's
    generators) are seeded from (augment_seed, e, j), so the augmentation of a sample does not depend on DataLoader workers,
    their number, or where a resumed run restarted.
    """

    def __init__(
        self,
        records: Records,
        indices: Sequence[int] | None = None,
        transform: Callable | None = None,
        augment_seed: int | None = None,
        positions: Sequence[int] | None = None,
    ):
        self.records = records
        self.indices = np.arange(len(records)) if indices is None else np.asarray(indices, dtype=np.int64)
        self.positions = np.arange(len(self.indices)) if positions is None else np.asarray(positions, dtype=np.int64)
        self.transform = transform
        self.draft_size = getattr(transform, "draft_size", None)  # EvalTransform's; timm's transforms have none
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

    def select(self, which: Sequence[int]) -> ImageDataset:
        """The items at places `which` of this dataset, keeping their positions (shards, subsets)."""
        which = np.asarray(which, dtype=np.int64)
        return ImageDataset(self.records, self.indices[which], self.transform, self.augment_seed, self.positions[which])

    def __getitem__(self, i: int):
        j, position = int(self.indices[i]), int(self.positions[i])
        try:
            image = self.records.image(j, self.draft_size)
        except ImageError as e:
            return Skipped(position, e.path, e.reason)
        label = self.records.labels[j] if self.records.labels.ndim > 1 else int(self.records.labels[j])  # multi-hot
        if self.transform is None:
            return Sample(position, image, label)
        if self.augment_seed is None:
            return Sample(position, self.transform(image), label)
        return Sample(position, seeded_transform(self.transform, image, self.augment_seed, self.epoch, j), label)


def seeded_transform(transform: Callable, image, augment_seed: int, epoch: int, j: int):
    """`transform(image)` with Python's, numpy's and torch's generators seeded from (augment_seed, epoch, j)
    for the call, and restored after: item j's augmentation in epoch `epoch`, wherever it is computed."""
    import torch

    seed = (augment_seed * 1_000_003 + epoch * 1_000_033 + j) % (2**63)
    state, np_state = random.getstate(), np.random.get_state()  # RandAugment draws from numpy too
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % (2**32))
        try:
            return transform(image)
        finally:
            random.setstate(state)
            np.random.set_state(np_state)


def collate(items) -> Batch:
    """Stack the readable items; pass the unreadable ones along (they are never replaced)."""
    import torch

    ok = [it for it in items if isinstance(it, Sample)]
    skipped = [it for it in items if isinstance(it, Skipped)]
    if not ok:
        return Batch([], None, None, skipped)
    images = torch.stack([it.image if isinstance(it.image, torch.Tensor) else torch.as_tensor(it.image) for it in ok])
    labels = torch.as_tensor(np.array([it.label for it in ok]), dtype=torch.int64)  # (B,) or multi-hot (B, K)
    return Batch([it.position for it in ok], images, labels, skipped)


def default_workers(n_items: int, device=None) -> int:
    """DataLoader worker processes, for every command: none for a small job; with a GPU one per core up
    to 8 (the model does not need the CPU); on a CPU none up to 4 cores, else a quarter of them up to 4
    (the workers take the model's cores: on the 2-core dev machine, 0 workers beat 2 for predict over
    500 JPEGs, 8.9 s vs 9.4-9.7 s, and for finetune, 21 vs 18-19 img/s)."""
    if n_items < SMALL_JOB:
        return 0
    cores = os.cpu_count() or 1
    if getattr(device, "type", None) == "cuda":
        return min(8, cores)
    return 0 if cores <= 4 else min(4, cores // 4)


def worker_init(_worker_id: int) -> None:
    """DataLoader workers ignore Ctrl-C: the main process decides what an interrupt means. SIGTERM (which
    the main process's handler turns into an exception, vitcli.cli.app) ends a worker as it always did."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def make_loader(
    dataset: ImageDataset,
    *,
    batch_size: int,
    workers: int | None = None,
    device=None,
    sampler=None,
    shuffle: bool = False,
    drop_last: bool = False,
    seed: int = 0,
):
    """The DataLoader every command uses: `collate`, workers that ignore Ctrl-C (`default_workers` when
    `workers` is None), pinned memory for CUDA, and its own generator (without one, creating an
    iterator draws from the global torch RNG and shifts it)."""
    import torch
    from torch.utils.data import DataLoader

    workers = default_workers(len(dataset), device) if workers is None else workers
    generator = torch.Generator()
    generator.manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle if sampler is None else False,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate,
        drop_last=drop_last,
        pin_memory=getattr(device, "type", None) == "cuda",
        worker_init_fn=worker_init if workers else None,
        generator=generator,
        persistent_workers=False,
        prefetch_factor=4 if workers else None,
    )
