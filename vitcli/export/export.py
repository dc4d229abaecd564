"""`vit export`: a model as one deployable file, checked against the torch model before it is kept.

  - ONNX through `torch.onnx.export` (the dynamo exporter, opset 18 by default), with a dynamic batch
    axis unless asked otherwise, and the model's preprocessing, label names and origin stored in the
    file's metadata (`vitcli`), so the file alone predicts (vitcli.inference.onnx, onnxruntime); with
    `--quantize int8` or `--half`, the int8 / fp16 copy of it (vitcli.export.quantize);
  - pt2 through `torch.export` (an ExportedProgram, loadable with `torch.export.load`), with the same
    metadata as an extra file `vitcli.json`;
  - OpenVINO IR (`.xml` + `.bin`) converted from the checked ONNX file (vitcli.export.openvino_file).
The fp32 graph and the torch model run on the same random inputs (two batch sizes when the batch is
dynamic) and the export fails if their logits differ by more than `tolerance`, as timm's onnx_export check
does. Then the file that is kept is checked for top-1 agreement with the torch model on the calibration
or `--check` images (vitcli.export.check) and refused below `--min-agreement` unless `--force`.
Files are written atomically.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from vitcli.errors import ModelError, UsageError
from vitcli.export.check import Agreement
from vitcli.export.onnx_file import (
    DEFAULT_OPSET,
    TOLERANCE,
    check_onnx,
    metadata,
    to_onnx,
)
from vitcli.output import atomic_write, display

FORMATS = ("onnx", "pt2", "openvino")
SUFFIX = {"onnx": ".onnx", "pt2": ".pt2", "openvino": ".xml"}


@dataclass
class ExportResult:
    path: Path
    format: str
    architecture: str
    input_size: list
    dynamic_batch: bool
    max_abs_diff: float
    seconds: float
    precision: str = "fp32"
    agreement: Agreement | None = None
    min_agreement: float | None = None
    forced: bool = False  # kept below min_agreement with --force
    quantization: dict | None = None
    size_bytes: int = 0

    def to_json(self) -> dict:
        return {
            "path": display(self.path),
            "format": self.format,
            "architecture": self.architecture,
            "input_size": self.input_size,
            "dynamic_batch": self.dynamic_batch,
            "precision": self.precision,
            "max_abs_diff": self.max_abs_diff,
            "seconds": self.seconds,
            **(self.agreement.to_json() if self.agreement else {}),
            "min_agreement": self.min_agreement,
            "forced": self.forced,
            "size_bytes": self.size_bytes,
            **({"quantization": self.quantization} if self.quantization else {}),
        }


def default_path(spec: str, fmt: str, precision: str = "fp32") -> Path:
    """`<model name>[.int8|.fp16].<onnx|pt2|xml>` in the current folder (a run folder: its name)."""
    name = Path(spec.rstrip("/")).name if Path(spec).expanduser().exists() else spec.split(":")[-1]
    tag = "" if precision == "fp32" else f".{precision}"
    return Path(re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.") + tag + SUFFIX[fmt])


def _check_options(fmt: str, output: Path, quantize: str | None, half: bool, calib: Path | None) -> str:
    """The precision asked for, or a usage error for options that do not go together."""
    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt!r}: use one of {', '.join(FORMATS)}")
    if quantize not in (None, "int8"):
        raise UsageError(f"--quantize {quantize!r}: use int8")
    if quantize and fmt != "onnx":
        raise UsageError(f"--quantize int8 is for --format onnx (ONNX Runtime's quantization), not {fmt}")
    if quantize and half:
        raise UsageError("--quantize int8 and --half do not go together: pick one")
    if half and fmt == "pt2":
        raise UsageError("--half is for --format onnx or openvino (a pt2 file is the fp32 program)")
    if calib is not None and not quantize:
        raise UsageError("--calib is for --quantize int8", "use --check DIR for images to check the export on")
    if output.suffix.lower() != SUFFIX[fmt]:
        raise UsageError(f"--output {display(output)}: a {fmt} file ends in {SUFFIX[fmt]}")
    if output.is_dir():
        raise UsageError(f"--output {display(output)} is a folder", f"give a file name, e.g. model{SUFFIX[fmt]}")
    return "int8" if quantize else "fp16" if half else "fp32"


def export(
    spec: str,
    fmt: str = "onnx",
    output: Path | None = None,
    *,
    img_size: int | None = None,
    dynamic_batch: bool = True,
    opset: int = DEFAULT_OPSET,
    tolerance: float = TOLERANCE,
    quantize: str | None = None,
    half: bool = False,
    calib: Path | None = None,
    check: Path | None = None,
    min_agreement: float | None = None,
    force: bool = False,
    log=lambda message: None,
    warn=lambda message: None,
) -> ExportResult:
    """Export `spec` (any model spec) to `output` in `fmt`, checked against the torch model."""
    import tempfile
    import time

    import torch

    from vitcli.export import check as checks
    from vitcli.models.resolver import data_config_for, load_model

    precision = _check_options(
        fmt, Path(output) if output is not None else Path("x" + SUFFIX.get(fmt, "")), quantize, half, calib
    )
    output = Path(output) if output is not None else default_path(spec, fmt, precision)
    threshold = checks.min_agreement(precision, min_agreement)
    output.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    loaded = load_model(spec, device=torch.device("cpu"), **({"img_size": img_size} if img_size else {}))
    model = loaded.model.eval()
    data_config = dict(data_config_for(model))
    if img_size:
        data_config["input_size"] = (3, img_size, img_size)
    _, h, w = data_config["input_size"]
    example = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(0))
    meta = {
        **metadata(loaded, data_config),
        "precision": precision,
        "config": {k: v for k, v in (loaded.config or {}).items() if k == "multi_label"},
    }
    calib_images = checks.read_images(calib, data_config, limit=checks.CALIB_LIMIT) if calib is not None else None
    check_images = checks.read_images(check, data_config) if check is not None else calib_images
    on = "images" if check_images is not None else "random inputs"
    if check_images is None:
        check_images = checks.random_inputs(data_config)
    log(
        f"exporting {loaded.architecture} ({h}x{w}) to {fmt}"
        + (" (the dynamo exporter takes 10-40 s)" if fmt != "pt2" else "")
    )
    with tempfile.TemporaryDirectory(prefix=".vit-export-", dir=output.parent) as staging:
        staged = Path(staging) / output.name  # the file to check; moved to `output` once it passes
        quantization = None
        if fmt == "pt2":
            program = to_pt2(model, example, staged, meta, dynamic_batch=dynamic_batch)
            diff = check_pt2(model, program, example, dynamic_batch)
        else:
            fp32 = staged if (fmt, precision) == ("onnx", "fp32") else Path(staging) / "fp32.onnx"
            to_onnx(model, example, fp32, {**meta, "precision": "fp32"}, dynamic_batch=dynamic_batch, opset=opset)
            diff = check_onnx(model, fp32, example, dynamic_batch)
        if not diff <= tolerance:
            raise ModelError(
                f"the exported {fmt} model differs from the torch model by {diff:.3g} (more than {tolerance:g})",
                "nothing was kept; set VIT_DEBUG=1 and report it with the model name",
            )
        if precision == "int8":
            from vitcli.export.quantize import quantize_int8

            log(
                "quantizing to int8 ("
                + (
                    "static, calibrated on " + f"{len(calib_images)} images"
                    if calib_images is not None
                    else "dynamic: no --calib images"
                )
                + ")"
            )
            # which linears stay float is chosen on the calibration images when there are some, so that the
            # final check on --check images is a held-out measurement
            tune = calib_images if calib_images is not None else check_images
            quantization = quantize_int8(
                fp32, staged, meta, calib=calib_images, check=tune, target=threshold, log=log
            ).to_json()
        elif (fmt, precision) == ("onnx", "fp16"):
            from vitcli.export.quantize import to_fp16

            to_fp16(fp32, staged, meta)
        elif fmt == "openvino":
            from vitcli.export.openvino_file import to_openvino

            to_openvino(fp32, staged, meta, half=half)
        reference = checks.torch_top1(model, check_images)
        agreed = checks.agreement(reference, checks.file_top1(checks.open_file_model(staged, fmt), check_images), on)
        log(f"top-1 agreement with the torch model: {agreed.describe()}")
        if agreed.rate < threshold and not force:
            raise ModelError(
                f"the {precision} {fmt} export agrees with the torch model on {agreed.describe()}, "
                f"below --min-agreement {threshold:g}: nothing was kept",
                "keep it anyway with --force"
                + (", or calibrate on images like the ones it will see (--calib DIR)" if precision == "int8" else ""),
            )
        if agreed.rate < threshold:
            warn(
                f"KEPT BELOW THE THRESHOLD (--force): top-1 agreement {agreed.describe()} < {threshold:g}: "
                "this file does not predict as the torch model does"
            )
        if on == "random inputs":
            warn("checked on random inputs only: give --check DIR (or --calib DIR) to check the export on real images")
        size = _move_into_place(staged, output, fmt)
    if (fmt, precision) == ("onnx", "fp32") and dynamic_batch and not img_size:  # `--backend onnx` starts fast
        from vitcli.export import faststart

        faststart.save(spec, loaded, onnx_file=output)
    return ExportResult(
        output,
        fmt,
        loaded.architecture,
        [3, h, w],
        dynamic_batch,
        float(diff),
        round(time.perf_counter() - started, 1),
        precision,
        agreed,
        threshold,
        agreed.rate < threshold,
        quantization,
        size,
    )


def _move_into_place(staged: Path, output: Path, fmt: str) -> int:
    """The checked file (an IR: its .bin first) moved to `output`; its size in bytes."""
    import os

    size = 0
    if fmt == "openvino":
        size += staged.with_suffix(".bin").stat().st_size
        os.replace(staged.with_suffix(".bin"), output.with_suffix(".bin"))
    size += staged.stat().st_size
    os.replace(staged, output)
    return size


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
