"""`vit predict`: top-k labels for images (files, folders, globs, URLs, stdin), in input order.

`open_predictor` picks what predicts: an ONNX file (`--model FILE.onnx`) or a model's fast-start ONNX
copy (vitcli.export.faststart, made by `vit download`) run in onnxruntime without importing torch,
on the CPU in fp32; otherwise the torch model from the one resolver, with the core's
device/precision choice and the CPU kernels, through the one image path and batched forward
(vitcli.data.loader, vitcli.inference.forward). An image that cannot be read becomes an error record;
every other image is still predicted.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from vitcli.inference.prediction import DEFAULT_TOP_K, NON_FINITE, Prediction
from vitcli.output import display


class TorchPredictor:
    """A model opened by vitcli.inference.opened.open_model (torch, or a torch.export file):
    `run(paths, ...)` yields Predictions."""

    def __init__(self, opened, compile: bool = False):
        self.opened, self.loaded, self.runtime, self.compile = opened, opened.loaded, opened.runtime, compile
        self.architecture, self.label_names = opened.loaded.architecture, opened.loaded.label_names
        self.backend, self.precision = opened.backend, opened.precision

    def describe(self) -> str:
        return self.opened.describe()

    def info(self) -> dict:
        """What runs, as --json results name it."""
        info = self.opened.info()
        return {**info, "accel": info["accel"] + (", compiled" if self.compile else "")}

    def run(self, paths, **kwargs) -> Iterator[Prediction]:
        return run(paths, self.loaded, self.runtime, compile=self.compile, **kwargs)


class OnnxPredictor:
    """A file model run on numpy batches without torch (an ONNX file in onnxruntime, an OpenVINO IR):
    `run(paths, ...)` yields Predictions."""

    def __init__(self, model):
        self.model, self.architecture, self.label_names = model, model.architecture, model.label_names
        self.backend, self.precision = model.backend, model.precision

    def describe(self) -> str:
        return self.model.describe()

    def info(self) -> dict:
        return {"backend": self.backend, "device": "cpu", "precision": self.precision, "accel": self.backend}

    def run(self, paths, **kwargs) -> Iterator[Prediction]:
        from vitcli.inference.onnx import predict

        return predict(paths, self.model, **kwargs)


def open_predictor(spec: str, device: str, precision: str, backend: str, compile: bool = False):
    """What predicts `spec`: onnxruntime (CPU, fp32, no torch import) for an .onnx file, or for the
    model's fast-start ONNX copy when `backend` is "onnx" (`--backend onnx` / VIT_BACKEND=onnx: asked
    for, never chosen by what happens to be in the cache); else the torch model on the runtime the flags
    and the machine decide, with vitcli.accel's speed choices."""
    from vitcli.errors import UsageError
    from vitcli.export import onnx_model
    from vitcli.inference.opened import check_backend, fast_start_copy, open_model
    from vitcli.models.resolver import FILE_KINDS, file_kind

    check_backend(backend)
    kind = file_kind(spec)
    if kind is not None or backend == "onnx":
        runs = FILE_KINDS[kind or "onnx"]
        if device not in ("auto", "cpu") or precision not in ("auto", "fp32") or compile:
            raise UsageError(
                f"a{'n ONNX' if runs == 'onnxruntime' else ' ' + kind} model runs in {runs} on the CPU, "
                "in the precision the file holds",
                "drop --device/--precision/--compile, or predict with --backend torch",
            )
        if kind == "onnx":
            return OnnxPredictor(onnx_model.OnnxModel(spec))
        if kind == "openvino":
            from vitcli.export.openvino_model import OpenVinoModel

            return OnnxPredictor(OpenVinoModel(spec))
        if kind is None:  # --backend onnx: the fast-start copy
            return OnnxPredictor(fast_start_copy(spec))
    # the torch model, or a torch.export file: the one opener eval and benchmark use too
    return TorchPredictor(open_model(spec, device=device, precision=precision, backend="torch"), compile)


def run(
    paths: list[Path],
    loaded,
    runtime,
    *,
    top_k: int | None,
    batch_size: int,
    workers: int | None,
    threshold: float | None,
    compile: bool = False,
    progress=lambda n=1: None,
    throughput=None,
) -> Iterator[Prediction]:
    """Yield one Prediction per path, in the order of `paths` (`throughput`: a
    vitcli.inference.forward.Throughput to add the loader's and the model's time to). top_k: the K most
    probable labels (None: DEFAULT_TOP_K); a multi-label model gives every label at or above its
    threshold instead, at most top_k of them when it is given (vitcli.inference.multilabel)."""
    import torch

    from vitcli import output
    from vitcli.accel import compiled
    from vitcli.data.loader import ImageDataset, Records
    from vitcli.data.transforms import eval_transform
    from vitcli.inference.forward import forward
    from vitcli.inference.multilabel import MultiLabelHead

    head = MultiLabelHead.of(loaded.config, loaded.num_classes, threshold)
    model = loaded.model
    limit, top_k = top_k, max(1, min(top_k or DEFAULT_TOP_K, loaded.num_classes))
    fast = compiled.wrap(
        model, runtime, compile=compile, batch_size=batch_size, log=lambda m: output.info(m, style="dim")
    )
    dataset = ImageDataset(Records.of_paths(paths), transform=eval_transform(loaded.data_config))
    names, shown = loaded.label_names, [display(p) for p in paths]
    for batch, out in forward(fast, dataset, runtime, batch_size=batch_size, workers=workers, throughput=throughput):
        results = {s.position: Prediction(shown[s.position], error=s.reason) for s in batch.skipped}
        if out is not None:
            out = out.float()
            finite = torch.isfinite(out).all(dim=-1).tolist()
            scores, classes = out.softmax(dim=-1).topk(top_k, dim=-1)
            for i, ok, srow, crow, row in zip(batch.positions, finite, scores.tolist(), classes.tolist(), out.cpu()):
                labels = (
                    head.labels(row.numpy(), names, limit)
                    if head
                    else [{"label": names[c], "index": c, "score": round(s, 6)} for s, c in zip(srow, crow)]
                )
                results[i] = Prediction(shown[i], labels) if ok else Prediction(shown[i], error=NON_FINITE)
        for i in sorted(results):
            yield results[i]
        progress(len(results))
