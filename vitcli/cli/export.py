"""`vit export`: a model as one ONNX or pt2 file, checked against the torch model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vitcli.cli.options import DEFAULT_MODEL, ImgSizeOpt, JsonOpt, ModelOpt, OfflineOpt

ExportFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--output",
        "-o",
        help="The file to write, ending in .onnx or .pt2 (default: the model's name with that suffix, "
        "in the current folder).",
        show_default=False,
    ),
]


def export(
    model: ModelOpt = DEFAULT_MODEL,
    format: Annotated[
        str,
        typer.Option(
            "--format",
            "-f",
            help="onnx (onnxruntime; preprocessing and label names in its metadata) | pt2 "
            "(torch.export) | openvino (.xml + .bin, the openvino extra).",
        ),
    ] = "onnx",
    quantize: Annotated[
        str | None,
        typer.Option(
            "--quantize",
            help="int8: ONNX Runtime quantization of the linear layers (static with --calib, else "
            "dynamic); the layers whose int8 error costs agreement stay in float.",
            show_default=False,
        ),
    ] = None,
    half: Annotated[
        bool, typer.Option("--half", help="fp16 weights and compute (GPU targets; onnx, openvino).")
    ] = False,
    calib: Annotated[
        Path | None,
        typer.Option(
            "--calib", help="Images (a folder) to calibrate int8 on and to check the export on.", show_default=False
        ),
    ] = None,
    check: Annotated[
        Path | None,
        typer.Option(
            "--check",
            help="Images (a folder) to check the export on (default: the --calib images, else random inputs).",
            show_default=False,
        ),
    ] = None,
    min_agreement: Annotated[
        float | None,
        typer.Option(
            "--min-agreement",
            min=0.0,
            max=1.0,
            help="Refuse the export below this top-1 agreement with the torch "
            "model (default 0.95 for int8, 0.99 otherwise).",
            show_default=False,
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Keep an export below --min-agreement (with a warning).")
    ] = False,
    output: ExportFileOpt = None,
    img_size: ImgSizeOpt = None,
    dynamic_batch: Annotated[
        bool,
        typer.Option("--dynamic-batch/--static-batch", help="A batch axis of any size (default), or batch 2 only."),
    ] = True,
    opset: Annotated[
        int | None, typer.Option("--opset", min=18, help="ONNX opset (default 18).", show_default=False)
    ] = None,
    json_out: JsonOpt = False,
    offline: OfflineOpt = False,
) -> None:
    """Export a model to ONNX (fp32, int8, fp16), pt2 or OpenVINO; checked against the torch model before it is kept.

    Every file is a model: `vit predict|eval|benchmark|serve --model FILE.onnx|.pt2|.xml`.
    """
    from vitcli import env
    from vitcli import output as sink
    from vitcli.export.export import DEFAULT_OPSET
    from vitcli.export.export import export as run_export

    env.set_offline(offline)
    result = run_export(
        model,
        format.lower(),
        output,
        img_size=img_size,
        dynamic_batch=dynamic_batch,
        opset=opset or DEFAULT_OPSET,
        quantize=quantize and quantize.lower(),
        half=half,
        calib=calib,
        check=check,
        min_agreement=min_agreement,
        force=force,
        log=lambda m: sink.info(m, style="dim"),
        warn=sink.warn,
    )
    if json_out:
        sink.emit_json(result.to_json())
    else:
        agreed = result.agreement
        sink.out().print(
            f"{result.path}: {result.format} {result.precision}, {result.architecture}, input "
            f"{'N' if result.dynamic_batch else 2}x{'x'.join(map(str, result.input_size))}, "
            f"{result.size_bytes / 1e6:.1f} MB, top-1 agreement with torch {agreed.describe()}, "
            f"fp32 max |logit difference| {result.max_abs_diff:.2g}, {result.seconds} s",
            soft_wrap=True,
        )


def register(app: typer.Typer) -> None:
    app.command("export")(export)
