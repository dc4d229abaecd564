"""A model folder in Hub layout, as timm writes it and every vit run folder holds it: `config.json`
(with its `architecture`) beside `model.safetensors` (or `pytorch_model.bin`), at the folder's top
level or in a run folder's `best/` or `model/`; its config.json read and checked (sizes that are positive
whole numbers, class counts) before anything is built from it.
"""

from __future__ import annotations

import json
from pathlib import Path

from vitcli.errors import ModelError


def weights_in(folder: Path) -> Path | None:
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return folder / name
    return None


def model_folder(path: Path) -> Path | None:
    """The folder with the model's config.json + weights: `path` itself, or a run folder's best/ or model/."""
    for folder in (path, path / "best", path / "model"):
        if (folder / "config.json").is_file() and weights_in(folder) is not None:
            try:
                cfg = json.loads((folder / "config.json").read_text())
            except (OSError, ValueError):
                continue
            if isinstance(cfg, dict) and "architecture" in cfg:
                return folder
    return None


def load_config(folder: Path) -> dict:
    try:
        cfg = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot read {folder / 'config.json'}: {e}") from None
    if not isinstance(cfg, dict) or "architecture" not in cfg:
        raise ModelError(f"{folder / 'config.json'} is not a timm model config (no 'architecture')")
    _check_sizes(cfg, folder / "config.json")
    return cfg


def _check_sizes(cfg: dict, path: Path) -> None:
    """Sizes a model is built from are positive whole numbers: checked when config.json is read, not deep in
    timm's constructor or a forward pass."""

    def positive(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v > 0

    pretrained = cfg.get("pretrained_cfg") if isinstance(cfg.get("pretrained_cfg"), dict) else {}
    args = cfg.get("model_args") if isinstance(cfg.get("model_args"), dict) else {}
    checks = [
        ("pretrained_cfg.input_size", pretrained.get("input_size"), 3),
        ("model_args.img_size", args.get("img_size"), None),
        ("model_args.patch_size", args.get("patch_size"), None),
    ]
    for name, value, length in checks:
        if value is None:
            continue
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        if not values or not all(positive(v) for v in values) or length is not None and len(values) != length:
            raise ModelError(
                f"{path}: {name} {value!r} is not a size (positive whole numbers)",
                "fix config.json, or save the model again",
            )
    for name in ("num_classes",):
        for where in (cfg, args):
            value = where.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ModelError(f"{path}: {name} {value!r} is not a class count", "fix config.json")
