"""The one batched forward pass: images in, a function of the model's input out, batch by batch.

`forward(fn, dataset, runtime, ...)` loads `dataset` (a vitcli.data.loader.ImageDataset) with the one
loader, moves each batch to the runtime's device and yields `(batch, fn(images))`, computed under
inference mode and the runtime's autocast; a batch whose images were all unreadable yields
`(batch, None)`. `vit predict` (fn = the model), `vit eval` (the model), few-shot evaluation (the
pre-logit features), `vit visualize` (attention maps) and the training loop's evaluation go through it.
Inference mode is entered for each batch, not across the `yield`, so the caller's own code never runs
in it by accident.
"""

from __future__ import annotations

from typing import Callable, Iterator


def forward(fn: Callable, dataset, runtime, *, batch_size: int, workers: int | None = None
            ) -> Iterator[tuple]:
    """Yield (Batch, fn(images) or None) for the batches of `dataset`, in order."""
    import torch

    from vitcli.data.loader import make_loader

    if len(dataset) == 0:
        return
    loader = make_loader(dataset, batch_size=batch_size, workers=workers, device=runtime.device)
    for batch in loader:
        out = None
        if batch.images is not None:
            images = batch.images.to(runtime.device, non_blocking=True)
            with torch.inference_mode(), runtime.autocast():
                out = fn(images)
        yield batch, out
