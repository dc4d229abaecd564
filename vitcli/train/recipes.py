"""The papers' recipes: the values a recipe gives a config before a config file and flags override them.

`paper` is the ViT paper's (fine-tuning: Sec. 3.1 and App. B.1.1; pre-training: App. B.1), `quick` a
recipe that finishes on a laptop CPU. Standard library only.
"""

from __future__ import annotations

from pathlib import Path

from vitcli.errors import UsageError

RECIPES = ("paper", "quick")

# The paper's fine-tuning (Sec. 3.1, App. B.1.1): SGD momentum 0.9, no weight decay, clip 1.0,
# batch 512, 384 px, cosine decay after a linear warmup; steps and lr per dataset.
_FT_PAPER = dict(model="vit_base_patch16_224.augreg_in21k", optimizer="sgd", momentum=0.9,
                 weight_decay=0.0, clip_grad=1.0, schedule="cosine", batch_size=512, img_size=384,
                 crop_scale=(0.05, 1.0))
_FT_PAPER_DATA = {
    "small": dict(steps=500, warmup=100, lr=0.003),  # Pets, Flowers, small folders
    "cifar": dict(steps=10_000, warmup=500, lr=0.01),
    "imagenet": dict(steps=20_000, warmup=500, lr=0.03),
}
# A laptop-CPU recipe: the model's own resolution (no resampling), a small batch, a few epochs.
# Measured on the 2-core dev machine: see docs/sections/30-training.md.
_FT_QUICK = dict(model="vit_tiny_patch16_224.augreg_in21k", optimizer="sgd", momentum=0.9,
                 weight_decay=0.0, clip_grad=1.0, schedule="cosine", batch_size=32, img_size=None,
                 epochs=3, warmup=3, lr=0.01, crop_scale=(0.25, 1.0), eval_every=None)
# Pre-training (Sec. 3.1, App. B.1): Adam (0.9, 0.999), decoupled weight decay 0.1, batch 4096,
# linear warmup (10k steps) then linear decay.
_TRAIN_PAPER = dict(model="B/16", optimizer="adamw", betas=(0.9, 0.999), weight_decay=0.1, lr=0.001,
                    schedule="linear", batch_size=4096, warmup=10_000, epochs=300, clip_grad=1.0,
                    crop_scale=(0.08, 1.0))
_TRAIN_QUICK = dict(model="Ti/16", optimizer="adamw", betas=(0.9, 0.999), weight_decay=0.1, lr=0.001,
                    schedule="linear", batch_size=64, warmup=10, epochs=30, clip_grad=1.0,
                    crop_scale=(0.35, 1.0), img_size=64, patch_size=8)


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
        if recipe == "paper":
            return {**_FT_PAPER, **_FT_PAPER_DATA[dataset_kind(dataset)]}
        return dict(_FT_QUICK)
    return dict(_TRAIN_PAPER if recipe == "paper" else _TRAIN_QUICK)


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
