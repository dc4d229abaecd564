"""The training split streamed from WebDataset shards: every rank the same number of batches, exactly
resumable.

The layout of an epoch is a pure function of (the shard list, world size, micro-batch, seed, epoch):

- streams: each rank reads S streams (S the largest power of two <= min(MAX_STREAMS, shards / world));
  stream t of the T = world x S gets the shards perm[t::T] of the epoch's seeded shard permutation.
  With fewer shards than ranks, every stream reads all shards and keeps every T-th sample instead;
- each stream passes its samples through a shuffle buffer (webdataset's, SHUFFLE_BUFFER samples, seeded
  by (seed, epoch, stream)) and is cut or padded (read again, reshuffled) to M samples, M = the
  per-stream share of the split's sample count in the shards' JSON, in whole micro-batches; so every
  rank makes S x M / micro batches per epoch and no rank waits for another at the end of an epoch;
- batch b of a rank comes from stream b mod S. DataLoader workers (W, a divisor of S, at most the
  workers asked for) each own the streams s = w (mod W), and the DataLoader takes batches from its
  workers in turn, so the batch order is the same with 0, 1, 2, ... workers;
- the augmentation of sample j in epoch e is seeded by (seed, e, j) (vitcli.data.loader.seeded_transform).

Resume: the checkpoint holds the epoch and the rank's position in it (`TrainBatches.pos`, whole
micro-batches) and the config's seed: the shuffle generators are re-derived from them, and each stream
skips the samples it had given (read from the tar, not decoded), so the next batch is the one the
uninterrupted run would have drawn.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from vitcli.data.loader import Sample, Skipped, seeded_transform
from vitcli.errors import DataError, ImageError

SHUFFLE_BUFFER = 500  # samples per stream (encoded bytes: ~50 MB of 100 KB JPEGs)
SHUFFLE_INITIAL = 100  # samples buffered before the first one leaves (webdataset's default)
MAX_STREAMS = 8  # per rank: how many DataLoader workers can share the reading
IMAGE_KEYS = ("jpg", "png", "webp", "bmp", "gif", "tiff", "ppm", "heic", "heif", "img", "jpeg")


@dataclass(frozen=True)
class Layout:
    streams: int  # per rank (S)
    per_stream: int  # samples each stream gives per epoch (M, whole micro-batches)
    by_shard: bool  # streams get whole shards (else every stream reads all and keeps every T-th sample)

    def batches(self, micro: int) -> int:
        return self.streams * self.per_stream // micro


def layout(n_shards: int, total: int, world: int, micro: int) -> Layout:
    if n_shards >= world:
        cap = min(MAX_STREAMS, n_shards // world)
        streams = 1 << (cap.bit_length() - 1)
        by_shard = True
    else:
        streams, by_shard = 1, False
    per_stream = max(micro, (total // (world * streams)) // micro * micro)
    return Layout(streams, per_stream, by_shard)


def loader_workers(asked: int, streams: int) -> int:
    """The DataLoader workers used: a divisor of the streams (a power of two), at most `asked`."""
    if asked <= 0:
        return 0
    w = 1 << (min(asked, streams).bit_length() - 1)
    return w


class ShardStream:
    """The training split of a ShardSource: `len`, `set_epoch` and `loader(...)` for vitcli.train.run.batches."""

    def __init__(
        self, urls: list, counts: list, *, transform=None, augment_seed: int | None = None, buffer: int = SHUFFLE_BUFFER
    ):
        self.urls, self.counts = list(urls), [int(c) for c in counts]
        self.offsets = [sum(self.counts[:i]) for i in range(len(self.counts))]
        self.transform, self.augment_seed, self.buffer = transform, augment_seed, buffer
        self.draft_size = getattr(transform, "draft_size", None)
        self.epoch = 0

    def __len__(self) -> int:
        return sum(self.counts)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def layout(self, world: int, micro: int) -> Layout:
        return layout(len(self.urls), len(self), world, micro)

    def loader(self, *, epoch: int, start: int, micro: int, dist, workers: int | None, device, seed: int):
        """This rank's DataLoader for `epoch` from sample `start` on (a multiple of `micro`)."""
        from vitcli.data.loader import default_workers, make_loader

        lay = self.layout(dist.world, micro)
        asked = default_workers(len(self) // dist.world, device) if workers is None else workers
        epoch_stream = EpochStream(
            self, lay, epoch=epoch, start=start, micro=micro, rank=dist.rank, world=dist.world, seed=seed
        )
        used = loader_workers(asked, lay.streams)
        if used < asked and dist.main and not getattr(self, "told", False):
            from vitcli import output

            self.told = True
            output.info(
                f"{len(self.urls)} shards over {dist.world} rank(s): {lay.streams} stream(s) per rank, so "
                f"{used} of the {asked} DataLoader workers read them (write at least world size x "
                f"{MAX_STREAMS} shards to use more)",
                style="dim",
            )
        return make_loader(
            epoch_stream, batch_size=micro, workers=used, device=device, drop_last=True, seed=seed * 7919 + epoch
        )

    # ------------------------------------------------------------------------------ one stream
    def raw(self, shard_ids: list, keep: tuple | None):
        """(j, name, ext, bytes, label) of the shards' samples in order; keep=(T, t): every T-th from t."""
        from webdataset.tariterators import tarfile_samples

        where = {self.urls[i]: i for i in shard_ids}
        current, k, i = None, 0, 0
        for sample in tarfile_samples([{"url": self.urls[s]} for s in shard_ids]):
            url = sample["__url__"]
            if url != current:
                current, k = url, 0
            index, k = k, k + 1
            i += 1
            if keep is not None and (i - 1) % keep[0] != keep[1]:
                continue
            ext = next((e for e in IMAGE_KEYS if e in sample), None)
            if ext is None or "cls" not in sample:
                raise DataError(
                    f"{url}: sample {sample.get('__key__')} lacks its image or class",
                    "write the shard again with `vit shard`",
                )
            name = f"{url.rsplit('/', 1)[-1]}:{sample['__key__']}.{ext}"
            yield (self.offsets[where[url]] + index, name, ext, sample[ext], int(sample["cls"].decode()))

    def stream(self, t: int, total_streams: int, lay: Layout, epoch: int, seed: int):
        """Stream t's samples of the epoch: shuffled, cut or padded to lay.per_stream, as (item, repeat)."""
        from webdataset.filters import shuffle

        order = list(range(len(self.urls)))
        random.Random(seed * 1_000_003 + epoch).shuffle(order)
        shard_ids = order[t::total_streams] if lay.by_shard else order
        keep = None if lay.by_shard else (total_streams, t)
        given, repeat = 0, 0
        while True:
            mix = ((seed * 1_000_003 + epoch) * 4099 + t) * 131 + repeat
            got = 0
            for item in shuffle(self.buffer, SHUFFLE_INITIAL, seed=mix)(self.raw(shard_ids, keep)):
                yield item, repeat
                got += 1
                given += 1
                if given == lay.per_stream:
                    return
            if got == 0:
                raise DataError(
                    f"stream {t} of the training shards holds no samples",
                    "check the shards: every one should hold samples",
                )
            repeat += 1  # padded: the stream's shards again, in another order

    def decode(self, item, repeat: int, epoch: int):
        from vitcli.data.images import decode_image

        j, name, _, data, label = item
        try:
            image = decode_image(data, name, self.draft_size)
        except ImageError as e:
            return Skipped(j, e.path, e.reason)
        if self.transform is None:
            return Sample(j, image, label)
        if self.augment_seed is None:
            return Sample(j, self.transform(image), label)
        # a padding repeat of sample j is augmented afresh: (j + repeat x N) is another draw
        return Sample(
            j, seeded_transform(self.transform, image, self.augment_seed, epoch, j + repeat * len(self)), label
        )


class EpochStream(torch.utils.data.IterableDataset):
    """One rank's batches of one epoch from batch start // micro on, split among DataLoader workers."""

    def __init__(
        self, data: ShardStream, lay: Layout, *, epoch: int, start: int, micro: int, rank: int, world: int, seed: int
    ):
        super().__init__()
        self.data, self.lay, self.epoch, self.micro = data, lay, epoch, micro
        self.rank, self.world, self.seed = rank, world, seed
        self.first = start // micro

    def __len__(self) -> int:
        return max(self.lay.batches(self.micro) - self.first, 0) * self.micro

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        w, n_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        S, T = self.lay.streams, self.world * self.lay.streams
        streams: dict = {}
        for b in range(self.first + w, self.lay.batches(self.micro), n_workers):
            s, q = b % S, b // S
            if s not in streams:  # this worker owns stream s from here on: skip what it gave before
                it = self.data.stream(self.rank * S + s, T, self.lay, self.epoch, self.seed)
                for _ in range(q * self.micro):
                    next(it)
                streams[s] = it
            for _ in range(self.micro):
                item, repeat = next(streams[s])
                yield self.data.decode(item, repeat, self.epoch)
