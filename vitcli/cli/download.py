"""`vit download`: fetch a model's files into the Hugging Face cache, to work offline later."""

from __future__ import annotations

from typing import Annotated

import typer

from vitcli.cli.options import JsonOpt


def download(
    model: Annotated[str, typer.Argument(help="timm name with a pretrained tag, or hf-hub:org/name[@rev].")],
    json_out: JsonOpt = False,
) -> None:
    """Download a model into the Hugging Face cache (HF_HOME), then use it with --offline."""
    from vitcli import output as sink
    from vitcli.errors import UsageError
    from vitcli.models.resolver import fetch, parse_spec

    source = parse_spec(model)
    if source.kind == "local":
        raise UsageError(f"{model} is a local folder: nothing to download")
    source = fetch(source, refresh=True)
    result = {"model": model, "weights": str(source.weights) if source.weights else None,
              "folder": str(source.folder) if source.folder else None}
    if json_out:
        sink.emit_json(result)
    else:
        sink.out().print(f"{model}: {result['weights']}", soft_wrap=True)
