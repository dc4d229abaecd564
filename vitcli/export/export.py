"""`vit export`: a model as one deployable file, checked against the torch model before it is kept.

  - ONNX through `torch.onnx.export` (the dynamo exporter, opset 18 by default), with a dynamic batch
    axis unless asked otherwise, and the model's preprocessing, label names and origin stored in the
    file's metadata (`vitcli`), so the file alone predicts (vitcli.inference.onnx, onnxruntime);
  - pt2 through `torch.export` (an ExportedProgram, loadable with `torch.export.load`), with the same
    metadata as an extra file `vitcli.json`.
After exporting, the file and the torch model run on the same random inputs (two batch sizes when
the batch is dynamic) and the export fails if their logits differ by more than `tolerance`, as timm's
onnx_export check does. Files are written atomically.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from vitcli.errors import ModelError, UsageError
from vitcli.export.onnx_file import DEFAULT_OPSET, TOLERANCE, check_onnx, metadata, to_onnx
from vitcli.output import atomic_write, display

FORMATS = ("onnx", "pt2")


@dataclass
class ExportResult:
    path: Path
    format: str
    architecture: str
    input_size: list
    dynamic_batch: bool
    max_abs_diff: float
    seconds: float

    def to_json(self) -> dict:
        return {"path": display(self.path), "format": self.format, "architecture": self.architecture,
                "input_size": self.input_size, "dynamic_batch": self.dynamic_batch,
                "max_abs_diff": self.max_abs_diff, "seconds": self.seconds}


def default_path(spec: str, fmt: str) -> Path:
    """`<model name>.<format>` in the current folder (a run folder: its name)."""
    name = Path(spec.rstrip("/")).name if Path(spec).expanduser().exists() else spec.split(":")[-1]
    return Path(re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.") + f".{fmt}")


def export(spec: str, fmt: str = "onnx", output: Path | None = None, *, img_size: int | None = None,
           dynamic_batch: bool = True, opset: int = DEFAULT_OPSET, tolerance: float = TOLERANCE,
           log=lambda message: None) -> ExportResult:
    """Export `spec` (any model spec) to `output` in `fmt`, checked against the torch model."""
    import time

    import torch

    from vitcli.models.resolver import data_config_for, load_model

    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt!r}: use one of {', '.join(FORMATS)}")
    output = Path(output) if output is not None else default_path(spec, fmt)
    if output.suffix.lower() != f".{fmt}":
        raise UsageError(f"--output {display(output)}: a {fmt} file ends in .{fmt}")
    if output.is_dir():
        raise UsageError(f"--output {display(output)} is a folder", f"give a file name, e.g. model.{fmt}")
    started = time.perf_counter()
    loaded = load_model(spec, device=torch.device("cpu"), **({"img_size": img_size} if img_size else {}))
    model = loaded.model.eval()
    data_config = dict(data_config_for(model))
    if img_size:
        data_config["input_size"] = (3, img_size, img_size)
    _, h, w = data_config["input_size"]
    example = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(0))
    meta = metadata(loaded, data_config)
    log(f"exporting {loaded.architecture} ({h}x{w}) to {fmt}" + (" (the dynamo exporter takes 10-40 s)" if fmt == "onnx"
                                                                 else ""))
    if fmt == "onnx":
        to_onnx(model, example, output, meta, dynamic_batch=dynamic_batch, opset=opset)
        diff = check_onnx(model, output, example, dynamic_batch)
    else:
        program = to_pt2(model, example, output, meta, dynamic_batch=dynamic_batch)
        diff = check_pt2(model, program, example, dynamic_batch)
    if not diff <= tolerance:
        output.unlink(missing_ok=True)
        raise ModelError(f"the exported {fmt} model differs from the torch model by {diff:.3g} (more than {tolerance:g})",
                         "nothing was kept; set VIT_DEBUG=1 and report it with the model name")
    if fmt == "onnx" and dynamic_batch and not img_size:  # `vit predict --model SPEC` now starts fast too
        from vitcli.export import faststart

        faststart.save(spec, loaded, onnx_file=output)
    return ExportResult(output, fmt, loaded.architecture, [3, h, w], dynamic_batch, float(diff),
                        round(time.perf_counter() - started, 1))


def to_pt2(model, example, path: Path, meta: dict, *, dynamic_batch: bool = True):
    import torch

    batch = torch.export.Dim("batch", min=1, max=4096) if dynamic_batch else None
    program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},) if dynamic_batch else None)
    atomic_write(path, lambda tmp: torch.export.save(program, str(tmp), extra_files={"vitcli.json": json.dumps(meta)}))
    return program


def check_pt2(model, program, example, dynamic_batch: bool) -> float:
    import torch

    inputs = [example, torch.randn(3, *example.shape[1:], generator=torch.Generator().manual_seed(1))]
    module = program.module()
    diff = 0.0
    with torch.inference_mode():
        for x in inputs if dynamic_batch else inputs[:1]:
            diff = max(diff, float((module(x) - model(x)).abs().max()))
    return diff
