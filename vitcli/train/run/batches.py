"""The training data, micro-batch by micro-batch, in an order a resumed run can reproduce exactly.

Each epoch is a permutation drawn from (seed, epoch), split across ranks; `TrainBatches` remembers the
epoch and the position within it, which the checkpoint stores, so a resumed run continues with the
very next image. Augmentation is seeded per (sample, epoch) by vitcli.data.loader.ImageDataset.
"""

from __future__ import annotations

from collections import Counter

from vitcli.errors import DataError, VitError

EMPTY_RUN = 50  # micro-batches in a row without one readable image: the data is broken, stop


class EpochSampler:
    """This rank's share of epoch `epoch`'s permutation, from position `start` on."""

    def __init__(self, n: int, seed: int, epoch: int, dist, start: int = 0):
        self.n, self.seed, self.epoch, self.dist, self.start = n, seed, epoch, dist, start

    @property
    def per_rank(self) -> int:
        return self.n // self.dist.world

    def __iter__(self):
        import torch

        g = torch.Generator()
        g.manual_seed(self.seed * 1_000_003 + self.epoch)
        perm = torch.randperm(self.n, generator=g)
        mine = perm[self.dist.rank :: self.dist.world][: self.per_rank]
        return iter(mine[self.start :].tolist())

    def __len__(self) -> int:
        return max(self.per_rank - self.start, 0)


class TrainBatches:
    """Micro-batches from epoch to epoch, tracking (epoch, position) for exact resume."""

    def __init__(self, dataset, source, *, micro: int, seed: int, dist, runtime, workers, epoch: int = 0, pos: int = 0):
        self.dataset, self.source, self.micro, self.seed = dataset, source, micro, seed
        self.dist, self.runtime, self.workers = dist, runtime, workers
        self.epoch, self.pos = epoch, pos
        self.it = None
        self.readable = 0  # images read in this epoch
        self.empty_run = 0  # micro-batches in a row with no readable image
        n = len(dataset)
        if (n // dist.world) // micro < 1:
            raise VitError(
                f"the training split has {n} images, fewer than one batch per process ({micro} x {dist.world})",
                "lower --batch-size",
            )

    def _open(self):
        from vitcli.data.loader import make_loader

        self.dataset.set_epoch(self.epoch)
        if hasattr(self.dataset, "loader"):  # streamed shards (vitcli.data.stream): the stream splits itself
            self.it = iter(
                self.dataset.loader(
                    epoch=self.epoch,
                    start=self.pos,
                    micro=self.micro,
                    dist=self.dist,
                    workers=self.workers,
                    device=self.runtime.device,
                    seed=self.seed,
                )
            )
            return
        sampler = EpochSampler(len(self.dataset), self.seed, self.epoch, self.dist, self.pos)
        self.it = iter(
            make_loader(
                self.dataset,
                batch_size=self.micro,
                sampler=sampler,
                drop_last=True,
                workers=self.workers,
                seed=self.seed * 7919 + self.epoch,
                device=self.runtime.device,
            )
        )

    def next(self):
        """(images, labels) of the next micro-batch with at least one readable image."""
        while True:
            if self.it is None:
                self._open()
            try:
                batch = next(self.it)
            except StopIteration:
                if self.readable == 0 and self.pos > 0:
                    self._unreadable()
                self.epoch, self.pos, self.it, self.readable = self.epoch + 1, 0, None, 0
                continue
            self.pos += self.micro
            if batch.skipped:
                self.source.note_skipped(batch.skipped)
            if batch.images is not None:
                self.readable += len(batch.labels)
                self.empty_run = 0
                return batch.images, batch.labels
            self.empty_run += 1
            if self.empty_run >= EMPTY_RUN:
                self._unreadable()

    def _unreadable(self):
        """Batch after batch without an image: say how many images could be read, and why not."""
        mine = (
            {self.dataset.path(i) for i in range(len(self.dataset))}
            if hasattr(self.dataset, "path")
            else set(self.source.unreadable)
        )  # a stream names its samples as it reads them
        reasons = Counter(_kind(r) for path, r in self.source.unreadable.items() if path in mine)
        read = len(self.dataset) - sum(reasons.values())
        why = ", ".join(f"{n} {kind}" for kind, n in reasons.most_common())
        raise DataError(
            f"{read} of {len(self.dataset)} training images could be read: {why}",
            "check the files of the training split (the first ones are named above)",
        )

    def close(self):
        self.it = None


def _kind(reason: str) -> str:
    """A short name for why an image could not be read, to count them."""
    for key, kind in (
        ("empty", "empty"),
        ("not an image", "not an image"),
        ("pillow-heif", "HEIC without pillow-heif"),
        ("truncated", "truncated"),
        ("no such file", "missing"),
        ("decompression bomb", "too large"),
    ):
        if key in reason:
            return kind
    return reason.split("(")[0].strip()[:40] or "unreadable"
