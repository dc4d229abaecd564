"""Options shared by several commands, defined once so each flag means the same everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer

DEFAULT_MODEL = "vit_base_patch16_224.augreg2_in21k_ft_in1k"

ModelOpt = Annotated[str, typer.Option(
    "--model", "-m",
    help="timm name (with or without a pretrained tag), hf-hub:org/name[@rev], a local folder in Hub "
         "layout (config.json + model.safetensors) or a vit run folder.")]
DeviceOpt = Annotated[str, typer.Option(
    "--device", help="auto | cpu | cuda | cuda:N | mps. auto picks cuda, then mps, then cpu.")]
PrecisionOpt = Annotated[str, typer.Option(
    "--precision", help="auto | fp32 | bf16 | fp16. auto: bf16 autocast on CUDA, fp32 on CPU and MPS.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
OfflineOpt = Annotated[bool, typer.Option(
    "--offline", help="Never touch the network: use the Hugging Face cache only (same as HF_HUB_OFFLINE=1).")]
BatchSizeOpt = Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Images per batch.")]
WorkersOpt = Annotated[Optional[int], typer.Option(
    "--workers", min=0, help="DataLoader worker processes (default: min(4, CPU cores), 0 for small inputs).")]
OutDirOpt = Annotated[Optional[Path], typer.Option("--out", help="Folder for the artefacts.")]
SweepOpt = Annotated[Optional[List[str]], typer.Option(
    "--sweep", help="KEY=v1,v2,...: one run per value (repeat for a grid) in a sweep folder; the best on minival "
                    "wins and is tested. KEY is an option of the command, e.g. lr, steps, token-mixer.",
    show_default=False)]
