"""`vit finetune`: a pre-trained model on a dataset, with the paper's recipe or a laptop one."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from vitcli.cli.options import P
from vitcli.cli.recipe_options import make_command

Freeze = Annotated[Optional[bool], typer.Option(
    "--freeze/--no-freeze", help="Train the head only.", rich_help_panel=P, show_default=False)]

finetune = make_command(
    "finetune",
    """Fine-tune a pre-trained model with the paper's recipe; the best on minival is kept.

    Zero-initialised head, 2-D resampled position embeddings, SGD momentum, warmup + cosine, clipping.
    """,
    recipe=[("freeze", Freeze)])


def register(app: typer.Typer) -> None:
    app.command("finetune")(finetune)
