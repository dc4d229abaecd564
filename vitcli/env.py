"""Hub settings read from the environment at call time (stdlib only).

huggingface_hub reads HF_ENDPOINT, HF_HUB_OFFLINE and HF_HUB_CACHE once, when it is imported. We read
them whenever they are needed and pass them explicitly, so `--offline` and a changed environment take
effect even when huggingface_hub was imported earlier in the same process.
"""

from __future__ import annotations

import os

_TRUE = {"1", "true", "yes", "on"}


def offline() -> bool:
    return (os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or "").lower() in _TRUE


def set_offline(flag: bool) -> None:
    """Turn offline mode on for this process (and anything it imports later)."""
    if flag:
        os.environ["HF_HUB_OFFLINE"] = "1"


def endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def cache_dir() -> str:
    if os.environ.get("HF_HUB_CACHE"):
        return os.path.expanduser(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface")
    return os.path.join(os.path.expanduser(home), "hub")


def vit_cache_dir() -> str:
    """vitcli's own cache (datasets, exported models): VIT_CACHE or ~/.cache/vitcli."""
    return os.path.expanduser(os.environ.get("VIT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "vitcli"))
