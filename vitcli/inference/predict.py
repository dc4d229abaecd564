"""`vit predict`: top-k labels for images (files, folders, globs, URLs, stdin), in input order.

`open_predictor` picks what predicts: an ONNX file (`--model FILE.onnx`) or a model's fast-start ONNX
copy (vitcli.inference.faststart, made by `vit download`) run in onnxruntime without importing torch,
on the CPU in fp32; otherwise the torch model from the one resolver, with the core's
device/precision choice and the CPU kernels, through the one image path and batched forward
(vitcli.data.loader, vitcli.inference.forward). An image that cannot be read becomes an error record;
every other image is still predicted.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

from vitcli.inference.prediction import NON_FINITE, Prediction
from vitcli.output import display

class TorchPredictor:
    """A torch model on a runtime: `run(paths, ...)` yields Predictions."""

    def __init__(self, loaded, runtime):
        self.loaded, self.runtime = loaded, runtime
        self.architecture, self.label_names = loaded.architecture, loaded.label_names

    def describe(self) -> str:
        return self.runtime.describe()

    def run(self, paths, **kwargs) -> Iterator[Prediction]:
        return run(paths, self.loaded, self.runtime, **kwargs)


class OnnxPredictor:
    """An ONNX model in onnxruntime (no torch): `run(paths, ...)` yields Predictions."""

    def __init__(self, model):
        self.model, self.architecture, self.label_names = model, model.architecture, model.label_names

    def describe(self) -> str:
        return self.model.describe()

    def run(self, paths, **kwargs) -> Iterator[Prediction]:
        from vitcli.inference.onnx import predict

        return predict(paths, self.model, **kwargs)


def _gpu_visible() -> bool:
    """A CUDA GPU may be there (known without importing torch): then `auto` means the torch path."""
    return os.path.exists("/dev/nvidiactl") and os.environ.get("CUDA_VISIBLE_DEVICES", "x") != ""


def open_predictor(spec: str, device: str = "auto", precision: str = "auto", n_images: int = 1):
    """What predicts `spec`: onnxruntime for an .onnx file, and for a model with a fast-start copy on the
    CPU in fp32 (the same top-1 as torch fp32, scores within 1e-5) unless, with precision auto, the race
    recorded when the copy was made says the torch model (bf16 on a CPU with native bf16) finishes
    `n_images` sooner, its start included (vitcli.inference.race); else the torch model."""
    from vitcli.errors import UsageError
    from vitcli.models import onnx

    cpu_fp32 = device in ("auto", "cpu") and precision in ("auto", "fp32")
    if onnx.is_onnx(spec):
        if not cpu_fp32:
            raise UsageError("an ONNX model runs in onnxruntime on the CPU in fp32",
                             "drop --device/--precision, or predict with the torch model")
        return OnnxPredictor(onnx.OnnxModel(spec))
    if cpu_fp32 and not (device == "auto" and _gpu_visible()):
        from vitcli.inference import faststart

        copy = faststart.lookup(spec)
        if copy is not None:
            from vitcli.inference import race

            if precision == "fp32" or not race.torch_pays(copy.race, n_images):
                return OnnxPredictor(copy)
    from vitcli.devices import runtime
    from vitcli.inference import kernels
    from vitcli.models.resolver import load_model

    rt = runtime(device, precision)
    loaded = load_model(spec, device=rt.device)
    kernels.for_inference(loaded.model, rt)  # CPU oneDNN linears (fp32 or bf16), the fp32 head under autocast
    return TorchPredictor(loaded, rt)


def run(paths: list[Path], loaded, runtime, top_k: int = 5, batch_size: int = 32,
        workers: int | None = None, progress=lambda n=1: None, throughput=None,
        threshold: float | None = None) -> Iterator[Prediction]:
    """Yield one Prediction per path, in the order of `paths` (`throughput`: a
    vitcli.inference.forward.Throughput to add the loader's and the model's time to). A multi-label
    model gives every label at or above its threshold instead of the top-k (vitcli.inference.multilabel)."""
    import torch

    from vitcli import output
    from vitcli.data.loader import ImageDataset, Records
    from vitcli.data.transforms import eval_transform
    from vitcli.inference import compiled
    from vitcli.inference.forward import forward
    from vitcli.inference.multilabel import MultiLabelHead

    head = MultiLabelHead.of(loaded.config, loaded.num_classes, threshold)
    model = loaded.model
    top_k = max(1, min(top_k, loaded.num_classes))
    fast = compiled.auto(model, runtime, n_images=len(paths), batch_size=batch_size,
                         architecture=loaded.architecture, log=lambda m: output.info(m, style="dim"))
    dataset = ImageDataset(Records.of_paths(paths), transform=eval_transform(loaded.data_config))
    names, shown = loaded.label_names, [display(p) for p in paths]
    for batch, out in forward(fast, dataset, runtime, batch_size=batch_size, workers=workers,
                              throughput=throughput):
        results = {s.position: Prediction(shown[s.position], error=s.reason) for s in batch.skipped}
        if out is not None:
            out = out.float()
            finite = torch.isfinite(out).all(dim=-1).tolist()
            scores, classes = out.softmax(dim=-1).topk(top_k, dim=-1)
            for i, ok, srow, crow, row in zip(batch.positions, finite, scores.tolist(), classes.tolist(), out.cpu()):
                labels = head.labels(row.numpy(), names) if head else \
                    [{"label": names[c], "index": c, "score": round(s, 6)} for s, c in zip(srow, crow)]
                results[i] = Prediction(shown[i], labels) if ok else Prediction(shown[i], error=NON_FINITE)
        for i in sorted(results):
            yield results[i]
        progress(len(results))
