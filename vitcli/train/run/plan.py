"""How long a run is and when it evaluates and saves: its steps, micro-batch, warmup and schedule.

    plan(cfg, n_train=245, num_classes=2, world=1, accum=1)
    -> Plan(micro=32, per_epoch=7, total=110, warmup=10, eval_at={22, 44, 66, 88, 110}, save_at=...)

The duration is `--steps`, or `--epochs` of the training split, or the recipe's `auto` budget (steps
by training-set size and class count, vitcli.train.recipe.recipes.auto_steps); a warmup in epochs
(`warmup_epochs`, DeiT's 5) becomes steps here too. An epoch counts the training split as the user
gave it: when vitcli carves its minival out of it (10 %), `--epochs 2` still makes the steps of two
passes over all of it (`epoch_images`), so holding out a minival never shortens the run the user
asked for (a plain loop on the same folder makes as many steps).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from vitcli.errors import VitError
from vitcli.train.recipe.recipes import auto_steps

EVALUATIONS = 5  # per run, the last at the end, unless --eval-every


@dataclass(frozen=True)
class Plan:
    micro: int  # images per micro-batch on each process
    per_epoch: int  # optimizer steps per epoch
    total: int  # optimizer steps of the run
    warmup: int  # linear-warmup steps
    eval_at: frozenset  # steps that evaluate the selection split
    save_at: frozenset  # steps that save the training state
    epoch_images: int = 0  # the images an epoch counts (the training split as given, minival included)

    @property
    def points(self) -> tuple[frozenset, frozenset]:
        return self.eval_at, self.save_at


def micro_batch(batch_size: int, world: int, accum: int) -> int:
    per = batch_size // world
    if batch_size % world or per % accum:
        raise VitError(
            f"the global batch {batch_size} does not split into {world} process(es) x {accum} accumulation step(s)",
            "choose --batch-size divisible by world size x --accum",
        )
    return per // accum


def total_steps(cfg, n_train: int, num_classes: int, per_epoch: int) -> int:
    if cfg.steps:
        return cfg.steps
    if cfg.epochs is None and cfg.budget == "auto":
        return auto_steps(n_train, num_classes, cfg.batch_size)
    return max(1, math.ceil(cfg.epochs * per_epoch))


def epoch_images(source) -> int:
    """The images an epoch counts: the training split, plus the minival vitcli carved out of it."""
    return source.size("train") + (source.size("minival") if "minival" in source.splits else 0)


def plan(cfg, *, n_train: int, num_classes: int, world: int, accum: int, n_epoch: int | None = None) -> Plan:
    micro = micro_batch(cfg.batch_size, world, accum)
    n_epoch = max(n_epoch or n_train, n_train)
    per_epoch = max(((n_epoch // world) // micro) // accum, 1)
    total = total_steps(cfg, n_train, num_classes, per_epoch)
    warmup = cfg.warmup if cfg.warmup_epochs is None else int(round(cfg.warmup_epochs * per_epoch))
    if cfg.eval_every:
        eval_at = set(range(cfg.eval_every, total + 1, cfg.eval_every)) | {total}
    else:
        eval_at = {math.ceil(total * k / EVALUATIONS) for k in range(1, EVALUATIONS + 1)}
    save_at = set(range(cfg.save_every, total + 1, cfg.save_every)) | {total} if cfg.save_every else eval_at
    return Plan(micro, per_epoch, total, warmup, frozenset(eval_at), frozenset(save_at), n_epoch)


def augmentation(cfg, n_train: int, num_classes: int) -> tuple[tuple[float, float], float]:
    """(crop scale, flip probability): the config's, or where it leaves them to the budget (None), the
    recipe's for the number of epochs the run makes (vitcli.train.recipe.recipes.augmentation)."""
    from vitcli.train.recipe.recipes import augmentation as by_budget

    if cfg.crop_scale is not None and cfg.hflip is not None:
        return tuple(cfg.crop_scale), cfg.hflip
    total = total_steps(cfg, n_train, num_classes, max(n_train // cfg.batch_size, 1))
    crop, flip = by_budget(total * cfg.batch_size / max(n_train, 1))
    return tuple(cfg.crop_scale) if cfg.crop_scale is not None else crop, flip if cfg.hflip is None else cfg.hflip
