"""`vit predict`: top-k labels for image files, folders and globs, in input order.

Images go through the one image path (vitcli.data.loader, the one eval transform) and the one batched
forward (vitcli.inference.forward) with the core's device/precision choice. An image that cannot be
read becomes an error record; every other image is still predicted.

Fast start: on CPU in fp32 or bf16, `load_predictor` serves a saved TorchScript copy of the model
(vitcli.inference.faststart) without importing timm; the first run with a model saves that copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator


@dataclass
class Prediction:
    path: str
    predictions: list[dict] | None = None  # [{"label", "index", "score"}], best first
    error: str | None = None

    def to_json(self) -> dict:
        if self.error is not None:
            return {"path": self.path, "error": self.error}
        return {"path": self.path, "predictions": self.predictions}


def load_predictor(spec: str, runtime):
    """The model for `run`: the saved TorchScript copy when there is one (CPU, fp32 or bf16), else
    load_model with the CPU inference kernels of vitcli/kernels.py swapped in (fp32)."""
    if runtime.device.type == "cpu" and runtime.precision in ("fp32", "bf16"):
        from vitcli.inference import faststart

        exported = faststart.lookup(spec, runtime.precision)
        if exported is not None:
            return exported
    from vitcli.inference import kernels
    from vitcli.models.resolver import load_model

    loaded = load_model(spec, device=runtime.device)
    kernels.for_inference(loaded.model, runtime)  # oneDNN linear + GELU (CPU fp32) or the fp32 head (bf16)
    return loaded


def run(paths: list[Path], loaded, runtime, top_k: int = 5, batch_size: int = 32,
        workers: int | None = None, progress=lambda n=1: None, throughput=None) -> Iterator[Prediction]:
    """Yield one Prediction per path, in the order of `paths` (`throughput`: a
    vitcli.inference.forward.Throughput to add the loader's and the model's time to)."""
    import torch

    from vitcli import output
    from vitcli.data.loader import ImageDataset, Records
    from vitcli.data.transforms import eval_transform
    from vitcli.inference import compiled
    from vitcli.inference.forward import forward

    model = loaded.model
    top_k = max(1, min(top_k, loaded.num_classes))
    scripted = isinstance(model, torch.jit.ScriptModule)
    fast = compiled.auto(model, runtime, n_images=len(paths), batch_size=batch_size,
                         architecture=loaded.architecture, log=lambda m: output.info(f"[dim]{m}[/]"))

    def logits(images):
        # a TorchScript copy runs un-optimised: the same kernels as eager, so the same logits; a bf16
        # copy holds its autocast casts in the graph and runs outside autocast
        if not scripted:
            return fast(images)  # compiled for a long job, where it pays
        with torch.jit.optimized_execution(False), torch.autocast("cpu", enabled=False):
            return model(images)

    dataset = ImageDataset(Records.of_paths(paths), transform=eval_transform(loaded.data_config))
    names = loaded.label_names
    for batch, out in forward(logits, dataset, runtime, batch_size=batch_size, workers=workers,
                              throughput=throughput):
        results = {s.position: Prediction(str(paths[s.position]), error=s.reason) for s in batch.skipped}
        if out is not None:
            scores, classes = out.float().softmax(dim=-1).topk(top_k, dim=-1)
            for i, srow, crow in zip(batch.positions, scores.tolist(), classes.tolist()):
                results[i] = Prediction(str(paths[i]), [
                    {"label": names[c], "index": c, "score": round(s, 6)} for s, c in zip(srow, crow)])
        for i in sorted(results):
            yield results[i]
        progress(len(results))
