"""`vit finetune`: a pre-trained model on a dataset, with the paper's recipe or a laptop one."""

from __future__ import annotations

from typing import Annotated

import typer

from vitcli.cli.options import P
from vitcli.cli.recipe_options import make_command

Freeze = Annotated[
    bool | None,
    typer.Option("--freeze/--no-freeze", help="Train the head only.", rich_help_panel=P, show_default=False),
]
HeadInit = Annotated[
    str | None,
    typer.Option(
        "--head-init",
        help="probe (LP-FT: a linear probe of the frozen features; quick) | zero (the paper).",
        rich_help_panel=P,
        show_default=False,
    ),
]

finetune = make_command(
    "finetune",
    """Fine-tune a pre-trained model; the best on minival is kept.

    The quick recipe (CPU): the head from a linear probe first (LP-FT), then everything, layer-wise lr
    decay, a step budget by dataset size. The paper's: a zero-initialised head, SGD, 2-D resampled
    position embeddings.
    """,
    recipe=[("freeze", Freeze), ("head_init", HeadInit)],
)


def register(app: typer.Typer) -> None:
    app.command("finetune")(finetune)
