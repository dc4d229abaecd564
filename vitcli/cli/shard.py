"""`vit shard SRC OUT`: a dataset as WebDataset tar shards (core: vitcli.data.shards)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vitcli.cli.options import DataDirOpt, ImageColumnOpt, JsonOpt, LabelColumnOpt, OfflineOpt


def shard(
    src: Annotated[
        str,
        typer.Argument(
            help="The dataset: a folder (train/ + test/ class folders, or class "
            "folders), pets | flowers102 | cifar10 | cifar100, or hf:NAME.",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path, typer.Argument(help="The folder of the shards (created; a rerun resumes).", show_default=False)
    ],
    shard_size: Annotated[int, typer.Option("--shard-size", min=1, help="Samples per shard.")] = 1000,
    split: Annotated[
        list[str] | None,
        typer.Option(
            "--split",
            help="A split to write: train | minival | val | test (repeat; default: every split the dataset has).",
            show_default=False,
        ),
    ] = None,
    val_split: Annotated[
        float | None,
        typer.Option(
            "--val-split",
            help="Carve this fraction of train as a minival split (written as minival shards).",
            show_default=False,
        ),
    ] = None,
    data_dir: DataDirOpt = None,
    image_column: ImageColumnOpt = None,
    label_column: LabelColumnOpt = None,
    json_out: JsonOpt = False,
    offline: OfflineOpt = False,
) -> None:
    """Write a dataset as WebDataset tar shards for streaming: --dataset wds:OUT in train, finetune, eval.

    Each split becomes SPLIT-000000.tar, ... (the image files' bytes as stored, the class index) and
    SPLIT.json (label names, images per class, samples per shard). Shards are written whole or not at all;
    a rerun skips the complete ones.
    """
    from vitcli import env, output
    from vitcli.data.shards import write_shards

    env.set_offline(offline)
    result = write_shards(
        src,
        out,
        shard_size=shard_size,
        splits=split,
        data_dir=data_dir,
        download=not env.offline(),
        image_column=image_column,
        label_column=label_column,
        val_split=val_split,
    )
    if json_out:
        output.emit_json(result)
        return
    for name, meta in result["splits"].items():
        typer.echo(
            f"{name}: {meta['samples']} images in {len(meta['shards'])} shards of up to "
            f"{meta['shard_size']} ({meta['written']} written, {meta['kept']} already complete)"
        )
    output.info(f"use it with --dataset wds:{result['out']}", style="dim")


def register(app: typer.Typer) -> None:
    app.command("shard")(shard)
