"""`vit predict`: top-k labels for image files, folders and globs, in input order.

Images are decoded in DataLoader workers (when there are enough of them to pay for the workers'
start-up), batched, and run under inference mode with the core's device/precision choice. An image
that cannot be read becomes an error record; every other image is still predicted.

Cold start: on CPU in fp32, `load_predictor` serves a saved TorchScript copy of the model (see
vitcli/export.py) without importing timm; the first run with a model saves that copy.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from vitcli.errors import ImageError


@dataclass
class Prediction:
    path: str
    predictions: list[dict] | None = None  # [{"label", "index", "score"}], best first
    error: str | None = None

    def to_json(self) -> dict:
        if self.error is not None:
            return {"path": self.path, "error": self.error}
        return {"path": self.path, "predictions": self.predictions}


class ImageListDataset:
    """Paths -> (index, tensor or None, error or None); errors travel with the batch, in order."""

    def __init__(self, paths: list[Path], transform, draft_size: int | None = None):
        self.paths = paths
        self.transform = transform
        self.draft_size = draft_size

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        from vitcli.data.images import load_image

        try:
            return i, self.transform(load_image(self.paths[i], draft_size=self.draft_size)), None
        except ImageError as e:
            return i, None, e.message.removeprefix(f"{self.paths[i]}: ")


def collate(items):
    import torch

    ok = [(i, t) for i, t, _ in items if t is not None]
    errors = [(i, e) for i, _, e in items if e is not None]
    batch = torch.stack([t for _, t in ok]) if ok else None
    return [i for i, _ in ok], batch, errors


def default_workers(n_images: int) -> int:
    if n_images < 64:
        return 0  # spawning workers costs more than decoding a few images
    return min(4, os.cpu_count() or 1)


def load_predictor(spec: str, runtime):
    """The model for `run`: the saved TorchScript copy when there is one (CPU, fp32), else load_model
    with the CPU inference kernels of vitcli/kernels.py swapped in."""
    if runtime.device.type == "cpu" and runtime.precision == "fp32":
        from vitcli.inference import faststart as export

        exported = export.lookup(spec)
        if exported is not None:
            return exported
    from vitcli.inference import kernels
    from vitcli.models.resolver import load_model

    loaded = load_model(spec, device=runtime.device)
    kernels.for_inference(loaded, runtime)  # oneDNN linear + GELU on CPU where measured faster
    return loaded


def run(paths: list[Path], loaded, runtime, top_k: int = 5, batch_size: int = 32,
        workers: int | None = None, progress=lambda n=1: None) -> Iterator[Prediction]:
    """Yield one Prediction per path, in the order of `paths`."""
    import torch
    from torch.utils.data import DataLoader

    from vitcli.inference.faststart import EvalTransform, eval_transform

    model = loaded.model
    top_k = max(1, min(top_k, loaded.num_classes))
    workers = default_workers(len(paths)) if workers is None else workers
    transform = eval_transform(loaded.data_config)
    draft = transform.draft_size if isinstance(transform, EvalTransform) else None
    scripted = isinstance(model, torch.jit.ScriptModule)
    loader = DataLoader(ImageListDataset(paths, transform, draft), batch_size=batch_size,
                        num_workers=workers, collate_fn=collate, pin_memory=runtime.device.type == "cuda",
                        persistent_workers=False, prefetch_factor=4 if workers else None)
    names = loaded.label_names
    with torch.inference_mode():
        for indices, batch, errors in loader:
            results: dict[int, Prediction] = {i: Prediction(str(paths[i]), error=e) for i, e in errors}
            if batch is not None:
                batch = batch.to(runtime.device, non_blocking=True)
                # a TorchScript copy runs un-optimised: the same kernels as eager, so the same logits
                with runtime.autocast(), torch.jit.optimized_execution(not scripted):
                    logits = model(batch)
                probs = logits.float().softmax(dim=-1)
                scores, classes = probs.topk(top_k, dim=-1)
                for i, srow, crow in zip(indices, scores.tolist(), classes.tolist()):
                    results[i] = Prediction(str(paths[i]), [
                        {"label": names[c], "index": c, "score": round(s, 6)} for s, c in zip(srow, crow)])
            for i in sorted(results):
                yield results[i]
            progress(len(results))
