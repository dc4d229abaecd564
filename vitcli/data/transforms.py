"""The transforms: the one eval transform every command uses, and the training transform.

`EvalTransform` is timm's eval preprocessing (resize, center crop, to-tensor, normalise) written with PIL
and torch only, so `vit predict`'s fast start needs neither timm nor torchvision. It gives tensors equal
to `timm.data.create_transform(..., is_training=False)` (tests/test_benchmark.py checks this), and its
`draft_size` tells the image loader how far a JPEG may be DCT-decoded before resizing: down to twice
the resize target's short side, which left top-1 unchanged on the real val images
(benchmarks/draft_accuracy.py). predict, eval, few-shot, visualize and the training loop's evaluation
all use `eval_transform`, so they see the same pixels.
"""

from __future__ import annotations

import math

_PIL_INTERP = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3, "box": 4, "hamming": 5}
_CHANNELS = [[[0]], [[1]], [[2]]]  # (3, 1, 1): picks each channel's row of the table


class EvalTransform:
    """timm's eval transform (crop_mode center or squash) with PIL + torch: PIL image -> (3, H, W)."""

    def __init__(self, data_config: dict):
        if not supports(data_config):
            raise ValueError(f"unsupported preprocessing {data_config}")
        _, h, w = data_config["input_size"]
        self.crop = (int(h), int(w))
        crop_pct = data_config.get("crop_pct") or 0.875  # timm's DEFAULT_CROP_PCT
        self.scale = (math.floor(h / crop_pct), math.floor(w / crop_pct))
        self.mode = data_config.get("crop_mode") or "center"
        self.resample = _PIL_INTERP[data_config.get("interpolation") or "bilinear"]
        self.mean = tuple(float(m) for m in data_config["mean"])
        self.std = tuple(float(s) for s in data_config["std"])

    @property
    def draft_size(self) -> int:
        """A JPEG may be DCT-decoded down to twice the resize target's short side and no further.
        (On the val images upscaled 2-4x, top-1 accuracy was the same with and without it; down to 1x
        changed up to 2 of 100 labels, 2x at most 1: benchmarks/draft_accuracy.py, its output in the
        README's performance section.)"""
        return 2 * (min(self.scale) if self.mode == "center" else max(self.scale))

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """(w, h) after the resize step, computed exactly as torchvision / timm do."""
        sh, sw = self.scale
        if self.mode == "squash":
            return sw, sh
        if sh == sw:  # torchvision Resize(int): the short side to `sh`, the long side truncated
            short, long = (width, height) if width <= height else (height, width)
            new_short, new_long = sh, int(sh * long / short)
            return (new_short, new_long) if width <= height else (new_long, new_short)
        ratio = min(height / sh, width / sw)  # timm ResizeKeepRatio(longest=0)
        return round(width / ratio), round(height / ratio)

    def __call__(self, image):
        """PIL image -> (3, H, W) float32 tensor."""
        import torch

        return torch.from_numpy(self.array(image))

    def array(self, image):
        """PIL image -> (3, H, W) float32 numpy array, the same numbers without torch (onnxruntime)."""
        import numpy as np
        from PIL import Image

        w, h = self.resized_size(*image.size)
        if (w, h) != image.size:
            image = image.resize((w, h), self.resample)
        ch, cw = self.crop
        if cw > w or ch > h:  # torchvision pads with black before cropping
            padded = Image.new(image.mode, (max(w, cw), max(h, ch)))
            padded.paste(image, ((cw - w) // 2 if cw > w else 0, (ch - h) // 2 if ch > h else 0))
            image, (w, h) = padded, padded.size
        top, left = int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0))
        if (left, top, cw, ch) != (0, 0, w, h):
            image = image.crop((left, top, left + cw, top + ch))
        array = np.asarray(image, dtype=np.uint8)  # (H, W, 3)
        # to-tensor and normalise as one table lookup: the table holds, for each channel and byte, the
        # float32 that timm's ToTensor (x / 255) and Normalize ((x - mean) / std) compute, so the result
        # is the same bit for bit, in one single-threaded pass instead of four ops per image
        return self.table()[_CHANNELS, array.transpose(2, 0, 1)]  # (3, H, W)

    def table(self):
        """(3, 256) float32: ((byte / 255) - mean[c]) / std[c], each step rounded to float32 as timm's is."""
        if getattr(self, "_table", None) is None:
            import numpy as np

            x = np.arange(256, dtype=np.float32).reshape(1, 256) / np.float32(255)
            mean = np.asarray(self.mean, dtype=np.float32).reshape(-1, 1)
            std = np.asarray(self.std, dtype=np.float32).reshape(-1, 1)
            self._table = np.ascontiguousarray((x - mean) / std, dtype=np.float32)
        return self._table


def supports(data_config: dict) -> bool:
    try:
        return (
            len(data_config["input_size"]) == 3
            and data_config["input_size"][0] == 3
            and (data_config.get("crop_mode") or "center") in {"center", "squash"}
            and (data_config.get("interpolation") or "bilinear") in _PIL_INTERP
            and len(data_config["mean"]) == 3
            and len(data_config["std"]) == 3
        )
    except (KeyError, TypeError):
        return False


def eval_transform(data_config: dict):
    """The one eval transform: `EvalTransform` when it covers this preprocessing, else timm's own
    (`create_transform(is_training=False)`, which has no draft size: JPEGs are then decoded whole)."""
    if supports(data_config):
        return EvalTransform(data_config)
    from timm.data import create_transform

    return create_transform(**data_config, is_training=False)


def train_transform(data_config: dict, *, crop_scale, hflip: float, aa: str | None = None, reprob: float = 0.0):
    """timm's training transform: random-resized crop (scale `crop_scale`), horizontal flip, the
    RandAugment / AutoAugment policy `aa` (e.g. rand-m9-mstd0.5-inc1) and random erasing with
    probability `reprob` (per-pixel noise, as DeiT), with the model's interpolation and normalisation.
    No augmentation at all (crops of 100 %, no flip, policy or erasing) is the eval transform itself: a
    100 % random-resized crop would resize the whole image while evaluation resizes and centre-crops
    (crop_pct), so training and test would see the images at different scales."""
    if tuple(crop_scale) == (1.0, 1.0) and not hflip and aa in (None, "none") and not reprob:
        return eval_transform(data_config)
    from timm.data import create_transform

    from vitcli.errors import UsageError

    try:
        return create_transform(
            input_size=data_config["input_size"],
            is_training=True,
            scale=tuple(crop_scale),
            hflip=hflip,
            color_jitter=None,
            auto_augment=None if aa in (None, "none") else aa,
            re_prob=reprob,
            re_mode="pixel",
            re_count=1,
            interpolation=data_config.get("interpolation", "bicubic"),
            mean=data_config["mean"],
            std=data_config["std"],
        )
    except (AssertionError, ValueError, KeyError, IndexError) as e:  # timm's parse of the policy string
        raise UsageError(
            f"--aa {aa!r}: timm cannot read this policy ({e or type(e).__name__})",
            "e.g. rand-m9-mstd0.5-inc1 (RandAugment: magnitude 9, its std 0.5, increasing)",
        ) from None
