"""Options shared by several commands, each defined once here so a flag means the same everywhere.

    --model        a model spec (every command that loads a model)
    --batch-size   images per batch; in training, the images of one optimizer step (the global batch,
                   split over processes and --accum micro-batches): the batch is always the number of
                   images that go through the model between two results (or two updates)
    --output/-o    a FILE to write (vit predict's results)
    --out-dir      a FOLDER of artefacts (vit eval, vit visualize)
    --workers/-j   DataLoader worker processes
    --img-size     the input resolution the model is built for
    --random-init  the model without its weights (vit benchmark, vit visualize)
Training's recipe options (defaults from the recipe) are in vitcli.cli.recipe_options.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

DEFAULT_MODEL = "vit_base_patch16_224.augreg2_in21k_ft_in1k"
P = "Recipe"  # help panel of the training settings a recipe fills

_MODEL = (
    "timm name (with or without a pretrained tag), paper code (S/16), hf-hub:org/name\\[@rev], a local folder "
    "in Hub layout (config.json + model.safetensors) or a vit run folder."
)
_BATCH = "Images per batch. Training: the images of one optimizer step, over all processes and --accum micro-batches."
_IMG = "Input resolution (ViTs resample their position embeddings in 2-D; CNNs and PoolFormer take any size)."
_WORKERS = (
    "DataLoader worker processes (default: none for fewer than 64 images; on a GPU min(8, CPU cores); on a "
    "CPU none up to 4 cores, else cores / 4 up to 4)."
)

ModelOpt = Annotated[str, typer.Option("--model", "-m", help=_MODEL)]
RecipeModelOpt = Annotated[
    str | None, typer.Option("--model", "-m", help=_MODEL + " Default: the recipe's.", show_default=False)
]
DatasetOpt = Annotated[
    str | None,
    typer.Option(
        "--dataset",
        "-d",
        help="pets | flowers102 | cifar10 | cifar100 | a folder (train/ + val/ or test/ class "
        "folders, or one folder of class folders) | hf:NAME[:CONFIG] (Hugging Face datasets) | "
        "a save_to_disk folder.",
        show_default=False,
    ),
]
ImageColumnOpt = Annotated[
    str | None,
    typer.Option(
        "--image-column",
        help="Hugging Face datasets: the column of images (default: the first Image feature).",
        show_default=False,
    ),
]
LabelColumnOpt = Annotated[
    str | None,
    typer.Option(
        "--label-column",
        help="Hugging Face datasets: the column of labels (default: the first ClassLabel, else "
        "label/labels/class/target).",
        show_default=False,
    ),
]
DataDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Where named datasets live, in torchvision's layout (default: VIT_CACHE/datasets).",
        show_default=False,
    ),
]
DeviceOpt = Annotated[
    str,
    typer.Option(
        "--device", help="auto | cpu | cuda | cuda:N | N (= cuda:N) | mps. auto picks cuda, then mps, then cpu."
    ),
]
PrecisionOpt = Annotated[
    str,
    typer.Option(
        "--precision",
        help="auto | fp32 | bf16 | fp16. auto: bf16 autocast on CUDA, and on a CPU with native bf16 "
        "(AMX, avx512_bf16) where measured faster (once, recorded: vit info); else fp32. fp32: exact "
        "fp32 numbers.",
    ),
]
BackendOpt = Annotated[
    str,
    typer.Option(
        "--backend",
        envvar="VIT_BACKEND",
        help="torch | onnx. onnx: the model's fast-start ONNX copy (made by vit download "
        "or vit export) in onnxruntime, CPU fp32, no torch import: the fastest start "
        "for a few images. An .onnx --model always runs in onnxruntime.",
    ),
]
CompileOpt = Annotated[
    bool,
    typer.Option(
        "--compile",
        help="torch.compile the model first (10-60 s, cached by inductor): pays for long jobs. Off by "
        "default, as compiled numbers round differently (VIT_COMPILE=1 sets it).",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
OfflineOpt = Annotated[
    bool,
    typer.Option(
        "--offline", help="Never touch the network: use the Hugging Face cache only (same as HF_HUB_OFFLINE=1)."
    ),
]
BatchSizeOpt = Annotated[int, typer.Option("--batch-size", "-b", min=1, help=_BATCH)]
RecipeBatchSizeOpt = Annotated[
    int | None, typer.Option("--batch-size", "-b", min=1, help=_BATCH, rich_help_panel=P, show_default=False)
]
ImgSizeOpt = Annotated[int | None, typer.Option("--img-size", min=8, help=_IMG, show_default=False)]
RecipeImgSizeOpt = Annotated[
    int | None, typer.Option("--img-size", min=8, help=_IMG, rich_help_panel=P, show_default=False)
]
WorkersOpt = Annotated[int | None, typer.Option("--workers", "-j", min=0, help=_WORKERS, show_default=False)]
OutDirOpt = Annotated[
    Path | None, typer.Option("--out-dir", help="Folder for the artefacts (created if missing).", show_default=False)
]
OutputFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--output", "-o", help="Also write the results to FILE (.jsonl or .csv), as they come.", show_default=False
    ),
]
RandomInitOpt = Annotated[
    bool,
    typer.Option(
        "--random-init",
        help="Random weights instead of the pre-trained ones (no download): speed does not depend on "
        "the values; maps show what the architecture alone does.",
    ),
]
SweepOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--sweep",
        help="KEY=v1,v2,...: one run per value (repeat for a grid) in a sweep folder; the best on minival "
        "wins and is tested. KEY is an option of the command, e.g. lr, steps, token-mixer.",
        show_default=False,
    ),
]
ThresholdOpt = Annotated[
    float | None,
    typer.Option(
        "--threshold",
        min=0.0,
        max=1.0,
        show_default=False,
        help="Multi-label models: a label is given at or above this probability (default: the per-class thresholds "
        "the run chose on its held-out split, else 0.5).",
    ),
]
