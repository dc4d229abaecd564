"""`vit finetune`: a pre-trained model on a dataset, with the paper's recipe or a laptop one."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from vitcli.cli import recipe_options as t
from vitcli.cli.options import DeviceOpt, JsonOpt, OfflineOpt, PrecisionOpt, SweepOpt, WorkersOpt


def finetune(
    dataset: t.RDataset = None,
    model: t.RModel = None,
    recipe: t.RRecipe = None,
    steps: t.RSteps = None,
    epochs: t.REpochs = None,
    lr: t.RLr = None,
    batch_size: t.RBatch = None,
    accum: t.RAccum = None,
    warmup: t.RWarmup = None,
    img_size: t.RImg = None,
    freeze: Annotated[Optional[bool], typer.Option(
        "--freeze/--no-freeze", help="Train the head only.", rich_help_panel=t.P, show_default=False)] = None,
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
    """Fine-tune a pre-trained model with the paper's recipe; the best on minival is kept.

    Zero-initialised head, 2-D resampled position embeddings, SGD momentum, warmup + cosine, clipping.
    """
    t.dispatch("finetune", locals())


def register(app: typer.Typer) -> None:
    app.command("finetune")(finetune)
