"""What a training step adds to the forward pass: mixup / cutmix, the loss, and the EMA of the weights.

All of it is timm's: `timm.data.Mixup` (DeiT's batch mode: mixup or cutmix per batch, switching with
probability 0.5, label smoothing folded into the soft targets) with `SoftTargetCrossEntropy`, else
cross-entropy with label smoothing; `timm.utils.ModelEmaV3` with its decay warmup. The image-level
augmentation (crop, flip, RandAugment, random erasing) is the training transform
(vitcli.data.transforms.train_transform), stochastic depth is the model's (`drop_path_rate`).

Exact resume: the mixup of micro-batch m of step s on rank r draws from numpy seeded by (seed, s, m, r),
so it depends on nothing a resumed run could see differently; the EMA is in the checkpoint.
"""

from __future__ import annotations

from contextlib import contextmanager

EMA_WARMUP_POWER = 3 / 4  # timm/crowsonkb: the decay reaches 0.999 after 10k steps, for shorter runs


@contextmanager
def numpy_seeded(seed: int):
    """numpy's global generator (what timm's Mixup draws from) seeded for the block, restored after."""
    import numpy as np

    state = np.random.get_state()
    np.random.seed(seed % (2**32))
    try:
        yield
    finally:
        np.random.set_state(state)


class Regularisation:
    """The batch mixing and the loss of a run (cfg: mixup, cutmix, label_smoothing)."""

    def __init__(self, cfg, num_classes: int, seed: int = 0, rank: int = 0):
        import torch

        self.num_classes, self.seed, self.rank = num_classes, seed, rank
        self.smoothing = cfg.label_smoothing
        self.multi_label = bool(
            getattr(cfg, "multi_label", False)
        )  # multi-hot targets (vitcli.train.recipe.multilabel)
        self.mixup = None
        if cfg.mixup > 0 or cfg.cutmix > 0:
            from timm.data import Mixup
            from timm.loss import SoftTargetCrossEntropy

            self.mixup = Mixup(
                mixup_alpha=cfg.mixup,
                cutmix_alpha=cfg.cutmix,
                prob=1.0,
                switch_prob=0.5,
                mode="batch",
                label_smoothing=cfg.label_smoothing,
                num_classes=num_classes,
                **({"multi_label": True} if self.multi_label else {}),
            )
            self.criterion = SoftTargetCrossEntropy()
        else:
            self.criterion = torch.nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        if self.multi_label:
            from vitcli.train.recipe import multilabel

            self.criterion = multilabel.criterion(cfg)

    def mix(self, images, labels, step: int, micro: int = 0):
        """(images, targets) of a micro-batch: mixed with soft targets when mixup or cutmix is on, else
        as they are. timm's Mixup pairs image i with image B-1-i and needs an even batch: in a batch made
        odd by an unreadable image the last one stays unmixed (its target smoothed like the others)."""
        if self.mixup is None:
            if self.multi_label:
                from vitcli.train.recipe.multilabel import soft_targets

                return images, soft_targets(labels, self.smoothing)
            return images, labels
        import torch
        from timm.data.mixup import mixup_target

        multi = {"multi_label": True} if self.multi_label else {}
        even = len(labels) - len(labels) % 2
        with numpy_seeded(((self.seed * 1_000_003 + step) * 64 + micro) * 1024 + self.rank):
            if even == 0:
                return images, mixup_target(labels, self.num_classes, 1.0, self.smoothing, **multi)
            head, targets = self.mixup(images[:even], labels[:even])
        if even == len(labels):
            return head, targets
        rest = mixup_target(labels[even:], self.num_classes, 1.0, self.smoothing, **multi)
        return torch.cat([head, images[even:]]), torch.cat([targets, rest])


def make_ema(model, cfg):
    """timm's ModelEmaV3 of `model` when cfg.model_ema, else None. Its decay warms up (timm's
    `use_warmup`: 1 - (1 + step)^-3/4, capped at cfg.ema_decay), so the EMA of a short run is not
    mostly the initial weights."""
    if not cfg.model_ema:
        return None
    from timm.utils import ModelEmaV3

    return ModelEmaV3(model, decay=cfg.ema_decay, use_warmup=True, warmup_power=EMA_WARMUP_POWER)
