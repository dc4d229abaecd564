"""A dataset as vitcli holds it: `DatasetSource` (its classes and splits, each split the `Records` of its
images and the indices it takes), the minival carve and `from_parts`, the one way a source is made from
split parts (the layouts of vitcli.data.imagefolder, vitcli.data.hf and vitcli.data.multilabel).

Splits. "train" trains; "minival" is the paper's held-out split, carved deterministically (stratified,
seeded) from the training data, and "train" then excludes it; "val" is a validation folder the user
made; "test" gives the final number. `selection_split` names the split that picks the best model.

Unreadable images are never replaced by another sample (vitcli.data.loader): the training loop hands
the `Skipped` records of each batch to `DatasetSource.note_skipped` (in the main process), which names
each file once in a warning and counts it in `DatasetSource.unreadable`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from vitcli.data.loader import ImageDataset, Records, Skipped
from vitcli.errors import DataError

DEFAULT_VAL_SPLIT = 0.10
# A default minival (`val_split` not given) smaller than this is not carved: on a few dozen images the
# candidates of a run differ by less than the minival's own noise (a standard error of 5-8 points), so
# selecting on it costs a tenth of the training images for a coin flip (benchmarks/recipes.txt).
MIN_MINIVAL = 100


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
            raise DataError(f"dataset {self.name} has no {split!r} split", f"its splits are: {', '.join(self.splits)}")
        return self._parts[split]

    def subset(self, split: str, transform: Callable | None = None, augment_seed: int | None = None) -> ImageDataset:
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


def carve_minival(source: DatasetSource, records: Records, fraction: float, seed: int, asked: bool) -> None:
    """Carve the minival; a default one (not `asked` for) under MIN_MINIVAL images is left in train."""
    keep, held = carve(records.labels, fraction, seed)
    if not asked and 0 < len(held) < MIN_MINIVAL:
        source.minival_too_small = len(held)
        keep, held = np.arange(len(records)), held[:0]
    source._parts["train"] = (records, keep)
    if len(held):
        source._parts["minival"] = (records, held)


def from_parts(
    name: str,
    classes: list[str],
    parts: dict,
    *,
    root: str = "",
    val_split: float | None = None,
    fraction: float = DEFAULT_VAL_SPLIT,
    seed: int = 0,
) -> DatasetSource:
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
            carve_minival(source, train, fraction if val_split is None else val_split, seed, val_split is not None)
        else:
            source._parts["train"] = (train, np.arange(len(train)))
    source.splits = [s for s in ("train", "minival", "val", "test") if s in source._parts]
    return source


def describe(source: DatasetSource) -> str:
    sizes = ", ".join(f"{s} {source.size(s)}" for s in source.splits)
    return f"{source.name}: {source.num_classes} classes, {sizes}"
