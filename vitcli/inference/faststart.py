"""Fast start for `vit predict`: a TorchScript copy of a model that serves without timm.

`import timm` costs 2-4 s on a small CPU (it imports torchvision); a one-image `vit predict` spends most
of its wall time there. After the first run with a model, `remember()` saves a traced copy (same aten
kernels, so the same logits: checked bit for bit before anything is written) with the label names and
the preprocessing, and `lookup()` finds it on later runs using only the standard library and torch.

Cache layout (under `vitcli.env.vit_cache_dir()`):
    exported/<key>/model.pt      TorchScript (torch.jit.trace of the eval-mode model, CPU, in fp32 or
                                 traced under bf16 autocast: the casts are in the graph, and freezing
                                 folds the weights' casts into bf16 constants)
    exported/<key>/meta.json     architecture, data_config, label_names, what the key was made of;
                                 written last, so a folder with meta.json is complete
    exported/index.json          spec -> where its weights live, so a timm name resolves without timm
key = sha256 of (format, sha256 of the weights file, the model's identity (its config.json bytes, or
the timm name), torch version, timm version, the variant: fp32 with or without vitcli/kernels.py's
oneDNN linears, or bf16 autocast). A changed weights file, config, torch, timm, kernel choice or
precision gives another key, so a stale copy is never
used. Set VIT_EXPORT=0 to switch all of this off. The copy is served with vitcli.data.transforms'
`EvalTransform` (PIL and torch only).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from vitcli import env
from vitcli.output import atomic_write

FORMAT = 1
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def export_dir() -> Path:
    return Path(env.vit_cache_dir()) / "exported"


# ----------------------------------------------------------------------------------------------
# Identity of a model spec: weights hash + config, found with the standard library only


@dataclass
class Identity:
    weights: Path
    weights_sha256: str
    model: str  # "config:<sha256 of config.json>" or "timm:<name>"
    where: dict = field(default_factory=dict)  # how to find the weights again (for the index)

    def key(self, torch_version: str, timm_version: str, kernels: str) -> str:
        text = json.dumps([FORMAT, self.weights_sha256, self.model, torch_version, timm_version, kernels])
        return hashlib.sha256(text.encode()).hexdigest()[:32]


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def weights_sha256(path: Path, index: dict | None = None) -> str:
    """sha256 of a weights file: the Hub cache names LFS blobs by it; otherwise hashed once per
    (path, size, mtime) and remembered in the index."""
    real = Path(os.path.realpath(path))
    if _HEX64.match(real.name) and real.parent.name == "blobs":
        return real.name
    st = real.stat()
    stamp = [st.st_size, st.st_mtime_ns]
    hashes = (index or {}).setdefault("hashes", {})
    known = hashes.get(str(real))
    if known and known[:2] == stamp:
        return known[2]
    digest = _sha256_file(real)
    hashes[str(real)] = stamp + [digest]
    return digest


def _hub_cached_file(repo_id: str, revision: str | None, filename: str) -> Path | None:
    """The Hub cache's copy of a file for (repo, revision), as hf_hub_download(local_files_only) finds it."""
    repo_dir = Path(env.hub_cache_dir()) / ("models--" + repo_id.replace("/", "--"))
    revision = revision or "main"
    if re.fullmatch(r"[0-9a-f]{40}", revision):
        commit = revision
    else:
        try:
            commit = (repo_dir / "refs" / revision).read_text().strip()
        except OSError:
            return None
    path = repo_dir / "snapshots" / commit / filename
    return path if path.is_file() else None


def _config_identity(config_path: Path) -> str:
    return "config:" + hashlib.sha256(config_path.read_bytes()).hexdigest()


def identify(spec: str, index: dict) -> Identity | None:
    """The identity of `spec` from files on disk only (no network, no timm); None when unknown."""
    from vitcli.models.resolver import parse_spec

    source = parse_spec(spec)
    if source.kind == "local":
        if source.weights is None or source.weights.suffix != ".safetensors":
            return None
        return Identity(source.weights, weights_sha256(source.weights, index),
                        _config_identity(source.folder / "config.json"))
    if source.kind == "hf-hub":
        weights = _hub_cached_file(source.name, source.revision, "model.safetensors")
        config = _hub_cached_file(source.name, source.revision, "config.json")
        if weights is None or config is None:
            return None
        return Identity(weights, weights_sha256(weights, index), _config_identity(config))
    where = index.get("timm_names", {}).get(f"{spec}|{_timm_version()}")
    if not where:
        return None
    weights = _hub_cached_file(where["repo"], where.get("revision"), where["filename"])
    if weights is None:
        return None
    return Identity(weights, weights_sha256(weights, index), "timm:" + where["name"], where)


def _timm_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("timm")
    except PackageNotFoundError:
        return "none"


def _read_index() -> dict:
    try:
        index = json.loads((export_dir() / "index.json").read_text())
        return index if isinstance(index, dict) and index.get("format") == FORMAT else {"format": FORMAT}
    except (OSError, ValueError):
        return {"format": FORMAT}


# ----------------------------------------------------------------------------------------------
# Lookup (the fast path) and remember (after a normal run)


@dataclass
class ExportedModel:
    """Quacks like vitcli.models.LoadedModel for `vitcli.predict.run`."""

    model: object  # torch.jit.ScriptModule
    architecture: str
    data_config: dict
    label_names: list[str]
    key: str
    precision: str = "fp32"  # bf16: the autocast casts are in the graph; run it outside autocast
    source: object = None
    config: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.label_names)


def variant(precision: str, fused: bool, gemm_attention: bool = False) -> str:
    """What the copy was traced as: 'onednn' / 'eager' (fp32, with or without vitcli's CPU kernels) or
    'bf16-autocast' (+ '-onednn' with the kernels in bf16, + '-gemm-attention' with
    vitcli.inference.attention's)."""
    if precision == "bf16":
        return "bf16-autocast" + ("-onednn" if fused else "") + ("-gemm-attention" if gemm_attention else "")
    return "onednn" if fused else "eager"


def lookup(spec: str, precision: str = "fp32") -> ExportedModel | None:
    """The saved TorchScript copy for `spec` in `precision` (fp32 or bf16), or None (not saved yet,
    stale, or anything odd)."""
    if not env.export_enabled():
        return None
    try:
        import torch

        index = _read_index()
        ident = identify(spec, index)
        if ident is None:
            return None
        from vitcli.inference import kernels

        from vitcli.inference import attention

        fused = kernels.enabled_here(precision)  # what load_predictor would build now
        gemms = precision == "bf16" and fused and attention.wanted()
        folder = export_dir() / ident.key(torch.__version__, _timm_version(), variant(precision, fused, gemms))
        meta = json.loads((folder / "meta.json").read_text())
        if meta.get("weights_sha256") != ident.weights_sha256 or not meta.get("equal_logits"):
            return None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.load is deprecated"
            model = torch.jit.load(str(folder / "model.pt"), map_location="cpu")
        model.eval()
    except Exception:  # noqa: BLE001 - the fast path is an optimisation: any problem means the normal path
        return None
    return ExportedModel(model, meta["architecture"], meta["data_config"], meta["label_names"], folder.name,
                         precision)


def _identity_of_loaded(spec: str, loaded, index: dict) -> Identity | None:
    source = loaded.source
    if source is None or source.weights is None or Path(source.weights).suffix != ".safetensors":
        return None
    if source.kind in ("local", "hf-hub"):
        return Identity(Path(source.weights), weights_sha256(Path(source.weights), index),
                        _config_identity(Path(source.folder) / "config.json"))
    # a timm name: remember which Hub file holds its weights, so the next lookup needs no timm
    real = Path(source.weights)
    parts = real.parts
    if "snapshots" not in parts:
        return None
    i = parts.index("snapshots")
    repo_dir = parts[i - 1]
    if not repo_dir.startswith("models--"):
        return None
    repo_id = repo_dir[len("models--"):].replace("--", "/", 1)
    import timm

    cfg = timm.models.get_pretrained_cfg(loaded.architecture if "." in loaded.architecture else spec)
    revision = None
    if cfg is not None and cfg.hf_hub_id and "@" in cfg.hf_hub_id:
        revision = cfg.hf_hub_id.split("@", 1)[1]
    where = {"name": loaded.architecture, "repo": repo_id, "revision": revision,
             "filename": "/".join(parts[i + 2:])}
    if _hub_cached_file(repo_id, revision, where["filename"]) is None:
        return None
    return Identity(real, weights_sha256(real, index), "timm:" + loaded.architecture, where)


def remember(spec: str, loaded, device, precision: str = "fp32") -> str | None:
    """Save a TorchScript copy of `loaded` for the next cold start; returns the key when one was written.

    Only CPU eval models with fp32 weights, run in fp32 or under bf16 autocast, whose preprocessing
    EvalTransform covers, and only when the traced copy gives exactly the logits of the eager model
    run that way (checked at two batch sizes). Never raises.
    """
    if not env.export_enabled() or getattr(device, "type", str(device)) != "cpu" or isinstance(loaded, ExportedModel) \
            or precision not in ("fp32", "bf16"):
        return None
    try:
        return _remember(spec, loaded, precision)
    except Exception as e:  # noqa: BLE001 - an optimisation must never fail a command
        if env.debug():
            raise
        from vitcli import output

        output.warn(f"could not save a fast-start copy of the model ({type(e).__name__}: {e})")
        return None


def _remember(spec: str, loaded, precision: str) -> str | None:
    import torch

    from vitcli.data.transforms import supports

    if not supports(loaded.data_config):
        return None
    index = _read_index()
    ident = _identity_of_loaded(spec, loaded, index)
    if ident is None:
        return None
    timm_version = _timm_version()
    from vitcli.inference import kernels

    from vitcli.inference import attention

    key = ident.key(torch.__version__, timm_version,
                    variant(precision, kernels.is_fused(loaded.model), attention.is_swapped(loaded.model)))
    folder = export_dir() / key
    names = index.setdefault("timm_names", {})
    changed = bool(ident.where) and names.get(f"{spec}|{timm_version}") != ident.where
    if ident.where:
        names[f"{spec}|{timm_version}"] = ident.where
    if (folder / "meta.json").is_file():
        if changed or index.get("hashes") != _read_index().get("hashes"):
            atomic_write(export_dir() / "index.json", json.dumps(index))
        return None  # already saved (or known not to match)

    start = time.perf_counter()
    model = loaded.model
    params = list(model.parameters())
    if any(p.device.type != "cpu" or p.dtype != torch.float32 for p in params):
        return None
    _, h, w = loaded.data_config["input_size"]
    gen = torch.Generator().manual_seed(0)
    example = torch.randn(2, 3, h, w, generator=gen)
    checks = [torch.randn(1, 3, h, w, generator=gen), torch.randn(3, 3, h, w, generator=gen)]
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # under autocast the tracer records the casts it makes; TorchScript's own autocast pass stays
        # off, so the graph is exactly what eager autocast runs
        jit_autocast = torch._C._jit_set_autocast_mode(False)
        try:
            with autocast:
                traced = torch.jit.trace(model, example, check_trace=False)
        finally:
            torch._C._jit_set_autocast_mode(jit_autocast)
        traced = torch.jit.freeze(traced.eval())
        with torch.jit.optimized_execution(False):
            def eager(x):
                with autocast:
                    return model(x)

            equal = all(torch.equal(eager(x), traced(x)) for x in checks)
    meta = {"format": FORMAT, "spec": spec, "architecture": loaded.architecture,
            "data_config": _plain(loaded.data_config), "label_names": list(loaded.label_names),
            "weights": str(ident.weights), "weights_sha256": ident.weights_sha256, "model": ident.model,
            "torch": torch.__version__, "timm": timm_version, "precision": precision, "equal_logits": bool(equal),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "seconds": round(time.perf_counter() - start, 2)}
    if equal:
        atomic_write(folder / "model.pt", lambda tmp: traced.save(str(tmp)))
    atomic_write(folder / "meta.json", json.dumps(meta))  # last: a folder with meta.json is complete
    atomic_write(export_dir() / "index.json", json.dumps(index))
    from vitcli import output

    if equal:
        output.info(f"[dim]saved a TorchScript copy of the model for a faster start next time "
                    f"({meta['seconds']:.1f} s, once; VIT_EXPORT=0 turns this off)[/]")
    return key if equal else None


def _plain(obj):
    """JSON-able copy of a data config (tuples -> lists)."""
    return json.loads(json.dumps(obj, default=list))
