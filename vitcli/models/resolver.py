"""The one model resolver every command uses.

A model spec is one of:
  - a timm name, with or without a pretrained tag: `vit_base_patch16_224.augreg2_in21k_ft_in1k`;
  - `hf-hub:org/name[@revision]`: a timm repository on the Hugging Face Hub;
  - a local folder in Hub layout (`config.json` + `model.safetensors`, as timm writes them:
    vitcli.models.folder);
  - a vit run folder (the same layout at its top level, or in `best/` or `model/`);
  - a file `vit export` wrote: `.onnx` (onnxruntime), `.pt2` (torch.export), `.xml` (OpenVINO).
It returns the model with its preprocessing (from the model's own pretrained config, never
hard-coded) and its label names.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vitcli.errors import ModelError
from vitcli.models.folder import load_config, model_folder, weights_in
from vitcli.output import display

HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
PAPER_CODES = {  # the paper's model codes -> timm architectures (width/depth/heads as in Table 1)
    "Ti/16": "vit_tiny_patch16_224",
    "S/16": "vit_small_patch16_224",
    "S/32": "vit_small_patch32_224",
    "B/16": "vit_base_patch16_224",
    "B/32": "vit_base_patch32_224",
    "L/16": "vit_large_patch16_224",
    "L/32": "vit_large_patch32_224",
    "H/14": "vit_huge_patch14_224",
}


@dataclass
class ModelSource:
    """Where a spec points, before anything heavy is loaded."""

    spec: str
    kind: str  # timm | hf-hub | local | onnx | pt2 | openvino (FILE_KINDS: a file vit export wrote)
    name: str  # timm name, hub repo id or folder
    revision: str | None = None
    folder: Path | None = None  # folder holding config.json (+ weights) for hf-hub and local
    weights: Path | None = None


FILE_KINDS = {"onnx": "onnxruntime", "pt2": "torch.export", "openvino": "openvino"}  # kind -> what runs it


def file_kind(spec: str) -> str | None:
    """ "onnx" / "pt2" / "openvino" for an exported model file (by its suffix; it must exist), else None."""
    from vitcli.export.onnx_model import is_onnx
    from vitcli.export.openvino_model import is_openvino
    from vitcli.export.pt2_model import is_pt2

    spec = str(spec).strip()
    return "onnx" if is_onnx(spec) else "pt2" if is_pt2(spec) else "openvino" if is_openvino(spec) else None


@dataclass
class LoadedModel:
    model: Any  # torch.nn.Module, in eval mode
    source: ModelSource
    architecture: str
    data_config: dict  # input_size, interpolation, mean, std, crop_pct, crop_mode
    label_names: list[str]
    config: dict = field(default_factory=dict)  # the folder's config.json, when there is one

    @property
    def num_classes(self) -> int:
        return len(self.label_names)


def parse_spec(spec: str) -> ModelSource:
    """Classify a spec without loading torch (local folders are recognised by their files)."""
    spec = spec.strip()
    if spec.startswith("hf-hub:"):
        from vitcli.hub.files import split_revision

        repo_id, revision = split_revision(spec[len("hf-hub:") :])
        if not HUB_ID.fullmatch(repo_id) or ".." in repo_id or any(p in (".", "..") for p in repo_id.split("/")):
            raise ModelError(
                f"bad Hub id {spec!r}: expected org/name of letters, digits, '-', '_' and '.'",
                "use hf-hub:org/name or hf-hub:org/name@revision",
            )
        return ModelSource(spec, "hf-hub", repo_id, revision)
    if spec.startswith("local-dir:"):
        spec = spec[len("local-dir:") :]
    kind = file_kind(spec)
    if kind is not None:
        return ModelSource(spec, kind, spec, weights=Path(spec).expanduser())
    path = Path(spec).expanduser()
    if path.is_dir():
        folder = model_folder(path)
        if folder is None:
            raise ModelError(
                f"{path} holds no model: expected config.json and model.safetensors",
                "point --model at a folder in Hub layout or a vit run folder",
            )
        return ModelSource(spec, "local", str(path), folder=folder, weights=weights_in(folder))
    if path.exists() or spec.startswith((".", "/", "~")):
        raise ModelError(f"{spec} is not a model folder", "give a folder with config.json + model.safetensors")
    return ModelSource(spec, "timm", PAPER_CODES.get(spec, spec))


def resolve_timm_name(name: str) -> str:
    """Check a timm name (architecture[.tag]) exists; suggest close names when it does not."""
    import timm

    from vitcli.models.registry import ensure_registered

    ensure_registered()
    name = PAPER_CODES.get(name, name)
    arch = name.split(".", 1)[0]
    if timm.is_model(arch):
        return name
    candidates = timm.list_models()
    close = difflib.get_close_matches(arch, candidates, n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}?" if close else "`vit models PATTERN` lists the architectures"
    raise ModelError(f"unknown model {name!r}: not a timm architecture, hf-hub: id or model folder", hint)


def fetch(source: ModelSource, refresh: bool = False) -> ModelSource:
    """Make sure the files the model needs are local (downloading with progress when needed)."""
    from vitcli.hub import files as hub

    if source.kind == "local" or source.kind in FILE_KINDS:
        return source
    if source.kind == "hf-hub":
        config = Path(hub.download_file(source.name, "config.json", source.revision, refresh=refresh))
        weights = Path(hub.download_weights(source.name, source.revision, refresh=refresh))
        source.folder, source.weights = config.parent, weights
        return source
    # a timm name: its pretrained config says which Hub repo holds the weights
    import timm

    name = resolve_timm_name(source.name)
    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except RuntimeError:  # "Invalid pretrained tag (x) for arch"
        arch, _, tag = name.partition(".")
        tags = [n.partition(".")[2] for n in timm.list_pretrained(f"{arch}.*")]
        raise ModelError(
            f"timm has no pretrained tag {tag!r} for {arch}",
            f"its tags: {', '.join(tags)}" if tags else f"{arch} has no pretrained weights in timm",
        ) from None
    if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
        raise ModelError(
            f"timm has no pretrained weights for {name!r}",
            "pick a name with a pretrained tag (`vit models` lists them), or train it with `vit train`",
        )
    if cfg.hf_hub_id:
        repo_id, revision = hub.split_revision(cfg.hf_hub_id)
        filename = getattr(cfg, "hf_hub_filename", None)
        if filename:
            source.weights = Path(hub.download_file(repo_id, filename, revision, refresh=refresh))
        else:
            source.weights = Path(hub.download_weights(repo_id, revision, refresh=refresh))
    return source


def create(source: ModelSource, *, pretrained: bool = True, **overrides):
    """Build the timm model for a fetched source; `overrides` (num_classes, img_size, ...) win. An
    img_size for an architecture that has no such setting (CNNs, PoolFormer: any input size) is left out."""
    import timm

    from vitcli.models.registry import ensure_registered

    ensure_registered()
    config: dict = {}
    if source.kind in FILE_KINDS:
        return _open_file(source, overrides)
    if source.kind in ("hf-hub", "local"):
        config = load_config(source.folder)
        arch = config["architecture"]
        model_args = dict(config.get("model_args") or {})
        pretrained_cfg = dict(config.get("pretrained_cfg") or {})
        for key in ("hf_hub_id", "url", "source", "hf_hub_filename"):
            pretrained_cfg.pop(key, None)
        if "num_classes" not in model_args and "num_classes" in config:
            model_args["num_classes"] = config["num_classes"]
        pretrained_cfg.setdefault("num_classes", model_args.get("num_classes", config.get("num_classes")))
        pretrained_cfg["file"] = str(source.weights)
        model_args.update(overrides)
        pretrained_cfg.setdefault("architecture", arch)  # tells a token-mixer swap whose weights these are
        arch, model_args = _route_token_mixers(arch, model_args)
        model_args = _supported_sizes(arch, model_args)
        # the folder's own model, as saved: built empty, then every tensor loaded strictly (timm would drop a
        # head that does not match num_classes and make a random one); with overrides (a new head, another
        # size) timm's loader adapts the checkpoint, as fine-tuning wants
        strict = pretrained and not overrides
        model = timm.create_model(
            arch, pretrained=pretrained and not strict, pretrained_cfg=pretrained_cfg, **model_args
        )
        if strict:
            from vitcli.models.weights import load_strict

            load_strict(model, source.weights, display(source.folder / "config.json"))
            _check_label_names(model, config)
    else:
        arch, overrides = _route_token_mixers(resolve_timm_name(source.name), overrides)
        overrides = _supported_sizes(arch, overrides)
        if pretrained and source.weights is not None:
            model = timm.create_model(
                arch, pretrained=True, pretrained_cfg_overlay={"file": str(source.weights)}, **overrides
            )
        else:
            model = timm.create_model(arch, pretrained=pretrained, **overrides)
    return model, arch, config


def _open_file(source: ModelSource, overrides: dict):
    """An exported file as (torch module, architecture, config): its own metadata, no timm model code."""
    if overrides:
        raise ModelError(
            f"{display(source.name)} is an exported {source.kind} model: it cannot be rebuilt with "
            f"{', '.join(overrides)}",
            "use the model it was exported from",
        )
    if source.kind == "pt2":
        from vitcli.export.pt2_model import load

        module, meta = load(source.weights)
        return module, meta["architecture"], {**(meta.get("config") or {}), "label_names": meta["label_names"]}
    from vitcli.export.onnx_model import OnnxModel, as_module

    if source.kind == "onnx":
        model = OnnxModel(source.weights)
    else:
        from vitcli.export.openvino_model import OpenVinoModel

        model = OpenVinoModel(source.weights)
    return as_module(model), model.architecture, {**model.config, "label_names": model.label_names}


def _route_token_mixers(arch: str, args: dict) -> tuple[str, dict]:
    """`token_mixer` / `token_mixers` overrides build the same model with its token mixer swapped,
    through the timm entrypoint registered in vitcli.architectures (which run folders then record)."""
    args = {k: v for k, v in args.items() if not (k in ("token_mixer", "token_mixers") and not v)}
    if ("token_mixer" in args or "token_mixers" in args) and arch.split(".")[0] != "vitcli_metaformer":
        return "vitcli_metaformer", {**args, "base": arch}
    return arch, args


def _supported_sizes(arch: str, args: dict) -> dict:
    """`args` without img_size when the architecture's class has no such parameter, decided from its
    constructor's signature (a weightless skeleton on the meta device tells the class)."""
    sizes = [k for k in ("img_size",) if k in args]
    if not sizes or arch.split(".")[0] == "vitcli_metaformer":  # its entrypoint drops it for PoolFormer
        return args
    import inspect

    from vitcli.models.meta import on_meta

    rest = {k: v for k, v in args.items() if k not in sizes}
    try:
        params = inspect.signature(type(on_meta(arch.split(".")[0], **rest)).__init__).parameters
    except Exception:  # noqa: BLE001 - the real build below reports what is wrong
        return args
    return {k: v for k, v in args.items() if k not in sizes or k in params}


def _check_label_names(model, config: dict) -> None:
    names = config.get("label_names")
    num_classes = getattr(model, "num_classes", 0) or 0
    if names is not None and len(names) != num_classes:
        raise ModelError(
            f"config.json lists {len(names)} label_names for a model of {num_classes} classes",
            "the names and the weights belong to different models: fix label_names in config.json",
        )


def label_names_for(model, config: dict) -> list[str]:
    """Names for the head's classes: the folder's label_names, ImageNet names, else the index."""
    num_classes = getattr(model, "num_classes", 0) or 0
    names = config.get("label_names") or (config.get("pretrained_cfg") or {}).get("label_names")
    if names and len(names) == num_classes:
        descriptions = config.get("label_descriptions")
        if isinstance(descriptions, dict):
            return [descriptions.get(n, n) for n in names]
        return list(names)
    try:
        from timm.data import ImageNetInfo, infer_imagenet_subset

        subset = infer_imagenet_subset(model)
        if subset:
            info = ImageNetInfo(subset)
            return [info.index_to_description(i) for i in range(num_classes)]
    except Exception:  # noqa: BLE001 - label names are a convenience, never a failure
        pass
    return [str(i) for i in range(num_classes)]


def data_config_for(model) -> dict:
    """Preprocessing from the model's own pretrained config (timm's resolve_model_data_config)."""
    from timm.data import resolve_model_data_config

    return resolve_model_data_config(model)


def load_model(spec: str, *, pretrained: bool = True, device=None, refresh: bool = False, **overrides) -> LoadedModel:
    """Resolve `spec`, download what is missing, build the model in eval mode on `device`."""
    source = parse_spec(spec)
    if pretrained:
        source = fetch(source, refresh=refresh)
    try:
        model, arch, config = create(source, pretrained=pretrained, **overrides)
    except ModelError:
        raise
    except Exception as e:  # noqa: BLE001 - what timm's loader raises for a damaged file, by name
        if type(e).__name__ in ("SafetensorError", "UnpicklingError", "EOFError"):
            from vitcli.models.weights import DAMAGED_HINT

            where = display(source.weights) if source.weights else spec
            raise ModelError(
                f"the weights file {where} is damaged ({str(e).splitlines()[0][:160] if str(e) else ''})", DAMAGED_HINT
            ) from None
        if not isinstance(e, (RuntimeError, KeyError, ValueError, TypeError)):
            raise
        raise ModelError(
            f"could not build {spec}: {str(e).splitlines()[0] if str(e) else type(e).__name__}",
            "check the model's config.json and weights match; set VIT_DEBUG=1 for details",
        ) from e
    model.eval()
    if device is not None:
        model.to(device)
    return LoadedModel(model, source, arch, data_config_for(model), label_names_for(model, config), config)
