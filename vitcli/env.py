"""The one reader of the environment: vitcli's own VIT_* settings and the variables of the libraries it
honours (Hugging Face, torchrun). Standard library only.

Every value is read when it is asked for, never cached at import, so `--offline` or a changed
environment takes effect even after huggingface_hub was imported in the same process (it reads its own
variables once). A value that cannot be understood is a `UsageError` naming the variable and what it
accepts; nothing falls back silently.

    VIT_DEBUG=1              tracebacks for every error, normal interpreter exit
    VIT_PROGRESS=0|1         progress bars off / on (default: on when stderr is a terminal)
    VIT_CACHE=DIR            vitcli's cache (default ~/.cache/vitcli): fast-start copies, features, zoo
    VIT_MAX_IMAGE_PIXELS=N   the decompression-bomb limit for one image (default: PIL's, 89 478 485)
    VIT_EXPORT=0             `vit download` / `vit export` make no fast-start copy
    VIT_KERNELS=0|1|auto     the CPU oneDNN linears: off, on without measuring, or where measured faster
    VIT_COMPILE=0|1          torch.compile for every inference job, as --compile (default 0)
    VIT_BACKEND=torch|onnx   what serves predict/eval: the torch model, or its fast-start ONNX copy (--backend)
    VIT_RECIPE=NAME          the training recipe when --recipe is not given
    HF_HUB_OFFLINE (TRANSFORMERS_OFFLINE), HF_ENDPOINT, HF_HUB_CACHE, HF_DATASETS_CACHE, HF_HOME, XDG_CACHE_HOME
    RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, GROUP_RANK, GROUP_WORLD_SIZE, MASTER_ADDR, MASTER_PORT,
    TORCHELASTIC_RUN_ID, TORCHELASTIC_RESTART_COUNT, TORCHELASTIC_ERROR_FILE (set by torchrun)
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from vitcli.errors import UsageError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
DEFAULT_MAX_PIXELS = 89_478_485  # PIL's own default limit
DEFAULT_ENDPOINT = "https://huggingface.co"


def _get(name: str) -> str | None:
    value = os.environ.get(name)
    return None if value is None or not value.strip() else value.strip()


def _flag(name: str, default: bool) -> bool:
    value = _get(name)
    if value is None:
        return default
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise UsageError(f"{name}={value!r} is not a yes/no value", f"set {name} to 1 or 0 (or unset it)")


def _int(name: str, default: int, minimum: int = 1) -> int:
    value = _get(name)
    if value is None:
        return default
    try:
        number = int(value.replace("_", ""))
    except ValueError:
        raise UsageError(f"{name}={value!r} is not a whole number", f"e.g. {name}={default}") from None
    if number < minimum:
        raise UsageError(f"{name}={value!r} is below {minimum}", f"e.g. {name}={default}")
    return number


# ------------------------------------------------------------------------------------------ vitcli
def debug() -> bool:
    """VIT_DEBUG: show tracebacks. Lenient on purpose: it is read while an error is being reported."""
    return (_get("VIT_DEBUG") or "").lower() in _TRUE


def progress() -> bool | None:
    """VIT_PROGRESS: True / False when set, None to decide by whether stderr is a terminal."""
    return None if _get("VIT_PROGRESS") is None else _flag("VIT_PROGRESS", False)


def max_image_pixels() -> int:
    return _int("VIT_MAX_IMAGE_PIXELS", DEFAULT_MAX_PIXELS)


def export_enabled() -> bool:
    return _flag("VIT_EXPORT", True)


def kernels() -> str:
    """VIT_KERNELS: 'auto' (where measured faster), 'on' (without measuring) or 'off'."""
    value = _get("VIT_KERNELS")
    if value is None or value.lower() == "auto":
        return "auto"
    return "on" if _flag("VIT_KERNELS", False) else "off"


def compile_requested() -> bool:
    """VIT_COMPILE=1: every inference job compiled, as `--compile` asks (default off)."""
    return _flag("VIT_COMPILE", False)


def backend() -> str:
    """VIT_BACKEND: 'torch' (default) or 'onnx' (the fast-start ONNX copy, as `--backend onnx` asks)."""
    value = (_get("VIT_BACKEND") or "torch").lower()
    if value not in ("torch", "onnx"):
        raise UsageError(f"VIT_BACKEND={value!r} is not a backend", "use torch or onnx")
    return value


def use_compile_cache(inductor_default: str | None = None) -> str:
    """torch.compile's artefacts (inductor's FX graph cache) in vitcli's cache, VIT_CACHE/inductor,
    unless TORCHINDUCTOR_CACHE_DIR says where; the directory used. Inductor writes its own default
    (`inductor_default`, /tmp/torchinductor_USER) into the variable when torch loads it, so that value
    counts as unset."""
    current = _get("TORCHINDUCTOR_CACHE_DIR")
    if current is None or (inductor_default and os.path.abspath(current) == os.path.abspath(inductor_default)):
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(vit_cache_dir(), "inductor")
    return os.environ["TORCHINDUCTOR_CACHE_DIR"]


def recipe(choices) -> str | None:
    value = _get("VIT_RECIPE")
    if value is not None and value not in choices:
        raise UsageError(f"VIT_RECIPE={value!r} is not a recipe", f"use one of {', '.join(choices)}")
    return value


def vit_cache_dir() -> str:
    """vitcli's own cache (fast-start copies, few-shot features, zoo counts): VIT_CACHE or ~/.cache/vitcli."""
    return os.path.expanduser(_get("VIT_CACHE") or os.path.join(_xdg_cache(), "vitcli"))


def _xdg_cache() -> str:
    return _get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")


# ------------------------------------------------------------------------------------------ the Hub
def offline() -> bool:
    return (_get("HF_HUB_OFFLINE") or _get("TRANSFORMERS_OFFLINE") or "").lower() in _TRUE


def set_offline(flag: bool) -> None:
    """`--offline`: offline mode for this process and anything it imports later."""
    if flag:
        os.environ["HF_HUB_OFFLINE"] = "1"


def endpoint() -> str:
    """HF_ENDPOINT (default huggingface.co), checked to be an http(s) URL with a host and a valid port."""
    value = (_get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
    url = urlsplit(value)
    try:
        port = url.port
    except ValueError:
        port = -1
    if url.scheme not in ("http", "https") or not url.hostname or port == -1:
        raise UsageError(
            f"HF_ENDPOINT={value!r} is not an http(s) URL with a host (and a port of 1-65535)",
            f"e.g. HF_ENDPOINT={DEFAULT_ENDPOINT}, or unset it",
        )
    return value


def _hf_home() -> str:
    return os.path.expanduser(_get("HF_HOME") or os.path.join(_xdg_cache(), "huggingface"))


def hub_cache_dir() -> str:
    if _get("HF_HUB_CACHE"):
        return os.path.expanduser(_get("HF_HUB_CACHE"))
    return os.path.join(_hf_home(), "hub")


def datasets_cache_dir() -> str:
    """Where `datasets` keeps what `--dataset hf:NAME` prepared: HF_DATASETS_CACHE, else HF_HOME/datasets
    (read now, not when `datasets` was imported)."""
    if _get("HF_DATASETS_CACHE"):
        return os.path.expanduser(_get("HF_DATASETS_CACHE"))
    return os.path.join(_hf_home(), "datasets")


# ------------------------------------------------------------------------------------------ torchrun
def dist() -> tuple[int, int, int]:
    """(rank, world size, local rank) as torchrun sets them; (0, 1, 0) for a plain process."""
    return (_int("RANK", 0, minimum=0), _int("WORLD_SIZE", 1), _int("LOCAL_RANK", 0, minimum=0))


def torchrun() -> dict:
    """The rest of what torchrun tells a process about the world: its node (GROUP_RANK of
    GROUP_WORLD_SIZE), the processes per node (LOCAL_WORLD_SIZE), the rendezvous (MASTER_ADDR:MASTER_PORT)
    and the job (TORCHELASTIC_RUN_ID, restarts); None for what is not set."""
    rank, world, local = dist()
    local_world = _int("LOCAL_WORLD_SIZE", 1)
    return {
        "rank": rank,
        "world": world,
        "local_rank": local,
        "local_world": local_world,
        "node": _int("GROUP_RANK", 0, minimum=0),
        "nodes": _int("GROUP_WORLD_SIZE", max(1, world // max(local_world, 1))),
        "master": f"{_get('MASTER_ADDR')}:{_get('MASTER_PORT')}" if _get("MASTER_ADDR") else None,
        "run_id": _get("TORCHELASTIC_RUN_ID"),
        "restart": _int("TORCHELASTIC_RESTART_COUNT", 0, minimum=0),
        "error_file": _get("TORCHELASTIC_ERROR_FILE"),
    }
