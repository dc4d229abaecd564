"""The model zoo behind `vit models`: timm architectures with params, GMACs/GFLOPs, input size, tags.

No weights are loaded: each architecture is built on the `meta` device and counted once by
`vitcli.models.meta.count_flops` in the convention of timm's published benchmark tables (fvcore's
`infer_gmacs`). GFLOPs = 2 x GMACs at batch 1. Results are cached per timm/torch version in vitcli's
cache, so a listing is computed once.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

COUNTER_VERSION = 2  # part of the cache file name: bump when the counting rules change
DEFAULT_FAMILIES = (
    "vit_*",
    "deit*",
    "poolformer*",
    "mixer_*",
)  # ViT (incl. R50+ViT hybrids), DeiT, PoolFormer v1/v2, MLP-Mixer


@dataclass
class ZooEntry:
    model: str
    params: int | None = None
    gmacs: float | None = None  # multiply-adds at input_size, batch 1 (timm's convention)
    input_size: tuple[int, int, int] | None = None
    tags: list[str] = field(default_factory=list)
    error: str | None = None  # why the counts are missing

    @property
    def gflops(self) -> float | None:
        return None if self.gmacs is None else 2 * self.gmacs

    def to_json(self) -> dict:
        d = asdict(self)
        d["params_m"] = None if self.params is None else round(self.params / 1e6, 2)
        d["gflops"] = None if self.gflops is None else round(self.gflops, 3)
        d["gmacs"] = None if self.gmacs is None else round(self.gmacs, 3)
        d["input_size"] = list(self.input_size) if self.input_size else None
        return d


# ---------------------------------------------------------------------------------------------
# Counting


def profile(name: str, **model_args) -> ZooEntry:
    """Params and GMACs of a timm architecture (or vitcli_metaformer) at its default input size."""
    import torch

    from vitcli.models.meta import count_flops, on_meta
    from vitcli.models.registry import ensure_registered

    ensure_registered()
    entry = ZooEntry(name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = on_meta(name, **model_args)
            input_size = tuple(int(v) for v in model.pretrained_cfg.get("input_size") or (3, 224, 224))
            if model_args.get("img_size") or model_args.get("in_chans"):  # the input the model was built for
                from timm.models import get_model_input_config

                input_size = tuple(int(v) for v in get_model_input_config(model)["input_size"])
            entry.input_size = input_size
            entry.params = sum(p.numel() for p in model.parameters())
            example = torch.zeros(1, *input_size, device="meta")
            entry.gmacs = count_flops(model, example, timm_convention=True) / 2 / 1e9
    except Exception as e:  # noqa: BLE001 - a model that cannot be counted is listed without counts
        entry.error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:200]
    return entry


# ---------------------------------------------------------------------------------------------
# Listing


def _cache_path() -> Path:
    import timm
    import torch

    from vitcli.env import vit_cache_dir

    return (
        Path(vit_cache_dir())
        / "zoo"
        / f"v{COUNTER_VERSION}-timm-{timm.__version__}-torch-{torch.__version__.split('+')[0]}.json"
    )


def _load_cache(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _save_cache(path: Path, data: dict) -> None:
    from vitcli.output import atomic_write

    try:
        atomic_write(path, json.dumps(data, sort_keys=True))
    except OSError:
        pass  # a cache that cannot be written only costs time


def _pattern(pattern: str) -> str:
    """A bare word matches anywhere in the name (`vit` -> `*vit*`); wildcards are used as given."""
    pattern = pattern.strip().lower()
    return pattern if any(c in pattern for c in "*?[") else f"*{pattern}*"


def architectures(pattern: str | None = None, all_models: bool = False, pretrained_only: bool = False) -> list[str]:
    """Architecture names: PATTERN over all of timm (name or name.tag), else the default families."""
    import timm

    from vitcli.models.registry import ensure_registered

    ensure_registered()
    if pattern:
        pat = _pattern(pattern)
        names = set(timm.list_models(pat))
        names |= {n.split(".", 1)[0] for n in timm.list_models(pat, pretrained=True)}
    elif all_models:
        names = set(timm.list_models())
    else:
        names = {n for fam in DEFAULT_FAMILIES for n in timm.list_models(fam)}
    if pretrained_only:
        names &= {n.split(".", 1)[0] for n in timm.list_models(pretrained=True)}
    return sorted(names)


def tags_by_architecture() -> dict[str, list[str]]:
    import timm

    tags: dict[str, list[str]] = {}
    for full in timm.list_models(pretrained=True):
        arch, _, tag = full.partition(".")
        tags.setdefault(arch, []).append(tag)
    return tags


def models(
    pattern: str | None = None,
    all_models: bool = False,
    pretrained_only: bool = False,
    progress: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
    use_cache: bool = True,
) -> list[ZooEntry]:
    """The `vit models` listing. `on_total(n)` is told how many models need counting, `progress(1)` each."""
    names = architectures(pattern, all_models, pretrained_only)
    path = _cache_path() if use_cache else None
    cache = _load_cache(path) if path else {}
    missing = [n for n in names if n not in cache]
    if on_total:
        on_total(len(missing))
    for i, name in enumerate(missing):
        e = profile(name)
        cache[name] = {"params": e.params, "gmacs": e.gmacs, "input_size": e.input_size, "error": e.error}
        if progress:
            progress(1)
        if path and (i % 25 == 24 or i == len(missing) - 1):
            _save_cache(path, cache)
    tags = tags_by_architecture()
    out = []
    for name in names:
        c = cache[name]
        out.append(
            ZooEntry(
                name,
                c.get("params"),
                c.get("gmacs"),
                tuple(c["input_size"]) if c.get("input_size") else None,
                sorted(tags.get(name, [])),
                c.get("error"),
            )
        )
    return out
