"""Fast start for `vit predict --backend onnx`: an ONNX copy of a model, served by onnxruntime without
torch or timm.

`import torch` costs 1.3 s and `import timm` 2-4 s on a small CPU; a one-image `vit predict` spends most
of its wall time there. `vit download MODEL` (and `vit export`) also writes an ONNX copy of the model
here (`save`, checked against the torch model before it is kept: the dynamo exporter takes 10-40 s, so
it is done then, never in the middle of a user's predict) and says so; `lookup()` finds it with the
standard library, then onnxruntime (vitcli.inference.onnx), when a command is asked to use it
(`--backend onnx`, VIT_BACKEND=onnx). It is never picked because it happens to exist: a copy made by
another process must not change the answers of the next command.

Cache layout (under `vitcli.env.vit_cache_dir()`):
    exported/<key>/model.onnx    the model (fp32, dynamic batch), its metadata inside
    exported/<key>/meta.json     what the key was made of; written last, so a folder with it is complete
    exported/index.json          spec -> where its weights live, so a timm name resolves without timm
key = sha256 of (format, sha256 of the weights file, the model's identity (its config.json bytes, or
the timm name), timm version). A changed weights file, config or timm gives another key, so a stale
copy is never used. Set VIT_EXPORT=0 to switch all of this off.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from vitcli import env
from vitcli.output import atomic_write

FORMAT = 2
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

    def key(self, timm_version: str) -> str:
        text = json.dumps([FORMAT, self.weights_sha256, self.model, timm_version])
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
        return Identity(
            source.weights, weights_sha256(source.weights, index), _config_identity(source.folder / "config.json")
        )
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
# Lookup (the fast path) and save (at download / export time)


def lookup(spec: str):
    """The ONNX copy of `spec` as a vitcli.inference.onnx.OnnxModel, or None (none saved, stale, no
    onnxruntime, or anything odd: the normal path then serves)."""
    if not env.export_enabled():
        return None
    try:
        index = _read_index()
        ident = identify(spec, index)
        if ident is None:
            return None
        folder = export_dir() / ident.key(_timm_version())
        meta = json.loads((folder / "meta.json").read_text())
        if meta.get("weights_sha256") != ident.weights_sha256:
            return None
        from vitcli.export.onnx_model import OnnxModel

        return OnnxModel(folder / "model.onnx")
    except Exception:  # noqa: BLE001 - the fast path is an optimisation
        return None


def _identity_of_loaded(spec: str, loaded, index: dict) -> Identity | None:
    source = loaded.source
    if source is None or source.weights is None or Path(source.weights).suffix != ".safetensors":
        return None
    if source.kind in ("local", "hf-hub"):
        return Identity(
            Path(source.weights),
            weights_sha256(Path(source.weights), index),
            _config_identity(Path(source.folder) / "config.json"),
        )
    # a timm name: remember which Hub file holds its weights, so the next lookup needs no timm
    real = Path(source.weights)
    parts = real.parts
    if "snapshots" not in parts:
        return None
    i = parts.index("snapshots")
    repo_dir = parts[i - 1]
    if not repo_dir.startswith("models--"):
        return None
    repo_id = repo_dir[len("models--") :].replace("--", "/", 1)
    import timm

    cfg = timm.models.get_pretrained_cfg(loaded.architecture if "." in loaded.architecture else spec)
    revision = None
    if cfg is not None and cfg.hf_hub_id and "@" in cfg.hf_hub_id:
        revision = cfg.hf_hub_id.split("@", 1)[1]
    where = {"name": loaded.architecture, "repo": repo_id, "revision": revision, "filename": "/".join(parts[i + 2 :])}
    if _hub_cached_file(repo_id, revision, where["filename"]) is None:
        return None
    return Identity(real, weights_sha256(real, index), "timm:" + loaded.architecture, where)


def save(spec: str, loaded, onnx_file: Path | None = None) -> Path | None:
    """Write the ONNX copy of `loaded` for `spec`'s fast start; the copy's path, or None when it cannot
    be made (preprocessing EvalTransform does not cover, weights that are not a safetensors file, a
    full disk, no exporter). Never raises: an optimisation must never fail a command."""
    if not env.export_enabled():
        return None
    try:
        return _save(spec, loaded, onnx_file)
    except Exception as e:
        if env.debug():
            raise
        from vitcli import output

        output.warn(f"could not save a fast-start copy of the model ({type(e).__name__}: {str(e)[:200]})")
        return None


def _save(spec: str, loaded, onnx_file: Path | None) -> Path | None:
    import torch

    from vitcli.data.transforms import supports
    from vitcli.export import onnx_file as export

    if not supports(loaded.data_config):
        return None
    index = _read_index()
    ident = _identity_of_loaded(spec, loaded, index)
    if ident is None:
        return None
    timm_version = _timm_version()
    folder = export_dir() / ident.key(timm_version)
    if ident.where:
        index.setdefault("timm_names", {})[f"{spec}|{timm_version}"] = ident.where
    atomic_write(export_dir() / "index.json", json.dumps(index))
    if (folder / "meta.json").is_file():
        return folder / "model.onnx"
    model = loaded.model.eval().cpu().float()
    if not _room_for(folder, 3 * 4 * sum(p.numel() for p in model.parameters()) + (16 << 20)):
        return None
    started = time.perf_counter()
    _, h, w = loaded.data_config["input_size"]
    example = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(0))
    if onnx_file is None:
        export.to_onnx(model, example, folder / "model.onnx", export.metadata(loaded, loaded.data_config))
    else:  # the file `vit export` just made and checked: the same graph
        import shutil

        atomic_write(folder / "model.onnx", lambda tmp: shutil.copyfile(onnx_file, tmp))
    diff = export.check_onnx(model, folder / "model.onnx", example, dynamic_batch=True)
    if not diff <= export.TOLERANCE:
        (folder / "model.onnx").unlink(missing_ok=True)
        return None
    meta = {
        "format": FORMAT,
        "spec": spec,
        "architecture": loaded.architecture,
        "weights": str(ident.weights),
        "weights_sha256": ident.weights_sha256,
        "model": ident.model,
        "timm": timm_version,
        "max_abs_diff": diff,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "seconds": round(time.perf_counter() - started, 1),
    }
    atomic_write(folder / "meta.json", json.dumps(meta))  # last: a folder with meta.json is complete
    return folder / "model.onnx"


def _room_for(folder: Path, size: int) -> bool:
    """Whether the cache's disk has `size` bytes free (twice the copy: the temporary file, then the copy)."""
    import shutil

    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return shutil.disk_usage(probe).free >= size
    except OSError:
        return False
