"""`vit finetune`: a pre-trained model on a dataset, with the paper's recipe or a laptop one."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from vitcli.commands import _training as t
from vitcli.options import DeviceOpt, JsonOpt, OfflineOpt, PrecisionOpt, SweepOpt, WorkersOpt


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
    flags = dict(dataset=dataset, model=model, recipe=recipe, steps=steps, epochs=epochs, lr=lr,
                 batch_size=batch_size, accum=accum, warmup=warmup, img_size=img_size, freeze=freeze,
                 schedule=schedule, weight_decay=weight_decay, clip_grad=clip_grad,
                 label_smoothing=label_smoothing, seed=seed, data_dir=data_dir, val_split=val_split,
                 token_mixer=token_mixer, token_mixers=token_mixers, workers=workers,
                 device=None if device == "auto" else device, precision=None if precision == "auto" else precision,
                 eval_every=eval_every, save_every=save_every, name=name, project=project)
    from vitcli import sweep_training

    if sweep or sweep_training.is_sweep_dir(resume):
        sweep_training.run_command("finetune", flags, sweep, config=config, resume=resume, dry_run=dry_run,
                                   json_out=json_out, offline=offline)
        return
    t.run("finetune", flags, config=config, resume=resume, dry_run=dry_run, json_out=json_out, offline=offline)


def register(app: typer.Typer) -> None:
    app.command("finetune")(finetune)
