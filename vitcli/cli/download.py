"""`vit download`: fetch a model's files into the Hugging Face cache, to work offline later."""

from __future__ import annotations

from typing import Annotated

import typer

from vitcli.cli.options import JsonOpt


def download(
    model: Annotated[str, typer.Argument(help="timm name with a pretrained tag, or hf-hub:org/name\\[@rev].")],
    fast_start: Annotated[
        bool,
        typer.Option(
            "--fast-start/--no-fast-start",
            help="Also write the ONNX copy that `--backend onnx` serves without torch "
            "(10-40 s, once; VIT_EXPORT=0 turns it off everywhere).",
        ),
    ] = True,
    json_out: JsonOpt = False,
) -> None:
    """Download a model into the Hugging Face cache (HF_HOME), then use it with --offline."""
    from vitcli import output as sink
    from vitcli.hub.download import download as fetch_model

    result = fetch_model(model, fast_start=fast_start, log=lambda m: sink.info(m, style="dim"))
    if json_out:
        sink.emit_json(result)
    else:
        sink.out().print(f"{model}: {result['weights']}", soft_wrap=True)
        if result.get("fast_start"):
            sink.info(
                f"fast-start copy: {result['fast_start']} (used with --backend onnx or VIT_BACKEND=onnx: "
                "onnxruntime, CPU fp32, no torch import)",
                style="dim",
            )
