"""Options and rendering shared by `vit finetune` and `vit train` (typer and stdlib only).

Every recipe option defaults to None, meaning "not given": the value then comes from the config file,
else the recipe (vitcli.recipes.resolve).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

P = "Recipe"  # help panel for the settings a recipe fills

RModel = Annotated[Optional[str], typer.Option(
    "--model", "-m", help="timm name (with or without a pretrained tag), paper code (S/16), hf-hub:org/name, "
                          "a Hub-layout folder or a run folder. Default: the recipe's.", show_default=False)]
RDataset = Annotated[Optional[str], typer.Option(
    "--dataset", "-d", help="pets | flowers102 | cifar10 | cifar100 | a folder (train/ + val/ or test/ class "
                            "folders, or one folder of class folders).", show_default=False)]
RDataDir = Annotated[Optional[Path], typer.Option(
    "--data-dir", help="Where named datasets live, in torchvision's layout (default: VIT_CACHE/datasets).",
    show_default=False)]
RValSplit = Annotated[Optional[float], typer.Option(
    "--val-split", help="Fraction of train held out as minival (default: Pets/Flowers 0.1, CIFAR 0.02, "
                        "folders without val/ 0.1).", show_default=False)]
RRecipe = Annotated[Optional[str], typer.Option(
    "--recipe", help="paper (default with a GPU) | quick (laptop CPU, default without a GPU).", show_default=False)]
RConfig = Annotated[Optional[Path], typer.Option(
    "--config", help="JSON/TOML file of settings (a run folder reruns that run); flags override it.",
    show_default=False)]
RSteps = Annotated[Optional[int], typer.Option("--steps", min=1, help="Optimizer steps.", rich_help_panel=P,
                                               show_default=False)]
REpochs = Annotated[Optional[float], typer.Option("--epochs", help="Epochs (instead of --steps).",
                                                  rich_help_panel=P, show_default=False)]
RLr = Annotated[Optional[float], typer.Option("--lr", help="Peak learning rate.", rich_help_panel=P,
                                              show_default=False)]
RBatch = Annotated[Optional[int], typer.Option("--batch-size", "-b", min=1, rich_help_panel=P, show_default=False,
                                               help="Global batch (all devices and accumulation steps).")]
RAccum = Annotated[Optional[int], typer.Option("--accum", min=1, rich_help_panel=P, show_default=False,
                                               help="Micro-batches per step (default 1; on CUDA doubled on "
                                                    "out-of-memory).")]
RWarmup = Annotated[Optional[int], typer.Option("--warmup", min=0, help="Linear warmup steps.", rich_help_panel=P,
                                                show_default=False)]
RImg = Annotated[Optional[int], typer.Option("--img-size", min=8, rich_help_panel=P, show_default=False,
                                             help="Input resolution (position embeddings resampled in 2-D).")]
RSchedule = Annotated[Optional[str], typer.Option("--schedule", help="cosine | linear | constant, after warmup.",
                                                  rich_help_panel=P, show_default=False)]
RWd = Annotated[Optional[float], typer.Option("--weight-decay", help="Decoupled weight decay.", rich_help_panel=P,
                                              show_default=False)]
RClip = Annotated[Optional[float], typer.Option("--clip-grad", help="Global gradient-norm clip (0: off).",
                                                rich_help_panel=P, show_default=False)]
RSmooth = Annotated[Optional[float], typer.Option("--label-smoothing", rich_help_panel=P, show_default=False,
                                                  help="Label smoothing.")]
RSeed = Annotated[Optional[int], typer.Option("--seed", help="Random seed (default 0).", show_default=False)]
REvalEvery = Annotated[Optional[int], typer.Option("--eval-every", min=1, show_default=False,
                                                   help="Evaluate on minival/val every N steps (default: 5 times).")]
RSaveEvery = Annotated[Optional[int], typer.Option("--save-every", min=1, show_default=False,
                                                   help="Save the training state every N steps (default: at "
                                                        "each evaluation).")]
RMixer = Annotated[Optional[str], typer.Option(
    "--token-mixer", help="attention | pooling | mlp | identity: the ViT with its token mixer replaced.",
    show_default=False)]
RMixers = Annotated[Optional[str], typer.Option(
    "--token-mixers", help="Per-stage mixers for PoolFormer, e.g. pooling,pooling,attention,attention.",
    show_default=False)]
RName = Annotated[Optional[str], typer.Option("--name", help="Run folder name (default: <dataset>-<n>).",
                                              show_default=False)]
RProject = Annotated[Optional[Path], typer.Option("--project", help="Parent of the run folders (default: runs).",
                                                  show_default=False)]
RResume = Annotated[Optional[Path], typer.Option("--resume", help="Continue the run in this run folder.",
                                                 show_default=False)]
RDryRun = Annotated[bool, typer.Option("--dry-run", help="Print the resolved config as JSON and exit.")]


_NOT_FLAGS = ("config", "resume", "sweep", "dry_run", "json_out", "offline")


def dispatch(command: str, params: dict) -> None:
    """The body of `vit finetune` and `vit train`, given the command's parameters (its `locals()`):
    every recipe option becomes a flag for vitcli.recipes (None: not given; device/precision "auto" too),
    and a --sweep (or --resume of a sweep folder) goes to the sweep runner instead of one run."""
    from vitcli.train import sweep_run as sweep_training

    flags = {k: v for k, v in params.items() if k not in _NOT_FLAGS}
    for key in ("device", "precision"):
        flags[key] = None if flags[key] == "auto" else flags[key]
    rest = {k: params[k] for k in ("config", "resume", "dry_run", "json_out", "offline")}
    if params["sweep"] or sweep_training.is_sweep_dir(params["resume"]):
        sweep_training.run_command(command, flags, params["sweep"], **rest)
    else:
        run(command, flags, **rest)


def run(command: str, flags: dict, *, config: Optional[Path], resume: Optional[Path], dry_run: bool,
        json_out: bool, offline: bool) -> None:
    """Resolve the config, run the core function, render its summary."""
    from vitcli import env as hub_env
    from vitcli import output
    from vitcli.errors import UsageError

    hub_env.set_offline(offline)
    if offline:
        flags["download"] = False
    if flags.get("project") is not None:
        flags["project"] = str(flags["project"])
    if flags.get("data_dir") is not None:
        flags["data_dir"] = str(flags["data_dir"])
    from vitcli.train import config as recipes
    from vitcli.train import run as training

    if resume is not None:
        if config is not None:
            raise UsageError("--resume and --config both given", "a resumed run keeps its own config")
        cfg = training.resume_config(command, resume, flags)
    else:
        cfg = recipes.resolve(command, flags, config)
    if dry_run:
        output.emit_json(cfg.to_dict()) if json_out else typer.echo(recipes.dumps(cfg))
        return
    core = training.finetune if command == "finetune" else training.train
    summary = core(cfg, resume=resume)
    import os

    if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 speaks for all
        return
    if json_out:
        output.emit_json(summary)
    else:
        render(summary)


def render(summary: dict) -> None:
    from rich.table import Table

    from vitcli import output

    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    labels = {"val_top1": f"{summary.get('selection_split') or 'val'} top-1 (best)", "test_top1": "test top-1",
              "img_s": "train img/s", "run_dir": "run folder", "best_step": "best at step"}
    for key in ("run_dir", "model", "dataset", "steps", "epochs", "best_step", "val_top1", "test_top1", "params",
                "img_s", "seconds", "skipped_images"):
        if summary.get(key) is None:
            continue
        value = summary[key]
        if key in ("val_top1", "test_top1"):
            value = f"{value:.2f} %"
        elif key == "params":
            value = f"{value / 1e6:.2f} M"
        table.add_row(labels.get(key, key.replace("_", " ")), str(value))
    output.out().print(table)
