"""`vit train`: a ViT (or any timm model) from scratch, with the paper's ablation switches."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from vitcli.cli import recipe_options as t
from vitcli.cli.options import DeviceOpt, JsonOpt, OfflineOpt, PrecisionOpt, SweepOpt, WorkersOpt


def train(
    dataset: t.RDataset = None,
    model: t.RModel = None,
    recipe: t.RRecipe = None,
    img_size: t.RImg = None,
    patch_size: Annotated[Optional[int], typer.Option(
        "--patch-size", min=1, help="Patch size (e.g. 4 for 32 px images).", show_default=False)] = None,
    pos_embed: Annotated[Optional[str], typer.Option(
        "--pos-embed", help="learn (1-D, default) | sincos (2-D, fixed) | none.", show_default=False)] = None,
    pool: Annotated[Optional[str], typer.Option(
        "--pool", help="token (class token, default) | avg (global average pooling).", show_default=False)] = None,
    drop_path: Annotated[Optional[float], typer.Option(
        "--drop-path", help="Stochastic depth rate.", rich_help_panel=t.P, show_default=False)] = None,
    steps: t.RSteps = None,
    epochs: t.REpochs = None,
    lr: t.RLr = None,
    batch_size: t.RBatch = None,
    accum: t.RAccum = None,
    warmup: t.RWarmup = None,
    schedule: t.RSchedule = None,
    weight_decay: t.RWd = None,
    clip_grad: t.RClip = None,
    label_smoothing: t.RSmooth = None,
    seed: t.RSeed = None,
    data_dir: t.RDataDir = None,
    val_split: t.RValSplit = None,
    token_mixer: t.RMixer = None,
    token_mixers: t.RMixers = None,
    workers: WorkersOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    eval_every: t.REvalEvery = None,
    save_every: t.RSaveEvery = None,
    name: t.RName = None,
    project: t.RProject = None,
    config: t.RConfig = None,
    resume: t.RResume = None,
    sweep: SweepOpt = None,
    dry_run: t.RDryRun = False,
    json_out: JsonOpt = False,
    offline: OfflineOpt = False,
) -> None:
    """Train from scratch: Adam, weight decay, warmup + linear decay; the paper's ablations.

    Position embedding (--pos-embed learn|sincos|none) and pooling (--pool token|avg) are options.
    """
    t.dispatch("train", locals())


def register(app: typer.Typer) -> None:
    app.command("train")(train)
