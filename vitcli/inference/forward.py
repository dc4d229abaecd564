"""The one batched forward pass: images in, a function of the model's input out, batch by batch.

`forward(fn, dataset, runtime, ...)` loads `dataset` (a vitcli.data.loader.ImageDataset) with the one
loader, moves each batch to the runtime's device and yields `(batch, fn(images))`, computed under
inference mode and the runtime's autocast; a batch whose images were all unreadable yields
`(batch, None)`. `vit predict` (fn = the model), `vit eval` (the model), few-shot evaluation (the
pre-logit features), `vit visualize` (attention maps) and the training loop's evaluation go through it.
Inference mode is entered for each batch, not across the `yield`, so the caller's own code never runs
in it by accident.

`Throughput` (optional) adds up where the time went: getting batches from the loader (with no workers:
reading, decoding and transforming in this process; with workers: waiting for them) and the model
(the copy to the device and fn). loader img/s well above model img/s means the loader keeps up.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass


@dataclass
class Throughput:
    images: int = 0
    loader_s: float = 0.0
    model_s: float = 0.0
    workers: int = 0

    def to_json(self) -> dict:
        rate = lambda s: round(self.images / s, 1) if s > 0 else None  # noqa: E731
        return {"loader_img_s": rate(self.loader_s), "model_img_s": rate(self.model_s), "workers": self.workers}

    def describe(self) -> str:
        j = self.to_json()
        return (
            f"model {j['model_img_s']} img/s, loader {j['loader_img_s']} img/s "
            f"({self.workers} worker{'s' if self.workers != 1 else ''})"
        )


def forward(
    fn: Callable, dataset, runtime, *, batch_size: int, workers: int | None = None, throughput: Throughput | None = None
) -> Iterator[tuple]:
    """Yield (Batch, fn(images) or None) for the batches of `dataset`, in order."""
    import torch

    from vitcli.data.loader import make_loader

    if len(dataset) == 0:
        return
    loader = make_loader(dataset, batch_size=batch_size, workers=workers, device=runtime.device)
    tally = throughput if throughput is not None else Throughput()
    tally.workers = loader.num_workers
    batches = iter(loader)
    while True:
        start = time.perf_counter()
        batch = next(batches, None)
        loaded = time.perf_counter()
        tally.loader_s += loaded - start
        if batch is None:
            return
        out = None
        if batch.images is not None:
            images = batch.images.to(runtime.device, non_blocking=True)
            with torch.inference_mode(), runtime.autocast():
                out = fn(images)
            if throughput is not None and runtime.device.type == "cuda":
                torch.cuda.synchronize(runtime.device)  # the model's time, not the caller's
            tally.images += len(batch.positions)
        tally.model_s += time.perf_counter() - loaded
        yield batch, out
