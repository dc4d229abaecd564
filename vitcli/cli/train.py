"""`vit train`: a ViT (or any timm model) from scratch, with the paper's ablation switches."""

from __future__ import annotations

from typing import Annotated

import typer

from vitcli.cli.recipe_options import make_command

PatchSize = Annotated[
    int | None, typer.Option("--patch-size", min=1, help="Patch size (e.g. 4 for 32 px images).", show_default=False)
]
PosEmbed = Annotated[
    str | None,
    typer.Option("--pos-embed", help="learn (1-D, default) | sincos (2-D, fixed) | none.", show_default=False),
]
Pool = Annotated[
    str | None,
    typer.Option(
        "--pool",
        help="token (class token, default) | avg (global average pooling: learned a 2-epoch run on "
        "16 px digits far faster, see Recipes).",
        show_default=False,
    ),
]

train = make_command(
    "train",
    """Train from scratch: Adam, weight decay, warmup + linear decay; the paper's ablations.

    Position embedding (--pos-embed learn|sincos|none) and pooling (--pool token|avg) are options.
    """,
    first=[("patch_size", PatchSize), ("pos_embed", PosEmbed), ("pool", Pool)],
)


def register(app: typer.Typer) -> None:
    app.command("train")(train)
