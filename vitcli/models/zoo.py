"""The model zoo behind `vit models`: timm architectures with params, GMACs/GFLOPs, input size, tags.

No weights are loaded: each architecture is built on the `meta` device (shapes only, no memory) and
run once under torch's FlopCounterMode. Counts follow the convention of timm's published benchmark
tables (`infer_gmacs`, made with fvcore): one multiply-add per term of every matmul, convolution and
attention product, plus fvcore's per-element cost of normalisation layers (5 with an affine, 4
without; batch norm in eval 2) and adaptive pooling (1); elementwise activations are free.
GFLOPs = 2 x GMACs. Results are cached per timm/torch version in vitcli's cache, so a listing is
computed once.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

COUNTER_VERSION = 2  # part of the cache file name: bump when the counting rules change
DEFAULT_FAMILIES = ("vit_*", "deit*", "poolformer*", "mixer_*")  # ViT (incl. R50+ViT hybrids), DeiT, PoolFormer v1/v2, MLP-Mixer


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

def _fvcore_norms() -> dict:
    """FlopCounterMode formulas (in FLOPs = 2 x MACs) for the ops fvcore charges and torch does not."""
    import torch

    aten = torch.ops.aten

    def norm(input_shape, weight_shape=None, *args, out_shape=None, **kwargs):  # layer/group norm
        return 2 * math.prod(input_shape) * (5 if weight_shape is not None else 4)

    def layer_norm(input_shape, normalized_shape, weight_shape=None, *args, out_shape=None, **kwargs):
        return norm(input_shape, weight_shape)

    def batch_norm_eval(input_shape, weight_shape=None, *args, out_shape=None, **kwargs):
        return 2 * math.prod(input_shape) * (2 if weight_shape is not None else 1)

    def batch_norm(input_shape, weight_shape=None, bias_shape=None, mean_shape=None, var_shape=None,
                   training=False, *args, out_shape=None, **kwargs):
        if training:
            return norm(input_shape, weight_shape)
        return batch_norm_eval(input_shape, weight_shape)

    def batch_norm_legit(input_shape, weight_shape=None, *args, out_shape=None, **kwargs):
        return norm(input_shape, weight_shape)  # no running stats: the training-mode formula (StdConv)

    def adaptive_pool(input_shape, *args, out_shape=None, **kwargs):
        return 2 * math.prod(input_shape)

    def sdpa_cpu(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
        from torch.utils.flop_counter import sdpa_flop_count

        return sdpa_flop_count(query_shape, key_shape, value_shape)  # torch counts the CUDA kernels only

    mapping = {
        aten.native_layer_norm: layer_norm,
        aten.native_group_norm: norm,
        aten.native_batch_norm: batch_norm,
        aten._native_batch_norm_legit_no_training: batch_norm_eval,
        aten._native_batch_norm_legit: batch_norm_legit,
        aten._adaptive_avg_pool2d: adaptive_pool,
    }
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
        mapping[aten._scaled_dot_product_flash_attention_for_cpu] = sdpa_cpu
    return mapping


def count(model, input_size: Iterable[int]) -> tuple[int, int]:
    """(parameters, multiply-adds) of one forward at batch 1; works on `meta` models (no memory)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    params = sum(p.numel() for p in model.parameters())
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    x = torch.zeros(1, *input_size, device=device)
    was_training = model.training
    grads = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    counter = FlopCounterMode(display=False, custom_mapping=_fvcore_norms())
    try:
        for p, _ in grads:  # FlopCounterMode's module tracker trips over grad-requiring latents (MAP heads)
            p.requires_grad_(False)
        with counter, torch.no_grad():
            model(x)
    finally:
        model.train(was_training)
        for p, flag in grads:
            p.requires_grad_(flag)
    return params, counter.get_total_flops() // 2


def skip_init():
    """A torch-function mode that skips in-place ops on meta tensors (weight init: no data to fill).

    Construction on `meta` otherwise spends most of its time running initialisers through Python refs.
    """
    import torch
    from torch.overrides import TorchFunctionMode

    class SkipInit(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            name = getattr(func, "__name__", "")
            if (name.endswith("_") and not name.endswith("__") and args and isinstance(args[0], torch.Tensor)
                    and args[0].is_meta):
                return args[0]
            return func(*args, **(kwargs or {}))

    return SkipInit()


def profile(name: str, **model_args) -> ZooEntry:
    """Params and GMACs of a timm architecture (or vitcli_metaformer) at its default input size."""
    import timm
    import torch

    from vitcli.models.resolver import _ensure_registered

    _ensure_registered()
    entry = ZooEntry(name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with torch.device("meta"), skip_init():
                model = timm.create_model(name, pretrained=False, **model_args)
            input_size = tuple(int(v) for v in model.pretrained_cfg.get("input_size") or (3, 224, 224))
            if model_args.get("img_size") or model_args.get("in_chans"):  # the input the model was built for
                from timm.models import get_model_input_config

                input_size = tuple(int(v) for v in get_model_input_config(model)["input_size"])
            entry.input_size = input_size
            entry.params = sum(p.numel() for p in model.parameters())
            _, macs = count(model, input_size)
            entry.gmacs = macs / 1e9
    except Exception as e:  # noqa: BLE001 - a model that cannot be counted is listed without counts
        entry.error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:200]
    return entry


# ---------------------------------------------------------------------------------------------
# Listing

def _cache_path() -> Path:
    import timm
    import torch

    from vitcli.env import vit_cache_dir

    return Path(vit_cache_dir()) / "zoo" / f"v{COUNTER_VERSION}-timm-{timm.__version__}-torch-{torch.__version__.split('+')[0]}.json"


def _load_cache(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _save_cache(path: Path, data: dict) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(data, sort_keys=True))
        os.replace(tmp, path)
    except OSError:
        pass  # a cache that cannot be written only costs time


def _pattern(pattern: str) -> str:
    """A bare word matches anywhere in the name (`vit` -> `*vit*`); wildcards are used as given."""
    pattern = pattern.strip().lower()
    return pattern if any(c in pattern for c in "*?[") else f"*{pattern}*"


def architectures(pattern: str | None = None, all_models: bool = False, pretrained_only: bool = False) -> list[str]:
    """Architecture names: PATTERN over all of timm (name or name.tag), else the default families."""
    import timm

    from vitcli.models.resolver import _ensure_registered

    _ensure_registered()
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


def models(pattern: str | None = None, all_models: bool = False, pretrained_only: bool = False,
           progress: Callable[[int], None] | None = None, on_total: Callable[[int], None] | None = None,
           use_cache: bool = True) -> list[ZooEntry]:
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
        out.append(ZooEntry(name, c.get("params"), c.get("gmacs"),
                            tuple(c["input_size"]) if c.get("input_size") else None,
                            sorted(tags.get(name, [])), c.get("error")))
    return out

