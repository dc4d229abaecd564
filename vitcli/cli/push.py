"""`vit push RUN REPO_ID`: publish a run folder on the Hugging Face Hub (core: vitcli.hub.push)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vitcli.cli.options import JsonOpt


def push(
    run: Annotated[
        Path, typer.Argument(help="A run folder (runs/finetune/NAME), or any folder in Hub layout.", show_default=False)
    ],
    repo_id: Annotated[
        str, typer.Argument(help="The Hub repository to create or update: owner/name.", show_default=False)
    ],
    private: Annotated[bool, typer.Option("--private", help="Create the repository as private.")] = False,
    revision: Annotated[
        str | None,
        typer.Option(
            "--revision",
            help="The branch to push to (created from main when missing; default main).",
            show_default=False,
        ),
    ] = None,
    message: Annotated[
        str | None, typer.Option("--message", help="Commit message (default: vit push NAME).", show_default=False)
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Upload a run folder as a timm model repository, with a model card (recipe, metrics, command).

    Afterwards `vit predict --model hf-hub:REPO_ID` and timm.create_model("hf-hub:REPO_ID",
    pretrained=True) load it. Needs a Hub token that may write there (`hf auth login` or HF_TOKEN);
    HF_ENDPOINT picks the Hub.
    """
    from vitcli import output
    from vitcli.hub.push import push as push_run

    result = push_run(run, repo_id, private=private, revision=revision, message=message)
    if json_out:
        output.emit_json(result)
        return
    typer.echo(result["url"] + (f"/tree/{result['revision']}" if result["revision"] != "main" else ""))
    output.info(
        f"commit {result['commit']}: {', '.join(result['files'])}; load it with --model {result['model']}", style="dim"
    )


def register(app: typer.Typer) -> None:
    app.command("push")(push)
