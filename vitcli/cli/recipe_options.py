"""The options of `vit finetune` and `vit train`, defined once, and the command made from them.

Every recipe option defaults to None, meaning "not given": the value then comes from the config file,
else the recipe (vitcli.train.run.config.resolve). Both commands are made by `make_command` from the same
parameter list (plus each command's own options), so a shared option is written once and the command
functions receive exactly the options the user could give.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated

import typer

from vitcli.cli.options import (
    DataDirOpt,
    DatasetOpt,
    DeviceOpt,
    ImageColumnOpt,
    JsonOpt,
    LabelColumnOpt,
    OfflineOpt,
    P,
    PrecisionOpt,
    RecipeBatchSizeOpt,
    RecipeImgSizeOpt,
    RecipeModelOpt,
    SweepOpt,
    WorkersOpt,
)
from vitcli.cli.scale_options import SCALE_OPTIONS

RValSplit = Annotated[
    float | None,
    typer.Option(
        "--val-split",
        help="Fraction of train held out as minival (default: Pets/Flowers 0.1, CIFAR 0.02, "
        "folders without val/ 0.1; a default one under 100 images is not carved: all of train/ trains "
        "and the last model is kept).",
        show_default=False,
    ),
]
RRecipe = Annotated[
    str | None,
    typer.Option(
        "--recipe",
        help="paper (default with a GPU) | quick (laptop CPU, default without a GPU) | deit (DeiT's "
        "augmentation and regularisation).",
        show_default=False,
    ),
]
RConfig = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="JSON, TOML or YAML file of settings (a run folder reruns that run); flags override it.",
        show_default=False,
    ),
]


def _recipe(kind, flag: str, help: str, **kwargs):
    """An option of the recipe panel: None when not given (the value then comes from the recipe)."""
    return Annotated[kind | None, typer.Option(flag, help=help, rich_help_panel=P, show_default=False, **kwargs)]


RSteps = _recipe(int, "--steps", "Optimizer steps.", min=1)
REpochs = _recipe(float, "--epochs", "Epochs (instead of --steps).")
RLr = _recipe(float, "--lr", "Peak learning rate.")
RAccum = _recipe(int, "--accum", "Micro-batches per step (default 1; on CUDA doubled on out-of-memory).", min=1)
RWarmup = _recipe(int, "--warmup", "Linear warmup steps.", min=0)
RSchedule = _recipe(str, "--schedule", "cosine | linear | constant, after warmup.")
RWd = _recipe(float, "--weight-decay", "Decoupled weight decay.")
RClip = _recipe(float, "--clip-grad", "Global gradient-norm clip (0: off).")
RSmooth = Annotated[
    float | None,
    typer.Option("--smoothing", "--label-smoothing", help="Label smoothing.", rich_help_panel=P, show_default=False),
]
RLayerDecay = _recipe(float, "--layer-decay", "Layer-wise lr decay (BEiT/MAE; 1: off).")
RPatience = _recipe(int, "--patience", "Stop after N evaluations without a better held-out top-1.", min=1)
RAa = _recipe(str, "--aa", "RandAugment/AutoAugment policy, e.g. rand-m9-mstd0.5-inc1 (none: off).")
RMixup = _recipe(float, "--mixup", "Mixup alpha (0: off).")
RCutmix = _recipe(float, "--cutmix", "CutMix alpha (0: off).")
RReprob = _recipe(float, "--reprob", "Random-erasing probability.")
RDropPath = _recipe(float, "--drop-path", "Stochastic depth rate.")
RModelEma = Annotated[
    bool | None,
    typer.Option(
        "--model-ema/--no-model-ema",
        help="Keep an EMA of the weights (evaluated beside them; the better is kept).",
        rich_help_panel=P,
        show_default=False,
    ),
]
REmaDecay = _recipe(float, "--ema-decay", "The EMA's decay (default 0.9998; warmed up from 0).")
RMultiLabel = Annotated[
    bool | None,
    typer.Option(
        "--multi-label/--no-multi-label",
        help="Sets of labels per image: a sigmoid head, BCE, per-class thresholds "
        "(default: from the data: a CSV folder or a Sequence(ClassLabel) column).",
        rich_help_panel=P,
        show_default=False,
    ),
]
RLoss = _recipe(str, "--loss", "Multi-label loss: bce (default) | asl (timm's asymmetric loss).")
RStopAfter = Annotated[
    int | None,
    typer.Option(
        "--stop-after",
        min=1,
        show_default=False,
        help="Save and stop after step N, as if interrupted (--resume continues).",
    ),
]
RSeed = Annotated[int | None, typer.Option("--seed", help="Random seed (default 0).", show_default=False)]
REvalEvery = Annotated[
    int | None,
    typer.Option(
        "--eval-every", min=1, show_default=False, help="Evaluate on minival/val every N steps (default: 5 times)."
    ),
]
RSaveEvery = Annotated[
    int | None,
    typer.Option(
        "--save-every",
        min=1,
        show_default=False,
        help="Save the training state every N steps (default: at each evaluation).",
    ),
]
RMixer = Annotated[
    str | None,
    typer.Option(
        "--token-mixer",
        help="attention | pooling | mlp | identity: the ViT with its token mixer replaced.",
        show_default=False,
    ),
]
RMixers = Annotated[
    str | None,
    typer.Option(
        "--token-mixers",
        help="Per-stage mixers for PoolFormer, e.g. pooling,pooling,attention,attention.",
        show_default=False,
    ),
]
RName = Annotated[
    str | None, typer.Option("--name", help="Run folder name (default: <dataset>-<n>).", show_default=False)
]
RProject = Annotated[
    Path | None, typer.Option("--project", help="Parent of the run folders (default: runs).", show_default=False)
]
RReportTo = Annotated[
    str | None,
    typer.Option(
        "--report-to",
        help="tensorboard | wandb | tensorboard,wandb | none (default): also send the scalars there "
        "(extras vitcli\\[tensorboard], vitcli\\[wandb]).",
        show_default=False,
    ),
]
RResume = Annotated[
    Path | None,
    typer.Option(
        "--resume",
        help="Continue the run in this run folder; with no folder (or `last`), the latest unfinished run of "
        "this command in --project.",
        show_default=False,
    ),
]
RDryRun = Annotated[bool, typer.Option("--dry-run", help="Print the resolved config as JSON and exit.")]

_NOT_FLAGS = ("config", "resume", "sweep", "dry_run", "json_out", "offline", "stop_after")


def _param(name: str, annotation, default=None) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


def make_command(command: str, doc: str, *, first: list = (), recipe: list = ()):
    """The typer command function of `vit COMMAND`: the shared options, with the command's own `first`
    (after --recipe) and `recipe` (in the recipe panel) options, as (name, annotation) pairs."""
    params = [
        _param("dataset", DatasetOpt),
        _param("model", RecipeModelOpt),
        _param("recipe", RRecipe),
        *(_param(n, a) for n, a in first),
        _param("steps", RSteps),
        _param("epochs", REpochs),
        _param("lr", RLr),
        _param("batch_size", RecipeBatchSizeOpt),
        _param("accum", RAccum),
        _param("warmup", RWarmup),
        _param("img_size", RecipeImgSizeOpt),
        _param("schedule", RSchedule),
        _param("weight_decay", RWd),
        _param("clip_grad", RClip),
        _param("layer_decay", RLayerDecay),
        _param("patience", RPatience),
        _param("aa", RAa),
        _param("mixup", RMixup),
        _param("cutmix", RCutmix),
        _param("reprob", RReprob),
        _param("label_smoothing", RSmooth),
        _param("drop_path", RDropPath),
        _param("model_ema", RModelEma),
        _param("ema_decay", REmaDecay),
        _param("multi_label", RMultiLabel),
        _param("loss", RLoss),
        *(_param(n, a) for n, a in recipe),
        *(_param(n, a) for n, a in SCALE_OPTIONS),
        _param("seed", RSeed),
        _param("data_dir", DataDirOpt),
        _param("val_split", RValSplit),
        _param("image_column", ImageColumnOpt),
        _param("label_column", LabelColumnOpt),
        _param("token_mixer", RMixer),
        _param("token_mixers", RMixers),
        _param("workers", WorkersOpt),
        _param("device", DeviceOpt, "auto"),
        _param("precision", PrecisionOpt, "auto"),
        _param("eval_every", REvalEvery),
        _param("save_every", RSaveEvery),
        _param("name", RName),
        _param("project", RProject),
        _param("report_to", RReportTo),
        _param("config", RConfig),
        _param("resume", RResume),
        _param("stop_after", RStopAfter),
        _param("sweep", SweepOpt),
        _param("dry_run", RDryRun, False),
        _param("json_out", JsonOpt, False),
        _param("offline", OfflineOpt, False),
    ]

    def command_function(**options) -> None:
        _run(command, options)

    command_function.__signature__ = inspect.Signature(params)
    command_function.__annotations__ = {p.name: p.annotation for p in params}
    command_function.__name__ = command_function.__qualname__ = command
    command_function.__doc__ = doc
    return command_function


def _run(command: str, options: dict) -> None:
    """Parse: the flags for the core; call vitcli.train.launch; render the summary or the sweep table."""
    from vitcli import env, output
    from vitcli.train import launch

    env.set_offline(options["offline"])
    flags = {k: v for k, v in options.items() if k not in _NOT_FLAGS}
    where = dict(
        config_file=options["config"],
        resume=options["resume"],
        sweep=options["sweep"],
        stop_after=options["stop_after"],
    )
    if options["dry_run"]:
        from vitcli.train.recipe import budget
        from vitcli.train.run.config import dumps
        from vitcli.train.scale import world

        for line in world.describe() if env.dist()[1] > 1 else ():  # under torchrun: every rank its own line
            output.info(line)
        for setting, cfg in launch.configs(command, flags, **{k: v for k, v in where.items() if k != "stop_after"}):
            if env.dist()[0] != 0:  # under torchrun, rank 0 prints the config
                break
            if setting is not None:
                output.emit_json({"setting": setting, "config": cfg.to_dict()})
            elif options["json_out"]:
                output.emit_json({**cfg.to_dict(), "plan": budget.plan_of(cfg)})
            else:
                typer.echo(dumps(cfg))
                output.info(budget.describe(budget.plan_of(cfg)))
        return
    from vitcli.train.scale.world import failures_named

    with failures_named():  # under torchrun: which rank failed, on stderr and in torchrun's summary
        result = launch.launch(command, flags, **where)
    if env.dist()[0] != 0:  # under torchrun, rank 0 speaks for all
        return
    if isinstance(result, dict):
        output.emit_json(result) if options["json_out"] else render(result)
        return
    output.emit_json(result.to_json()) if options["json_out"] else render_sweep(result)
    failed = [r for r in result.rows if r.status in ("failed", "diverged")]
    if failed:
        what = " or ".join(s for s in ("failed", "diverged") if any(r.status == s for r in failed))
        output.warn(
            f"{len(failed)} of {len(result.rows)} settings {what} (shown in the table); the winner is "
            "the best of the others"
        )


def render(summary: dict) -> None:
    from vitcli.cli import tables

    rows = []
    labels = {
        "val_top1": f"{summary.get('selection_split') or 'val'} top-1 (best)",
        "test_top1": "test top-1",
        "val_mAP": f"{summary.get('selection_split') or 'val'} mAP (best)",
        "test_mAP": "test mAP",
        "img_s": "train img/s",
        "run_dir": "run folder",
        "best_step": "best at step",
    }
    for key in (
        "run_dir",
        "model",
        "dataset",
        "steps",
        "stopped_early_at",
        "stopped_at",
        "epochs",
        "best_step",
        "weights",
        "val_top1",
        "test_top1",
        "val_mAP",
        "test_mAP",
        "params",
        "img_s",
        "seconds",
        "skipped_images",
    ):
        if summary.get(key) is None:
            continue
        value = summary[key]
        if key in ("val_top1", "test_top1", "val_mAP", "test_mAP"):
            value = f"{value:.2f} %"
        elif key == "params":
            value = f"{value / 1e6:.2f} M"
        rows.append((labels.get(key, key.replace("_", " ")), str(value)))
    tables.print_table([tables.Column("key", wrap="none"), tables.Column("value", wrap="path")], rows, header=False)


def render_sweep(result) -> None:
    """The comparison table on stdout (vitcli.cli.tables), the winner and the saved files on stderr."""
    from vitcli import output as sink
    from vitcli.cli import tables
    from vitcli.train.sweeps.sweep import COLUMNS, columns, label, table_rows

    tables.print_table(
        [tables.Column(name, right=c not in ("setting", "status")) for c, name in zip(COLUMNS, columns(result))],
        table_rows(result, reasons=False),
        styles=[
            "bold green" if r is result.winner else ("red" if r.status in ("failed", "diverged") else None)
            for r in result.rows
        ],
    )
    for r in result.rows:
        if r.status == "failed":
            sink.error(f"{label(r.setting)}: {r.error}", label="failed:")
    if result.winner is None:
        sink.warn("no run finished: there is no winner")
    else:
        sink.info(
            f"winner (best {result.selection_split}): {label(result.winner.setting)} -> "
            f"{result.sweep_dir / result.winner.folder}"
        )
    sink.info(f"table saved to {', '.join(str(p) for p in result.table_files)}", style="dim")
