"""The options of `vit train` / `vit finetune` for going past one device, and for distillation
(vitcli.train.scale.fsdp, vitcli.train.recipe.distill): defined once, spliced into the recipe commands."""

from __future__ import annotations

from typing import Annotated

import typer

PANEL = "Scale and distillation"


def _opt(kind, *flags: str, help: str):
    return Annotated[kind | None, typer.Option(*flags, help=help, rich_help_panel=PANEL, show_default=False)]


SCALE_OPTIONS = [
    (
        "grad_checkpointing",
        _opt(
            bool,
            "--grad-checkpointing/--no-grad-checkpointing",
            help="Recompute each block's activations in backward (timm's set_grad_checkpointing): "
            "less memory, more compute.",
        ),
    ),
    (
        "fsdp",
        _opt(
            bool,
            "--fsdp/--no-fsdp",
            help="Shard parameters, gradients and optimizer state over the ranks (FSDP2 per block; bf16 "
            "mixed precision with --precision bf16); saves a normal run folder.",
        ),
    ),
    ("teacher", _opt(str, "--teacher", help="Distil from this model (any --model spec, the dataset's classes).")),
    (
        "distill",
        _opt(
            str,
            "--distill",
            help="logit (soft KL at --distill-temp) | token (DeiT's distillation token, deit_*_distilled models).",
        ),
    ),
    ("distill_temp", _opt(float, "--distill-temp", help="Soft distillation temperature (default 1, DeiT's).")),
    (
        "distill_alpha",
        _opt(
            float,
            "--distill-alpha",
            help="Weight of the teacher's loss; 1 - alpha on the labels (default 0.5, DeiT's).",
        ),
    ),
]
