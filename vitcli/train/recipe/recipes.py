"""The papers' recipes: the values a recipe gives a config before a config file and flags override them.

`paper` is the ViT paper's (fine-tuning: Sec. 3.1 and App. B.1.1; pre-training: App. B.1), `quick` a
recipe that finishes on a laptop CPU, `deit` DeiT's (training ViT on ImageNet-1k alone), also the way
BEiT and MAE fine-tune. The values that depend on the data (the `auto` budget, the augmentation of a
budget) are functions of it here. Standard library only.
"""

from __future__ import annotations

from pathlib import Path

from vitcli.errors import UsageError

RECIPES = ("paper", "quick", "deit")

# The paper's fine-tuning (Sec. 3.1, App. B.1.1): SGD momentum 0.9, no weight decay, clip 1.0,
# batch 512, 384 px, cosine decay after a linear warmup; steps and lr per dataset; a zero-initialised head.
_FT_PAPER = dict(
    model="vit_base_patch16_224.augreg_in21k",
    optimizer="sgd",
    momentum=0.9,
    weight_decay=0.0,
    clip_grad=1.0,
    schedule="cosine",
    batch_size=512,
    img_size=384,
    crop_scale=(0.05, 1.0),
    head_init="zero",
)
_FT_PAPER_DATA = {
    "small": dict(steps=500, warmup=100, lr=0.003),  # Pets, Flowers, small folders
    "cifar": dict(steps=10_000, warmup=500, lr=0.01),
    "imagenet": dict(steps=20_000, warmup=500, lr=0.03),
}
# A laptop-CPU recipe that beats a plain timm loop and the backbone's own linear probe (measured:
# benchmarks/recipes.py): the model's own resolution, a small batch, a budget in steps from the table of
# `auto_steps`, the head first (LP-FT: a linear probe on cached frozen features initialises it, and is
# the step-0 candidate of the model selection), layer-wise lr decay, early stopping on minival.
_FT_QUICK = dict(
    model="vit_tiny_patch16_224.augreg_in21k",
    optimizer="sgd",
    momentum=0.9,
    weight_decay=0.0,
    clip_grad=1.0,
    schedule="cosine",
    batch_size=32,
    img_size=None,
    budget="auto",
    steps=None,
    epochs=None,
    warmup=10,
    lr=0.01,
    crop_scale=(0.25, 1.0),
    eval_every=None,
    head_init="probe",
    layer_decay=0.75,
    patience=None,
)
# Pre-training (Sec. 3.1, App. B.1): Adam (0.9, 0.999), decoupled weight decay 0.1, batch 4096,
# linear warmup (10k steps) then linear decay.
_TRAIN_PAPER = dict(
    model="B/16",
    optimizer="adamw",
    betas=(0.9, 0.999),
    weight_decay=0.1,
    lr=0.001,
    schedule="linear",
    batch_size=4096,
    warmup=10_000,
    epochs=300,
    clip_grad=1.0,
    crop_scale=(0.08, 1.0),
)
# The paper's optimiser on a laptop budget; the augmentation follows the budget (`augmentation`).
_TRAIN_QUICK = dict(
    model="Ti/16",
    optimizer="adamw",
    betas=(0.9, 0.999),
    weight_decay=0.1,
    lr=0.001,
    schedule="linear",
    batch_size=64,
    warmup=10,
    epochs=30,
    clip_grad=1.0,
    crop_scale=None,
    hflip=None,
    img_size=64,
    patch_size=8,
)
# DeiT (Touvron et al. 2021, Table 9): ViT on ImageNet-1k alone. AdamW lr 5e-4 x batch/512, wd 0.05,
# cosine, 5 warmup epochs, RandAugment m9, mixup 0.8 / cutmix 1.0, random erasing 0.25, label
# smoothing 0.1, stochastic depth 0.1, EMA 0.99996, no gradient clipping, 300 epochs at batch 1024.
_DEIT = dict(
    optimizer="adamw",
    betas=(0.9, 0.999),
    lr_base=5e-4,
    weight_decay=0.05,
    schedule="cosine",
    warmup=0,
    warmup_epochs=5,
    clip_grad=None,
    crop_scale=(0.08, 1.0),
    hflip=0.5,
    aa="rand-m9-mstd0.5-inc1",
    mixup=0.8,
    cutmix=1.0,
    reprob=0.25,
    label_smoothing=0.1,
    drop_path=0.1,
    model_ema=True,
    ema_decay=0.99996,
)
_TRAIN_DEIT = dict(_DEIT, model="Ti/16", batch_size=1024, epochs=300)
# Fine-tuning with DeiT's regularisation, as BEiT and MAE fine-tune ViTs: the same augmentation,
# layer-wise lr decay 0.75, the paper's durations and model, a zero-initialised head.
_FT_DEIT = dict(
    _DEIT,
    model="vit_base_patch16_224.augreg_in21k",
    batch_size=512,
    img_size=None,
    layer_decay=0.75,
    head_init="zero",
    warmup_epochs=None,
)


def dataset_kind(dataset: str) -> str:
    name = (dataset or "").strip().lower()
    if name.startswith("cifar"):
        return "cifar"
    if "imagenet" in Path(name).name:
        return "imagenet"
    return "small"


def recipe_values(command: str, recipe: str, dataset: str) -> dict:
    if recipe not in RECIPES:
        raise UsageError(f"unknown recipe {recipe!r}", f"use one of {', '.join(RECIPES)}")
    if command == "finetune":
        if recipe == "quick":
            return dict(_FT_QUICK)
        base = _FT_PAPER if recipe == "paper" else _FT_DEIT
        return {**base, **_FT_PAPER_DATA[dataset_kind(dataset)]}
    return dict({"paper": _TRAIN_PAPER, "quick": _TRAIN_QUICK, "deit": _TRAIN_DEIT}[recipe])


# ------------------------------------------------------------------------------ budget-dependent values
# `budget = "auto"`: optimizer steps by training-set size and class count (docs/sections/30-training.md).
AUTO_EPOCHS = 3  # at least this many passes over the training split ...
AUTO_FLOOR = (100, 5)  # ... and at least 100 steps + 5 per class: a small set is not "3 epochs of 200 images"


def auto_steps(n_train: int, num_classes: int, batch_size: int) -> int:
    """max(AUTO_EPOCHS epochs, 100 + 5 x classes) optimizer steps."""
    import math

    epochs = math.ceil(AUTO_EPOCHS * n_train / max(batch_size, 1))
    return max(epochs, AUTO_FLOOR[0] + AUTO_FLOOR[1] * num_classes)


# crop_scale / hflip None: by the number of epochs the run makes (`vit train --recipe quick`).
# (fewest epochs, crop scale, flip probability); a short run learns more from the images as they are.
AUGMENTATION = ((0, (1.0, 1.0), 0.0), (10, (0.6, 1.0), 0.5), (30, (0.35, 1.0), 0.5), (100, (0.08, 1.0), 0.5))


def augmentation(epochs: float) -> tuple[tuple[float, float], float]:
    """(crop scale, flip probability) for a run of `epochs` epochs."""
    chosen = AUGMENTATION[0]
    for row in AUGMENTATION:
        if epochs >= row[0]:
            chosen = row
    return chosen[1], chosen[2]


def default_recipe() -> str:
    """VIT_RECIPE, else paper with a GPU and quick without (checked without importing torch when possible)."""
    import importlib.util

    from vitcli import env

    chosen = env.recipe(RECIPES)
    if chosen is not None:
        return chosen
    if importlib.util.find_spec("torch") is None:
        return "quick"
    import torch

    return "paper" if torch.cuda.is_available() else "quick"
