"""`vit export`: a model as one ONNX or pt2 file, checked against the torch model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from vitcli.cli.options import DEFAULT_MODEL, ImgSizeOpt, JsonOpt, ModelOpt, OfflineOpt

ExportFileOpt = Annotated[Optional[Path], typer.Option(
    "--output", "-o", help="The file to write, ending in .onnx or .pt2 (default: the model's name with that suffix, "
                           "in the current folder).", show_default=False)]


def export(
    model: ModelOpt = DEFAULT_MODEL,
    format: Annotated[str, typer.Option(
        "--format", "-f", help="onnx (onnxruntime; preprocessing and label names in its metadata) | pt2 "
                               "(torch.export).")] = "onnx",
    output: ExportFileOpt = None,
    img_size: ImgSizeOpt = None,
    dynamic_batch: Annotated[bool, typer.Option(
        "--dynamic-batch/--static-batch", help="A batch axis of any size (default), or batch 2 only.")] = True,
    opset: Annotated[Optional[int], typer.Option("--opset", min=18, help="ONNX opset (default 18).",
                                                 show_default=False)] = None,
    json_out: JsonOpt = False,
    offline: OfflineOpt = False,
) -> None:
    """Export a model to ONNX or pt2; the file is checked against the torch model before it is kept.

    `vit predict --model FILE.onnx` then serves it in onnxruntime, without torch.
    """
    from vitcli import env
    from vitcli import output as sink
    from vitcli.export.export import DEFAULT_OPSET
    from vitcli.export.export import export as run_export

    env.set_offline(offline)
    result = run_export(model, format.lower(), output, img_size=img_size, dynamic_batch=dynamic_batch,
                        opset=opset or DEFAULT_OPSET, log=lambda m: sink.info(m, style="dim"))
    if json_out:
        sink.emit_json(result.to_json())
    else:
        sink.out().print(f"{result.path}: {result.format}, {result.architecture}, input "
                         f"{'N' if result.dynamic_batch else 2}x{'x'.join(map(str, result.input_size))}, "
                         f"max |logit difference| to torch {result.max_abs_diff:.2g}, {result.seconds} s",
                         soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("export")(export)
