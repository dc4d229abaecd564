"""`vit info`: what this machine is and what vitcli will do on it, and why (like `yolo checks` and
`huggingface-cli env`).

Versions (read from the installed packages' metadata), the devices, the CPU's features that decide a
speed choice, the choice each command makes at its defaults with the reason, the recorded measurements
behind those choices (vitcli.accel.cache) with their dates, and the caches with their paths and sizes.
`clear_cache()` empties what vitcli itself cached (measurements, fast-start copies, few-shot features,
inductor's artefacts, the model zoo's counts); the Hugging Face cache and downloaded datasets stay.
"""

from __future__ import annotations

import os
import platform
import shutil
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

PACKAGES = (
    "torch",
    "torchvision",
    "timm",
    "huggingface-hub",
    "safetensors",
    "onnxruntime",
    "onnx",
    "typer",
    "rich",
    "pillow",
    "numpy",
)
CPU_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8", "bf16", "asimd")
VITCLI_CACHES = ("exported", "features", "inductor", "zoo")  # what --clear-cache removes, with the measurements


def _version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def caches() -> list[dict]:
    from vitcli import env
    from vitcli.accel import cache

    base = Path(env.vit_cache_dir())
    rows = [
        ("measurements", cache.path()),
        ("fast-start copies", base / "exported"),
        ("few-shot features", base / "features"),
        ("inductor (torch.compile)", base / "inductor"),
        ("model zoo counts", base / "zoo"),
        ("datasets", base / "datasets"),
        ("Hugging Face hub", Path(env.hub_cache_dir())),
    ]
    return [
        {"name": name, "path": str(path), "exists": path.exists(), "bytes": _size(path) if path.exists() else 0}
        for name, path in rows
    ]


def choices(device: str = "auto") -> list[dict]:
    """What a command at its defaults uses here, and why (measures what is not yet recorded)."""
    from vitcli import env
    from vitcli.accel import attention, kernels, precision
    from vitcli.accel.runtime import resolve_device

    dev = resolve_device(device)
    prec, why = precision.auto(dev)
    rows = [
        {"choice": "device", "value": str(dev), "why": "auto: cuda, then mps, then cpu"},
        {"choice": "precision", "value": prec, "why": why},
    ]
    if dev.type == "cpu":
        setting = env.kernels()
        if setting == "off":
            linears = ("eager", "VIT_KERNELS=0")
        elif not kernels.available() or not kernels.works_here(prec if prec == "bf16" else "fp32"):
            linears = ("eager", "oneDNN's fused linear is not available in this torch build / CPU")
        elif setting == "on":
            linears = (f"onednn {prec}", "VIT_KERNELS=1 (not measured)")
        else:
            faster = kernels.faster_here(prec if prec == "bf16" else "fp32")
            linears = (
                f"onednn {prec}" if faster else "eager",
                f"oneDNN fused linear measured {'faster' if faster else 'not faster'} than torch's here",
            )
        rows.append({"choice": "linears (inference; training in fp32)", "value": linears[0], "why": linears[1]})
        if prec == "bf16":
            math = attention.math_faster_here(training=False)
            rows.append(
                {
                    "choice": "attention (bf16)",
                    "value": "math" if math else "fused",
                    "why": f"timm's non-fused path measured {'faster' if math else 'not faster'} here",
                }
            )
            rows.append({"choice": "classifier", "value": "fp32", "why": "bf16 logits tie and swap near-equal classes"})
        rows.append(
            {
                "choice": "channels_last",
                "value": "per model",
                "why": "measured once per convolutional architecture (ViTs: never)",
            }
        )
    rows.append(
        {
            "choice": "compile",
            "value": "on" if env.compile_requested() else "off",
            "why": "only with --compile or VIT_COMPILE=1 (compiled numbers round differently)",
        }
    )
    rows.append(
        {
            "choice": "backend",
            "value": env.backend(),
            "why": "torch unless --backend onnx / VIT_BACKEND=onnx asks for the fast-start copy",
        }
    )
    return rows


def info(device: str = "auto") -> dict:
    """Everything `vit info` shows."""
    import torch

    from vitcli import __version__, env
    from vitcli.accel import cache

    name, flags = cache.cpuinfo()
    devices = {
        "cuda": torch.cuda.is_available(),
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "mps": bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()),
    }
    measured_before = set(cache.entries())
    rows = choices(device)
    measurements = [{"key": key, **entry, "new": key not in measured_before} for key, entry in cache.entries().items()]
    settings = {
        k: v
        for k, v in sorted(os.environ.items())
        if k.startswith("VIT_")
        or k in ("HF_HUB_OFFLINE", "HF_ENDPOINT", "HF_HOME", "HF_HUB_CACHE", "TORCHINDUCTOR_CACHE_DIR")
    }
    return {
        "vitcli": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": {p: _version(p) for p in PACKAGES},
        "devices": devices,
        "cpu": {
            "name": name or platform.machine(),
            "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "features": [f for f in CPU_FEATURES if f in flags],
            "onednn": torch.backends.mkldnn.is_available(),
        },
        "choices": rows,
        "measurements": measurements,
        "cache_dir": env.vit_cache_dir(),
        "caches": caches(),
        "settings": settings,
    }


def clear_cache() -> list[dict]:
    """Remove vitcli's own cached files (see the module docstring); what was removed, with sizes."""
    from vitcli import env
    from vitcli.accel import cache

    removed = []
    targets = [cache.path()] + [Path(env.vit_cache_dir()) / name for name in VITCLI_CACHES]
    for path in targets:
        if not path.exists():
            continue
        size = _size(path)
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
        removed.append({"path": str(path), "bytes": size})
    return removed
