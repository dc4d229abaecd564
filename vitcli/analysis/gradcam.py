"""Class-specific saliency maps (Grad-CAM and its relatives) for ViT/DeiT and MetaFormer/PoolFormer, with
pytorch-grad-cam (PyPI `grad-cam`, the optional extra `vitcli[gradcam]`) as the engine.

What the engine lacks, and what is here, is the model side:

- **the layer** (`cam_layer`). A ViT: the last block's `norm1`. The class token is read out of the last
  block's attention, so the last block's *output* patch tokens never reach the class score and their
  gradient is zero; its `norm1` output feeds that attention (pytorch-grad-cam's ViT tutorial). Other
  models: timm's own `feature_info`, the module of the last feature map (PoolFormer/MetaFormer and
  CNNs: `stages.3`, `layer4`, ...).
- **the reshape** (`TokensToGrid`). ViT tokens (B, T, C) become a (B, C, rows, cols) map: the
  `num_prefix_tokens` in front (class, registers, distillation) are dropped and the grid is the one of
  the actual input (`vitcli.analysis.attention.token_layout`: `patch_embed.grid_size`, or the dynamic
  size), never a hard-coded 14 x 14 with 1 prefix token (pytorch-grad-cam issues #76, #474, #511).
  Feature maps pass through; channels-last ones (Swin, NHWC stages) are moved to channels-first.
- **the target** (`resolve_target`): a class index or a label name of the model; none = the predicted
  class (a multi-label model: a map for each label it gives, `<image>.<index>.png` after the top one).

Grad-CAM needs gradients, so its pass runs outside inference mode and in fp32 (the engine copies
activations to NumPy, which has no bfloat16); images still come through the one image path
(`ImageDataset` + `make_loader` + the eval transform).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from vitcli.errors import UsageError, VitError
from vitcli.output import atomic_write, display

# --method name -> pytorch-grad-cam class; the methods that need one forward and one backward per batch
# (ScoreCAM and AblationCAM run a forward per channel, too slow for a CPU; FullGrad needs conv biases).
# gradcam++ and xgradcam divide by the sum of the activations, which assumes they are non-negative (post-ReLU);
# a ViT's norm1 output is signed, so they can point at the wrong evidence there (tests/test_gradcam.py).
METHODS = {
    "gradcam": "GradCAM",
    "gradcam++": "GradCAMPlusPlus",
    "hirescam": "HiResCAM",
    "xgradcam": "XGradCAM",
    "layercam": "LayerCAM",
    "eigencam": "EigenCAM",
    "eigengradcam": "EigenGradCAM",
    "gradcam-elementwise": "GradCAMElementWise",
}
TITLES = {
    "gradcam": "Grad-CAM",
    "gradcam++": "Grad-CAM++",
    "hirescam": "HiResCAM",
    "xgradcam": "XGrad-CAM",
    "layercam": "LayerCAM",
    "eigencam": "EigenCAM",
    "eigengradcam": "EigenGradCAM",
    "gradcam-elementwise": "Grad-CAM (element-wise)",
}


class CamLayerError(VitError):
    """The model has no layer Grad-CAM can read a spatial map from."""


def engine():
    """The pytorch_grad_cam package, or a one-line error saying how to install it."""
    try:
        import pytorch_grad_cam
    except ImportError:
        raise VitError(
            "--gradcam and --faithfulness need the optional grad-cam package (pytorch-grad-cam)",
            "pip install 'vitcli[gradcam]'",
        ) from None
    return pytorch_grad_cam


def probabilities(logits, multi_label: bool = False):
    """The probability a map explains, in float32 whatever the autocast: each class's softmax probability,
    or for a multi-label model (each label its own yes/no) its sigmoid probability."""
    logits = logits.float()
    return logits.sigmoid() if multi_label else logits.softmax(-1)


def check_method(method: str) -> str:
    if method not in METHODS:
        raise UsageError(f"--method {method!r}: use one of {', '.join(METHODS)}")
    return method


def resolve_target(spec: str | None, label_names) -> int | None:
    """--target: a class index, a label name, or one of a name's comma-separated synonyms (any case)."""
    if spec is None:
        return None
    s, n = spec.strip(), len(label_names)
    if s.isdigit():
        if int(s) < n:
            return int(s)
        raise UsageError(f"--target {s}: the model has {n} classes (indices 0 to {n - 1})")
    fold = s.casefold()
    for match in (
        lambda name: name == s,
        lambda name: name.casefold() == fold,
        lambda name: fold in (part.strip().casefold() for part in name.split(",")),
    ):
        found = [i for i, name in enumerate(label_names) if match(name)]
        if len(found) == 1:
            return found[0]
        if found:
            raise UsageError(
                f"--target {s!r} names {len(found)} classes ({', '.join(map(str, found))})",
                "give the class index instead",
            )
    raise UsageError(
        f"--target {s!r}: no class of the model has that name",
        f"give a class index (0 to {n - 1}) or a label name, e.g. {label_names[0]!r}"
        if n
        else "the model has no classes",
    )


class TokensToGrid:
    """pytorch-grad-cam's reshape_transform for ViT tokens: (B, T, C) -> (B, C, rows, cols), prefix dropped."""

    def __init__(self, num_prefix: int, grid: tuple[int, int]):
        self.num_prefix, self.grid = num_prefix, tuple(grid)

    def __call__(self, tokens):
        B, T, C = tokens.shape
        rows, cols = self.grid
        if T != self.num_prefix + rows * cols:
            raise CamLayerError(f"{T} tokens do not match {self.num_prefix} prefix tokens + a {rows}x{cols} patch grid")
        return tokens[:, self.num_prefix :].reshape(B, rows, cols, C).permute(0, 3, 1, 2)


class ChannelsFirst:
    """reshape_transform for feature maps: (B, C, H, W) as is, channels-last (B, H, W, C) permuted."""

    def __init__(self, channels: int | None):
        self.channels = channels

    def __call__(self, x):
        if x.dim() != 4:
            raise CamLayerError(f"the feature map has shape {tuple(x.shape)}, not (B, C, H, W)")
        if self.channels is not None and x.shape[1] != self.channels and x.shape[-1] == self.channels:
            return x.permute(0, 3, 1, 2)
        return x


@dataclass
class CamLayer:
    module: object  # torch.nn.Module
    name: str
    kind: str  # "tokens" (a ViT's sequence) | "feature map"
    num_prefix: int = 0
    channels: int | None = None

    def reshape(self, model, input_size: tuple[int, int]):
        if self.kind == "feature map":
            return ChannelsFirst(self.channels)
        from vitcli.analysis.attention import token_layout

        layout = token_layout(model, input_size)
        return TokensToGrid(layout.num_prefix, layout.grid)


def _arch(model) -> str:
    return (getattr(model, "pretrained_cfg", None) or {}).get("architecture") or type(model).__name__


def cam_layer(model) -> CamLayer:
    """The layer Grad-CAM reads (see the module docstring); CamLayerError when there is none."""
    names = {id(m): n for n, m in model.named_modules()}
    blocks = getattr(model, "blocks", None)
    if blocks is not None and len(blocks) and getattr(model, "patch_embed", None) is not None:
        norm1 = getattr(blocks[-1], "norm1", None)
        if norm1 is not None:
            from vitcli.analysis.attention import token_layout

            return CamLayer(norm1, names[id(norm1)], "tokens", num_prefix=token_layout(model).num_prefix)
    info = getattr(model, "feature_info", None)
    last = info[-1] if isinstance(info, list) and info else None
    if last is not None and last.get("module"):
        module = dict(model.named_modules()).get(last["module"])
        if module is not None:
            return CamLayer(module, last["module"], "feature map", channels=last.get("num_chs"))
    raise CamLayerError(
        f"{_arch(model)}: no layer to take a Grad-CAM map from",
        "--gradcam takes ViT/DeiT (blocks + patch_embed) and models whose timm feature_info "
        "names a last feature map (PoolFormer/MetaFormer, CNNs)",
    )


@dataclass
class CamMaps:
    """What the Grad-CAM pass hands to the faithfulness pass: per image position, the map and its class."""

    maps: dict = field(default_factory=dict)  # position -> (H, W) float32 in [0, 1]
    targets: dict = field(default_factory=dict)  # position -> class index
    grid: tuple[int, int] | None = None  # the spatial size of the layer's map


def gradcam_figures(
    loaded, rt, paths, stems, out: Path, *, method: str, target: int | None, batch_size: int, arch: str, result: dict
) -> CamMaps:
    """One pass over `paths`: a Grad-CAM map per image (its overlay PNG and its .npy), for `target` or the
    predicted class; records them in result["gradcam"] and returns them for the faithfulness pass."""
    import numpy as np
    import torch

    from vitcli import output as sink
    from vitcli.analysis import figures
    from vitcli.data.loader import ImageDataset, Records, make_loader
    from vitcli.data.transforms import eval_transform

    cams = engine()
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from vitcli.inference.multilabel import MultiLabelHead

    model, names = loaded.model, loaded.label_names
    head = MultiLabelHead.of(loaded.config, loaded.num_classes)  # multi-label: a map per label it gives
    layer = cam_layer(model)
    mean = torch.tensor(loaded.data_config["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(loaded.data_config["std"]).view(1, 3, 1, 1)
    dataset = ImageDataset(Records.of_paths(paths), transform=eval_transform(loaded.data_config))
    record = {
        "method": method,
        "layer": layer.name,
        "layer_kind": layer.kind,
        "grid": None,
        "target": "predicted class" if target is None else {"index": target, "label": names[target]},
        "images": [],
    }
    if layer.kind == "tokens":
        record["num_prefix_tokens"] = layer.num_prefix
    result["gradcam"] = record
    found = CamMaps()
    title = TITLES[method]
    with sink.progress(title, total=len(paths), unit="img") as advance:
        for batch in make_loader(dataset, batch_size=batch_size, device=rt.device):
            result["errors"] += [{"path": s.path, "error": s.reason} for s in batch.skipped]
            if batch.images is not None:
                x = batch.images.to(rt.device).float()

                def make(x=x):
                    return getattr(cams, METHODS[method])(
                        model, [layer.module], reshape_transform=layer.reshape(model, tuple(x.shape[-2:]))
                    )

                cam = make()
                try:
                    with torch.enable_grad():
                        maps = cam(x, None if target is None else [ClassifierOutputTarget(target)] * len(x))
                    logits = cam.outputs.detach().float().cpu()
                    probs = probabilities(logits, head is not None)
                    grid = tuple(cam.activations_and_grads.activations[0].shape[-2:])
                finally:
                    cam.activations_and_grads.release()
                    model.zero_grad(set_to_none=True)
                record["grid"] = list(grid)
                found.grid = grid
                view = (batch.images.float() * std + mean).clamp(0, 1).permute(0, 2, 3, 1).numpy()
                for j, i in enumerate(batch.positions):
                    pred = int(probs[j].argmax())
                    tgt = pred if target is None else target
                    m = maps[j].astype(np.float32)
                    found.maps[i], found.targets[i] = m, tgt
                    extra = (
                        [d["index"] for d in head.labels(logits[j].numpy(), names)][1:]
                        if head and target is None
                        else []
                    )  # the labels after the top one: their own maps
                    first = [(tgt, m, "")]
                    for tgt, m, suffix in first + [(c, _single(make, x[j : j + 1], c, model), f".{c}") for c in extra]:
                        png, npy = (out / "gradcam" / f"{stems[i]}{suffix}{ext}" for ext in (".png", ".npy"))
                        atomic_write(npy, lambda tmp: np.save(tmp, m))
                        figures.map_overlay(
                            view[j],
                            m,
                            png,
                            name=f"{title}: {names[tgt].split(',')[0]}",
                            short=title,
                            bar_label="Relative importance",
                            title=(
                                f"{display(Path(paths[i]).name)}: {arch}, {title} at {layer.name} for class {tgt} "
                                f"({float(probs[j, tgt]):.3g})"
                            ),
                        )
                        result["files"] += [display(png), display(npy)]
                        record["images"].append(
                            {
                                "image": display(paths[i]),
                                "png": display(png),
                                "npy": display(npy),
                                "target": tgt,
                                "target_label": names[tgt],
                                "target_prob": round(float(probs[j, tgt]), 4),
                                "predicted": pred,
                                "predicted_label": names[pred],
                                "predicted_prob": round(float(probs[j, pred]), 4),
                            }
                        )
            advance(len(batch.positions) + len(batch.skipped))
    return found


def _single(make, x, category: int, model):
    """The map of one image for one class (a multi-label image's further labels), by a new CAM of `make`."""
    import numpy as np
    import torch
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cam = make(x)
    try:
        with torch.enable_grad():
            return cam(x, [ClassifierOutputTarget(category)])[0].astype(np.float32)
    finally:
        cam.activations_and_grads.release()
        model.zero_grad(set_to_none=True)
