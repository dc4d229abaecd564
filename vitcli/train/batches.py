"""The training data, micro-batch by micro-batch, in an order a resumed run can reproduce exactly.

Each epoch is a permutation drawn from (seed, epoch), split across ranks; `TrainBatches` remembers the
epoch and the position within it, which the checkpoint stores, so a resumed run continues with the
very next image. Augmentation is seeded per (sample, epoch) by vitcli.data.loader.ImageDataset.
"""

from __future__ import annotations

from vitcli.errors import VitError


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
        mine = perm[self.dist.rank::self.dist.world][:self.per_rank]
        return iter(mine[self.start:].tolist())

    def __len__(self) -> int:
        return max(self.per_rank - self.start, 0)


class TrainBatches:
    """Micro-batches from epoch to epoch, tracking (epoch, position) for exact resume."""

    def __init__(self, dataset, source, *, micro: int, seed: int, dist, runtime, workers, epoch: int = 0,
                 pos: int = 0):
        self.dataset, self.source, self.micro, self.seed = dataset, source, micro, seed
        self.dist, self.runtime, self.workers = dist, runtime, workers
        self.epoch, self.pos = epoch, pos
        self.it = None
        n = len(dataset)
        if (n // dist.world) // micro < 1:
            raise VitError(f"the training split has {n} images, fewer than one batch per process "
                           f"({micro} x {dist.world})", "lower --batch-size")

    def _open(self):
        from vitcli.data.loader import make_loader

        self.dataset.set_epoch(self.epoch)
        sampler = EpochSampler(len(self.dataset), self.seed, self.epoch, self.dist, self.pos)
        self.it = iter(make_loader(self.dataset, batch_size=self.micro, sampler=sampler, drop_last=True,
                                   workers=self.workers, seed=self.seed * 7919 + self.epoch,
                                   device=self.runtime.device))

    def next(self):
        """(images, labels) of the next micro-batch with at least one readable image."""
        while True:
            if self.it is None:
                self._open()
            try:
                batch = next(self.it)
            except StopIteration:
                self.epoch, self.pos, self.it = self.epoch + 1, 0, None
                continue
            self.pos += self.micro
            if batch.skipped:
                self.source.note_skipped(batch.skipped)
            if batch.images is not None:
                return batch.images, batch.labels

    def close(self):
        self.it = None
