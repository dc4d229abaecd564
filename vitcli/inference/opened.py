"""A model opened for inference: what runs it, named in every result.

`open_model(spec, device=, precision=, backend=)` is the one way eval, few-shot evaluation, visualize and
benchmark get a model to run: the resolver's model on the runtime the flags and the machine decide, with
vitcli.accel's speed choices applied, or an ONNX model (an .onnx file, or with `backend="onnx"` the
model's fast-start copy) in onnxruntime on the CPU, or another file `vit export` wrote (`.pt2`: torch.export,
`.xml`: OpenVINO), each on the CPU in the precision the file holds (an int8 ONNX file: int8). `Opened.info()` says which backend,
device, precision and speed choices actually ran, for metrics.json, run.json and --json outputs.
(`vit predict` has the same choice plus a torch-free path: vitcli.inference.predict.open_predictor.)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Opened:
    loaded: object  # vitcli.models.resolver.LoadedModel
    runtime: object  # vitcli.accel.runtime.Runtime
    backend: str  # "torch" | "onnxruntime" | "openvino" | "torch.export"
    accel: object | None  # vitcli.accel.Accel (torch only)
    file_precision: str | None = None  # an exported file's own precision (int8, fp16): the runtime stays fp32

    @property
    def precision(self) -> str:
        return self.file_precision or self.runtime.precision

    def info(self) -> dict:
        accel = self.accel.describe() if self.accel is not None else self.backend
        return {
            "backend": self.backend,
            "device": str(self.runtime.device),
            "precision": self.precision,
            "accel": accel,
        }

    def describe(self) -> str:
        return f"{self.backend} {self.runtime.device} {self.precision}"


BACKENDS = ("torch", "onnx")


def check_backend(backend: str) -> None:
    from vitcli.errors import UsageError

    if backend not in BACKENDS:
        raise UsageError(f"unknown backend {backend!r}", "use --backend torch or --backend onnx (VIT_BACKEND)")


def onnx_runtime_flags_ok(device: str, precision: str, what: str = "an ONNX model runs in onnxruntime") -> None:
    from vitcli.errors import UsageError

    if device not in ("auto", "cpu") or precision not in ("auto", "fp32"):
        raise UsageError(
            f"{what} on the CPU, in the precision the file holds",
            "drop --device/--precision, or use --backend torch with a torch model",
        )


def fast_start_copy(spec: str):
    """The model's fast-start ONNX copy (vitcli.export.faststart) as an OnnxModel, for `--backend onnx`;
    a usage error when this machine has none. No torch import."""
    from vitcli.errors import UsageError
    from vitcli.export import faststart

    copy = faststart.lookup(spec)
    if copy is None:
        raise UsageError(
            f"{spec} has no fast-start ONNX copy on this machine",
            f"make one with `vit download {spec}` (or `vit export`), or use --backend torch",
        )
    return copy


def file_precision(model) -> str:
    """The precision an exported file model runs in: the file model's own, or fp32 (pt2)."""
    inner = getattr(model, "onnx", None)  # vitcli.export.onnx_model.as_module's wrapper
    return getattr(inner, "precision", None) or "fp32"


def open_model(
    spec: str, *, device: str, precision: str, backend: str = "torch", pretrained: bool = True, **overrides
) -> Opened:
    """Open `spec` for inference (see the module docstring)."""
    import torch

    from vitcli import accel
    from vitcli.accel.runtime import Runtime, runtime
    from vitcli.models.resolver import FILE_KINDS, file_kind, load_model

    check_backend(backend)
    kind = file_kind(spec)
    if kind in ("pt2", "openvino"):
        onnx_runtime_flags_ok(device, precision, f"a {kind} model runs in {FILE_KINDS[kind]}")
        loaded = load_model(spec, device=torch.device("cpu"))
        return Opened(
            loaded, Runtime(torch.device("cpu"), "fp32"), FILE_KINDS[kind], None, file_precision(loaded.model)
        )
    if kind == "onnx" or backend == "onnx":
        onnx_runtime_flags_ok(device, precision)
        if kind != "onnx":
            spec = str(fast_start_copy(spec).path)
        loaded = load_model(spec, device=torch.device("cpu"))
        return Opened(loaded, Runtime(torch.device("cpu"), "fp32"), "onnxruntime", None, file_precision(loaded.model))
    rt = runtime(device, precision)
    loaded = load_model(spec, device=rt.device, pretrained=pretrained, **overrides)
    return Opened(loaded, rt, "torch", accel.prepare(loaded.model, rt, "inference"))
