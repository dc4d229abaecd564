"""What a training run is built from: its dataset, and its model.

Fine-tuning follows the paper: the pre-trained head is replaced by a zero-initialised one for the
dataset's classes, and position embeddings are resampled in 2-D (bicubic, timm's checkpoint filter)
when the resolution changes. Training from scratch takes a timm name or a paper code (`S/16`) with the
paper's ablations: learned-1D, 2-D sincos or no position embedding; class-token or average pooling.
"""

from __future__ import annotations

from pathlib import Path

from vitcli import output
from vitcli.errors import UsageError
from vitcli.models.resolver import load_model
from vitcli.train.run.config import FinetuneConfig, TrainConfig


def open_run_dataset(cfg, download: bool | None = None):
    """The run's dataset, its minival carved as every part of a run (and a sweep's test) carves it."""
    from vitcli.data.datasets import open_dataset

    return open_dataset(
        cfg.dataset,
        data_dir=cfg.data_dir and Path(cfg.data_dir),
        val_split=cfg.val_split,
        download=cfg.download if download is None else download,
        image_column=cfg.image_column,
        label_column=cfg.label_column,
    )


def check_models(cfg) -> None:
    """--model and --teacher as the run will open them, checked without building anything: a path that is
    no model folder, or a name timm does not know, is refused now (for `--dry-run`) as the run would refuse
    it. hf-hub: ids are checked when the run fetches them (that needs the Hub)."""
    from vitcli.models.resolver import parse_spec, resolve_timm_name

    for spec in (cfg.model, getattr(cfg, "teacher", None)):
        if spec:
            source = parse_spec(str(spec))
            if source.kind == "timm":
                resolve_timm_name(source.name)


def _mixers(cfg) -> dict:
    out = {}
    if cfg.token_mixer:
        out["token_mixer"] = cfg.token_mixer
    if cfg.token_mixers:
        out["token_mixers"] = cfg.token_mixers
    return out


def _checkpoint_grid(weights: Path | None, model) -> tuple[int, int] | None:
    """The checkpoint's position-embedding grid, read from the safetensors header (no weights loaded)."""
    if weights is None or not str(weights).endswith(".safetensors") or getattr(model, "pos_embed", None) is None:
        return None
    try:
        from safetensors import safe_open

        with safe_open(str(weights), framework="pt") as f:
            if "pos_embed" not in f.keys():
                return None
            length = f.get_slice("pos_embed").get_shape()[1]
    except Exception:  # noqa: BLE001 - only for the log line
        return None
    gh, gw = model.patch_embed.grid_size
    prefix = model.pos_embed.shape[1] - gh * gw
    side = int(round((length - prefix) ** 0.5))
    return (side, side) if side * side == length - prefix else None


def _set_input_size(model, size: int) -> None:
    cfg = dict(getattr(model, "pretrained_cfg", {}) or {})
    cfg["input_size"] = (3, size, size)
    model.pretrained_cfg = cfg


def build_finetune_model(cfg: FinetuneConfig, num_classes: int, device):
    import torch

    overrides = {"num_classes": num_classes, **_mixers(cfg)}
    if cfg.img_size:
        overrides["img_size"] = cfg.img_size
    if cfg.drop_path:
        overrides["drop_path_rate"] = cfg.drop_path
    loaded = load_model(cfg.model, pretrained=True, device=device, **overrides)
    model = loaded.model
    head = model.get_classifier()
    if isinstance(head, torch.nn.Linear):  # the paper: a zero-initialised D x K head
        with torch.no_grad():
            head.weight.zero_()
            if head.bias is not None:
                head.bias.zero_()
    if cfg.img_size:
        old = _checkpoint_grid(loaded.source.weights, model)
        new = tuple(model.patch_embed.grid_size) if hasattr(model, "patch_embed") else None
        if old and new and tuple(old) != new:
            output.info(f"pos-embed {old[0]}x{old[1]} -> {new[0]}x{new[1]} (2-D bicubic)")
        _set_input_size(model, cfg.img_size)
    if cfg.freeze:
        head_params = {id(p) for p in head.parameters()}
        for p in model.parameters():
            p.requires_grad_(id(p) in head_params)
    return loaded, model


def build_scratch_model(cfg: TrainConfig, num_classes: int, device):
    import torch

    overrides: dict = {"num_classes": num_classes, **_mixers(cfg)}
    if cfg.img_size:
        overrides["img_size"] = cfg.img_size
    if cfg.patch_size:
        overrides["patch_size"] = cfg.patch_size
    if cfg.pool != "token":
        overrides["global_pool"] = cfg.pool
    if cfg.pos_embed == "none":
        overrides["pos_embed"] = "none"
    if cfg.drop_path:
        overrides["drop_path_rate"] = cfg.drop_path
    loaded = load_model(cfg.model, pretrained=False, device=device, **overrides)
    model = loaded.model
    if cfg.pos_embed == "sincos":
        if getattr(model, "pos_embed", None) is None or not hasattr(model, "patch_embed"):
            raise UsageError(f"--pos-embed sincos needs a ViT with a position embedding, not {cfg.model}")
        from timm.layers import build_sincos2d_pos_embed

        gh, gw = model.patch_embed.grid_size
        dim = model.pos_embed.shape[-1]
        table = build_sincos2d_pos_embed([gh, gw], dim=dim)  # (gh*gw, D), fixed
        prefix = model.pos_embed.shape[1] - gh * gw  # the class token's slot (zeros) when embedded
        with torch.no_grad():
            model.pos_embed.copy_(torch.cat([table.new_zeros(prefix, dim), table])[None].to(model.pos_embed))
        model.pos_embed.requires_grad_(False)  # a constant, not learned (the paper's 2-D variant)
    if cfg.img_size:
        _set_input_size(model, cfg.img_size)
    return loaded, model
