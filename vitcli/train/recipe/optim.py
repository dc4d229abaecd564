"""The optimizer and the learning-rate schedule of a run, made by timm's factories.

The optimizer names are timm's (`create_optimizer_v2`; `sgd` means SGD with momentum, as the paper's
fine-tuning uses); torch's fused one-kernel step is asked for where torch has it for this device.
The schedule is a linear warmup, then cosine, linear or no decay to 0, stepped once per update.
Layer-wise lr decay (`layer_decay`, BEiT/MAE) is timm's `param_groups_layer_decay`.
"""

from __future__ import annotations

from contextlib import contextmanager

FUSED = {"momentum", "nesterov", "adam", "adamw"}  # timm names that map to torch's SGD / Adam / AdamW


def create_optimizer(model, cfg):
    from timm.optim import create_optimizer_v2

    from vitcli.accel.runtime import fused_optimizer_ok

    name = {"sgd": "momentum", "momentum": "momentum"}.get(cfg.optimizer, cfg.optimizer)
    kwargs: dict = {}
    if name in ("momentum", "nesterov", "sgdp", "lars", "lamb"):
        kwargs["momentum"] = cfg.momentum
    if name.startswith(("adam", "nadam", "radam", "lamb")):
        kwargs["betas"] = tuple(cfg.betas)
    sharded = getattr(cfg, "fsdp", False)  # FSDP2's DTensor parameters have no fused step on every device
    if name in FUSED and fused_optimizer_ok(next(model.parameters()).device) and not sharded:
        kwargs["fused"] = True  # torch's one-kernel SGD / Adam(W) step (timm passes it through)
    if cfg.layer_decay is not None and cfg.layer_decay < 1:
        kwargs["layer_decay"] = cfg.layer_decay  # timm's param_groups_layer_decay: an lr_scale per group
    return create_optimizer_v2(model, opt=name, lr=cfg.lr, weight_decay=cfg.weight_decay, **kwargs)


def create_scheduler(optimizer, cfg, total: int, warmup: int | None = None):
    """Linear warmup over `warmup` steps (default cfg.warmup), then cosine / linear decay to 0 (or
    constant); timm's schedulers apply each group's `lr_scale` (layer-wise decay)."""
    from timm.scheduler import CosineLRScheduler, PolyLRScheduler

    warmup = cfg.warmup if warmup is None else warmup
    warmup = min(warmup, total - 1) if total > 1 else 0
    common = dict(
        t_initial=max(total - warmup, 1),
        warmup_t=warmup,
        warmup_lr_init=0.0,
        warmup_prefix=True,
        t_in_epochs=False,
        lr_min=0.0,
    )
    with _quiet("timm.scheduler.cosine_lr", "timm.scheduler.poly_lr"):
        if cfg.schedule == "cosine":
            return CosineLRScheduler(optimizer, **common)
        return PolyLRScheduler(optimizer, power=1.0 if cfg.schedule == "linear" else 0.0, **common)


@contextmanager
def _quiet(*loggers: str):
    """timm warns that "cosine annealing will have no effect" whenever one step follows the warmup (a short
    run): true of its epoch schedules, not of ours, which reach 0 at the last step; the warning is dropped."""
    import logging

    saved = [(logging.getLogger(name), logging.getLogger(name).level) for name in loggers]
    for logger, _ in saved:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in saved:
            logger.setLevel(level)
