"""`vit models [PATTERN]`: timm architectures with params, GMACs/GFLOPs, input size and pretrained tags."""

from __future__ import annotations

from typing import Annotated

import typer

from vitcli.cli.options import JsonOpt

PROGRESS_EVERY_S = 5.0


def models(
    pattern: Annotated[
        str | None,
        typer.Argument(
            help="Filter over all of timm's architectures: a bare word matches anywhere in the name "
            "(`vit` = `*vit*`), wildcards as given (`vit_*_patch16_224`); also matches pretrained tags "
            "(`augreg2`). Without it: the ViT family (incl. R50+ViT hybrids), DeiT, PoolFormer v1/v2, "
            "MLP-Mixer.",
            show_default=False,
        ),
    ] = None,
    all_models: Annotated[bool, typer.Option("--all", help="Every architecture timm registers.")] = False,
    pretrained: Annotated[
        bool, typer.Option("--pretrained", help="Only architectures that have pre-trained weights.")
    ] = False,
    no_tags: Annotated[bool, typer.Option("--no-tags", help="Leave out the pretrained-tags column.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """List architectures: params, GMACs/GFLOPs, input size, pretrained tags (no weights loaded).

    Counted on the meta device, once per timm version (cached); GFLOPs = 2 x GMACs at batch 1.
    """
    import time

    from vitcli import output as sink
    from vitcli.errors import UsageError
    from vitcli.models import zoo

    count = {"total": 0, "done": 0, "said": time.monotonic()}

    def on_total(n: int) -> None:
        count["total"] = n
        if n > 20:
            sink.info(f"counting {n} architectures once (cached afterwards)...", style="dim")

    with sink.progress("count", total=None, unit="models") as advance:

        def step(n: int = 1) -> None:  # without a progress bar (not a terminal): a line every 5 s
            advance(n)
            count["done"] += n
            if not sink.show_progress() and time.monotonic() - count["said"] > PROGRESS_EVERY_S:
                count["said"] = time.monotonic()
                sink.info(f"counted {count['done']} of {count['total']} architectures", style="dim")

        entries = zoo.models(
            pattern, all_models=all_models, pretrained_only=pretrained, progress=step, on_total=on_total
        )
    if not entries:
        raise UsageError(
            f"no architecture matches {pattern!r}" if pattern else "no architectures",
            "try a shorter pattern, e.g. `vit models vit`, or `vit models --all`",
        )
    if json_out:
        for e in entries:
            sink.emit_json(e.to_json())
        return
    _render(entries, show_tags=not no_tags)


def _render(entries, show_tags: bool) -> None:
    from vitcli import output as sink
    from vitcli.cli import tables

    columns = [
        tables.Column("model", wrap="none"),
        tables.Column("params (M)", right=True),
        tables.Column("GMACs", right=True),
        tables.Column("GFLOPs", right=True),
        tables.Column("input", right=True),
    ]
    if show_tags:
        columns.append(tables.Column("pretrained tags"))
    rows = []
    for e in entries:
        size = f"{e.input_size[1]}x{e.input_size[2]}" if e.input_size else "?"
        row = [
            e.model,
            f"{e.params / 1e6:.2f}" if e.params is not None else "?",
            f"{e.gmacs:.2f}" if e.gmacs is not None else "?",
            f"{e.gflops:.2f}" if e.gflops is not None else "?",
            size,
        ]
        if show_tags:
            row.append(", ".join(e.tags) if e.tags else "-")
        rows.append(row)
    tables.print_table(columns, rows)
    failed = [e for e in entries if e.error]
    if failed:
        sink.warn(
            f"{len(failed)} architecture(s) could not be counted without weights (shown as ?): "
            + ", ".join(e.model for e in failed[:5])
            + (" ..." if len(failed) > 5 else "")
        )
    sink.info(
        f"{len(entries)} architecture{'s' if len(entries) != 1 else ''}; GFLOPs = 2 x GMACs (multiply-adds at batch 1, "
        "as in timm's benchmark tables)",
        style="dim",
    )


def register(app: typer.Typer) -> None:
    app.command("models")(models)
