"""Training configs as frozen dataclasses, resolved in layers.

A config is resolved in layers: dataclass defaults <- the recipe (vitcli.train.recipe.recipes, per dataset)
<- a config file (JSON, TOML or YAML, or a run folder, so any run can be rerun: vitcli.train.run.config_file)
<- command-line flags. Durations are in steps (the paper's unit) or epochs, never both.
Imports nothing heavy: `--dry-run` prints the resolved config without loading torch.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from vitcli.errors import UsageError
from vitcli.train.recipe.recipes import default_recipe, recipe_values
from vitcli.train.run.config_file import read_config_file


@dataclass(frozen=True)
class RunConfig:
    """What every training run needs. `batch_size` is the global batch (all devices, all micro-steps)."""

    model: str = ""
    dataset: str = ""
    data_dir: str | None = None
    val_split: float | None = None
    image_column: str | None = None  # Hugging Face datasets: None finds it from the features
    label_column: str | None = None
    multi_label: bool | None = (
        None  # sets of labels: sigmoid head and BCE (vitcli.train.recipe.multilabel); None: from the data
    )
    loss: str | None = None  # multi-label: bce (None) | asl (timm's asymmetric loss)
    recipe: str = "quick"
    # duration: steps, or epochs (converted to steps once the dataset size is known), or "auto": the
    # recipe's table of steps by training-set size and class count (vitcli.train.recipe.recipes.auto_steps)
    steps: int | None = None
    epochs: float | None = None
    budget: str = "fixed"  # fixed (steps or epochs as given) | auto
    warmup: int = 0
    warmup_epochs: float | None = None  # instead of warmup (DeiT: 5 epochs)
    patience: int | None = None  # evaluations without a better selection-split top-1 that stop the run
    # optimisation
    optimizer: str = "sgd"
    lr: float = 0.003
    lr_base: float | None = None  # lr per 512 images: lr = lr_base x batch_size / 512 when --lr is not given
    layer_decay: float | None = None  # layer-wise lr decay (BEiT, MAE): layer i of L trains at lr x decay^(L-i)
    momentum: float = 0.9
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    clip_grad: float | None = 1.0
    schedule: str = "cosine"  # cosine | linear | constant, after a linear warmup
    batch_size: int = 512
    accum: int | None = None  # micro-steps per optimizer step; None: 1 (or as memory requires)
    # input and regularisation (timm's; vitcli.train.recipe.regularise). crop_scale / hflip None: by the budget
    # (vitcli.train.recipe.recipes.augmentation)
    img_size: int | None = None  # None: the model's own
    crop_scale: tuple[float, float] | None = (0.05, 1.0)
    hflip: float | None = 0.5
    aa: str | None = None  # RandAugment / AutoAugment policy, e.g. rand-m9-mstd0.5-inc1
    reprob: float = 0.0  # random erasing probability
    mixup: float = 0.0  # mixup alpha (0: off)
    cutmix: float = 0.0  # cutmix alpha (0: off)
    label_smoothing: float = 0.0  # --smoothing (alias --label-smoothing)
    drop_path: float = 0.0  # stochastic depth rate
    model_ema: bool = False  # keep an EMA of the weights; evaluated beside them, the better one kept
    ema_decay: float = 0.9998  # the EMA's decay (reached after timm's warmup of the decay)
    # token mixers (vitcli/architectures.py); passed to the model only when set
    token_mixer: str | None = None
    token_mixers: str | None = None
    # bookkeeping
    seed: int = 0
    workers: int | None = None
    eval_every: int | None = None  # steps; None: about 5 evaluations per run
    save_every: int | None = None  # steps; None: at every evaluation
    log_every: int = 10
    max_bad_steps: int = 5  # non-finite loss/gradient steps in a row that stop the run
    device: str = "auto"
    precision: str = "auto"
    download: bool = True
    project: str = "runs"
    name: str | None = None
    report_to: str = "none"  # none | tensorboard | wandb | tensorboard,wandb (vitcli.train.report.reporting)
    # past one device (vitcli.train.scale.fsdp) and distillation (vitcli.train.recipe.distill)
    grad_checkpointing: bool = False  # timm's set_grad_checkpointing: recompute activations in backward
    fsdp: bool = False  # FSDP2 fully_shard per block + root; full state gathered to rank 0 on save
    teacher: str | None = None  # any model spec the resolver accepts
    distill: str | None = None  # logit (soft KL, temperature) | token (DeiT's hard distillation token)
    distill_temp: float = 1.0  # the soft KL's temperature (DeiT's default tau)
    distill_alpha: float = 0.5  # weight of the distillation loss; 1 - alpha on the label loss (DeiT's)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def replace(self, **changes) -> RunConfig:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class FinetuneConfig(RunConfig):
    """`vit finetune`: a pre-trained model, a zero-initialised head, the paper's SGD recipe."""

    freeze: bool = False  # train the head only
    head_init: str = "zero"  # zero (the paper) | probe (LP-FT: a linear probe on frozen features)
    command: str = field(default="finetune", init=False)


@dataclass(frozen=True)
class TrainConfig(RunConfig):
    """`vit train`: from scratch, Adam with decoupled weight decay, the paper's ablation switches."""

    optimizer: str = "adamw"
    lr: float = 0.001
    weight_decay: float = 0.1
    schedule: str = "linear"
    patch_size: int | None = None
    pos_embed: str = "learn"  # learn | sincos | none
    pool: str = "token"  # token | avg
    command: str = field(default="train", init=False)


CONFIGS = {"finetune": FinetuneConfig, "train": TrainConfig}


# ------------------------------------------------------------------------------------------ layers
def _check_keys(cls, values: dict, origin: str) -> dict:
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(values) - names - {"command", "plan"})  # plan: what `--dry-run --json` adds
    if unknown:
        import difflib

        close = difflib.get_close_matches(unknown[0], names, n=1)
        raise UsageError(
            f"{origin}: unknown setting {unknown[0]!r}",
            f"did you mean {close[0]!r}?" if close else f"settings: {', '.join(sorted(names))}",
        )
    return {k: v for k, v in values.items() if k in names}


def _coerce(cls, values: dict) -> dict:
    types = {f.name: f.type for f in dataclasses.fields(cls)}
    out = {}
    for k, v in values.items():
        if isinstance(v, list) and "tuple" in str(types.get(k, "")):
            v = tuple(v)
        out[k] = v
    return out


def _layer(base: dict, top: dict) -> dict:
    merged = {**base, **top}
    # steps and epochs are one choice: the upper layer's wins
    if top.get("steps") is not None and "epochs" not in top:
        merged["epochs"] = None
    if top.get("epochs") is not None and "steps" not in top:
        merged["steps"] = None
    if (top.get("steps") is not None or top.get("epochs") is not None) and "budget" not in top:
        merged["budget"] = "fixed"  # a duration given is the duration
    if top.get("budget") == "auto" and "steps" not in top and "epochs" not in top:
        merged["steps"] = merged["epochs"] = None
    if top.get("warmup") is not None and "warmup_epochs" not in top:
        merged["warmup_epochs"] = None
    if top.get("lr") is not None and "lr_base" not in top:
        merged["lr_base"] = None  # an lr given is the lr
    return merged


def resolve(command: str, flags: dict, config_file: Path | None = None):
    """defaults <- recipe <- config file <- flags (flags whose value is None were not given)."""
    cls = CONFIGS[command]
    flags = {k: v for k, v in flags.items() if v is not None}
    file_values = _check_keys(cls, read_config_file(config_file), str(config_file)) if config_file else {}
    flags = _check_keys(cls, flags, "flags")
    if flags.get("steps") is not None and flags.get("epochs") is not None:
        raise UsageError("--steps and --epochs both given", "give one duration")
    recipe = flags.get("recipe") or file_values.get("recipe") or default_recipe()
    dataset = flags.get("dataset") or file_values.get("dataset") or ""
    values = recipe_values(command, recipe, dataset)
    values = _layer(values, file_values)
    values = _layer(values, flags)
    values["recipe"] = recipe
    if values.get("lr_base") is not None and isinstance(values.get("batch_size"), int):
        values["lr"] = values["lr_base"] * values["batch_size"] / 512  # DeiT's linear scaling rule
    cfg = cls(**_coerce(cls, _check_keys(cls, values, "recipe")))
    return validate(with_minival(cfg) if cfg.patience is not None else cfg)


def with_minival(cfg):
    """`cfg` with its minival fraction spelled out, so the run carves one whatever the training set's size
    (by default a minival under 100 images is not carved: vitcli.data.source.MIN_MINIVAL): for the
    runs that must select on it, `--patience` and a sweep's settings. WebDataset shards carve nothing: they
    select on the held-out split sharded with them."""
    from vitcli.data.datasets import default_val_split
    from vitcli.data.wds import is_wds

    if cfg.val_split is not None or is_wds(cfg.dataset):
        return cfg

    return dataclasses.replace(cfg, val_split=default_val_split(cfg.dataset))


# setting: (whole number?, lowest, highest, highest excluded?); None: no bound
_NUMBERS = {
    "steps": (True, 1, None, False),
    "epochs": (False, 0, None, False),
    "warmup": (True, 0, None, False),
    "lr": (False, 0, None, False),
    "momentum": (False, 0, 1, False),
    "weight_decay": (False, 0, None, False),
    "clip_grad": (False, 0, None, False),
    "label_smoothing": (False, 0, 1, True),
    "batch_size": (True, 1, None, False),
    "accum": (True, 1, None, False),
    "img_size": (True, 8, None, False),
    "seed": (True, 0, 2**32 - 1, False),
    "workers": (True, 0, None, False),
    "eval_every": (True, 1, None, False),
    "save_every": (True, 1, None, False),
    "log_every": (True, 1, None, False),
    "max_bad_steps": (True, 1, None, False),
    "val_split": (False, 0, 1, True),
    "patch_size": (True, 1, None, False),
    "drop_path": (False, 0, 1, True),
    "patience": (True, 1, None, False),
    "warmup_epochs": (False, 0, None, False),
    "lr_base": (False, 0, None, False),
    "hflip": (False, 0, 1, False),
    "layer_decay": (False, 0, 1, False),
    "reprob": (False, 0, 1, False),
    "mixup": (False, 0, None, False),
    "cutmix": (False, 0, None, False),
    "ema_decay": (False, 0, 1, True),
}
CHOICES = {
    "budget": ("fixed", "auto"),
    "schedule": ("cosine", "linear", "constant"),
    "head_init": ("zero", "probe"),
    "pos_embed": ("learn", "sincos", "none"),
    "pool": ("token", "avg"),
    "loss": ("bce", "asl"),
    "precision": ("auto", "fp32", "bf16", "fp16"),
}
AA_POLICIES = ("rand", "augmix", "original", "originalr", "v0", "v0r", "3a")  # timm's auto_augment names


def _check_types(cfg: RunConfig) -> None:
    """Text settings hold text, switches hold true/false (a config file can hold anything)."""
    import typing

    for name, hint in typing.get_type_hints(type(cfg)).items():
        value = getattr(cfg, name)
        kinds = typing.get_args(hint) or (hint,)
        if value is None and type(None) in kinds:
            continue
        if str in kinds and not isinstance(value, str):
            raise UsageError(f"--{name.replace('_', '-')} {value!r}: expected text")
        if kinds == (bool,) or set(kinds) == {bool, type(None)}:
            if not isinstance(value, bool):
                raise UsageError(f"--{name.replace('_', '-')} {value!r}: expected true or false")


def _check_numbers(cfg: RunConfig) -> None:
    """Every numeric setting a finite number in its range (a config file can hold anything)."""
    import math

    for name, (whole, low, high, open_high) in _NUMBERS.items():
        value = getattr(cfg, name, None)
        if value is None:
            continue
        flag = f"--{name.replace('_', '-')}"
        kind = "a whole number" if whole else "a number"
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (whole and not float(value).is_integer()):
            raise UsageError(f"{flag} {value!r}: expected {kind}")
        if (
            not math.isfinite(value)
            or value < low
            or (high is not None and (value >= high if open_high else value > high))
        ):
            bounds = f"at least {low}" if high is None else f"in [{low}, {high}{')' if open_high else ']'}"
            raise UsageError(f"{flag} {value!r}: expected a finite {kind[2:] if whole else 'number'} {bounds}")
    for name, (low, high) in (("crop_scale", (0, 1)), ("betas", (0, 1))):
        pair = getattr(cfg, name)
        if pair is None and name == "crop_scale":
            continue
        if len(pair) != 2 or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and low <= v <= high
            for v in pair
        ):
            raise UsageError(f"{name} {list(pair)!r}: expected two numbers in [{low}, {high}]")


def validate(cfg: RunConfig) -> RunConfig:
    _check_types(cfg)
    _check_numbers(cfg)
    if not cfg.dataset:
        raise UsageError("no dataset given", "pass --dataset pets|flowers102|cifar10|cifar100|FOLDER")
    if cfg.name is not None:
        from vitcli.train.run.runs import check_name

        check_name(cfg.name)  # from a flag or a config file alike: one folder under <project>/<command>/
    for name, allowed in CHOICES.items():
        value = getattr(cfg, name, None)
        if value is not None and value not in allowed:
            raise UsageError(f"unknown --{name.replace('_', '-')} {value!r}", f"use {', '.join(allowed)}")
    if cfg.steps is None and cfg.epochs is None and cfg.budget != "auto":
        raise UsageError("no duration given", "pass --steps N or --epochs N")
    if cfg.steps is not None and cfg.steps < 1 or cfg.epochs is not None and cfg.epochs <= 0:
        raise UsageError("the duration must be positive")
    if cfg.aa and cfg.aa != "none" and cfg.aa.split("-")[0] not in AA_POLICIES:
        raise UsageError(
            f"unknown --aa {cfg.aa!r}",
            "e.g. rand-m9-mstd0.5-inc1 (RandAugment), augmix-m5-w4-d2, original, v0 (AutoAugment), 3a, or none",
        )
    if cfg.accum is not None and (cfg.accum < 1 or cfg.batch_size % cfg.accum):
        raise UsageError(
            f"--batch-size {cfg.batch_size} is not divisible by --accum {cfg.accum}",
            "the global batch is split into --accum equal micro-batches",
        )
    if isinstance(cfg, TrainConfig):
        if cfg.img_size and cfg.patch_size and cfg.img_size % cfg.patch_size:
            raise UsageError(
                f"--img-size {cfg.img_size} is not a multiple of --patch-size {cfg.patch_size}",
                "a ViT cuts the image into whole patches: e.g. --img-size 32 --patch-size 4",
            )
    _check_model_choices(cfg)
    if cfg.dataset:
        from vitcli.data.wds import check_val_split, is_wds

        if is_wds(cfg.dataset):
            check_val_split(cfg.val_split)
    from vitcli.train.recipe import distill
    from vitcli.train.report.reporting import backends
    from vitcli.train.scale import fsdp

    fsdp.check(cfg)
    distill.check(cfg)
    backends(cfg.report_to)  # a known --report-to (its package is checked when the run starts)
    return cfg


def _check_model_choices(cfg: RunConfig) -> None:
    """--device and --token-mixer(s) refused here, as a real run would refuse them, so that a --dry-run (or
    a sweep's plan) does not accept what the run then rejects."""
    from vitcli.accel.runtime import check_device

    check_device(cfg.device)
    mixers = [getattr(cfg, "token_mixer", None), getattr(cfg, "token_mixers", None)]
    if any(m is not None for m in mixers):
        from vitcli.models.metaformer import MIXERS, split_mixers

        for flag, value in zip(("--token-mixer", "--token-mixers"), mixers):
            unknown = [m for m in split_mixers(value) if m not in MIXERS]
            if unknown:
                raise UsageError(f"unknown {flag} {unknown[0]!r}", f"use {', '.join(MIXERS)}")


def from_dict(command: str, values: dict) -> RunConfig:
    """A config saved in a run folder, back as its dataclass."""
    cls = CONFIGS[command]
    return cls(**_coerce(cls, _check_keys(cls, dict(values), "saved config")))


def dumps(cfg: RunConfig) -> str:
    """Indented JSON, with short lists (betas, crop_scale) kept on one line."""
    import re

    text = json.dumps({"command": cfg.command, **cfg.to_dict()}, indent=2)
    return re.sub(r"\[\s+([^\[\]{}]*?)\s+\]", lambda m: "[" + re.sub(r",\s+", ", ", m.group(1)) + "]", text)
