"""Hugging Face Hub downloads: the standard cache, a rich progress bar per file, offline mode.

timm exposes no progress hook, so model files are fetched here with `hf_hub_download` (which takes a
`tqdm_class`) and timm is then pointed at the local file. A file already in the cache is used without
any network request; `vit download` asks the Hub again and refreshes it.
"""

from __future__ import annotations

import functools
import logging

from vitcli import __version__, env
from vitcli.errors import HubError, caused_by

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def _prepare():
    """Import huggingface_hub with the settings in force now (not those at its first import)."""
    import huggingface_hub
    from huggingface_hub import constants

    constants.HF_HUB_OFFLINE = env.offline()
    constants.HF_HUB_DISABLE_TELEMETRY = True
    if not env.debug():
        logging.getLogger("huggingface_hub").setLevel(logging.ERROR)
    return huggingface_hub


def split_revision(repo: str) -> tuple[str, str | None]:
    """'org/name@rev' -> ('org/name', 'rev')."""
    if "@" in repo:
        repo_id, revision = repo.split("@", 1)
        return repo_id, revision or None
    return repo, None


def _explained(fn):
    """Failures whose cause is known here (offline mode, the endpoint unreachable) become a HubError;
    everything else goes up as it is, for vitcli.errors to describe."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except HubError:
            raise
        except Exception as e:
            if env.offline() and caused_by(
                e, "OfflineModeIsEnabled", "LocalEntryNotFoundError", "IncompleteSnapshotError"
            ):
                import inspect

                call = inspect.signature(fn).bind(*args, **kwargs).arguments
                raise _offline_error(call["repo_id"], call.get("revision"), call.get("refresh", False)) from e
            if caused_by(e, "ConnectError", "ConnectTimeout"):
                raise HubError(
                    f"cannot connect to the Hugging Face Hub at {env.endpoint()}",
                    "check your network or HF_ENDPOINT; with the model cached, add --offline",
                ) from e
            raise

    return wrapper


def _offline_error(repo_id: str, revision: str | None, refresh: bool) -> HubError:
    """Offline and not cached: name the model; `vit download` itself (refresh) is told it needs the network."""
    model = f"hf-hub:{repo_id}" + (f"@{revision}" if revision else "")
    if refresh:
        return HubError(
            f"offline mode is on and {model} is not in the cache: downloading it needs the network",
            "unset HF_HUB_OFFLINE (or set it to 0) and run it again while online",
        )
    return HubError(
        f"offline mode is on and {model} is not in the cache",
        f"run `vit download {model}` once while online (or unset HF_HUB_OFFLINE / drop --offline)",
    )


@_explained
def download_file(repo_id: str, filename: str, revision: str | None = None, refresh: bool = False) -> str:
    """Path of `filename` from the Hub repo, from the cache when it is there (unless `refresh`)."""
    return _download_file(repo_id, filename, revision, refresh)


def _download_file(repo_id: str, filename: str, revision: str | None, refresh: bool) -> str:
    hf = _prepare()
    kwargs = dict(
        repo_id=repo_id,
        filename=filename,
        revision=revision,
        cache_dir=env.hub_cache_dir(),
        library_name="vitcli",
        library_version=__version__,
    )
    if not refresh or env.offline():
        try:
            return hf.hf_hub_download(**kwargs, local_files_only=True)
        except Exception as e:  # not cached: fall through to a real download
            if env.offline():
                raise
            if type(e).__name__ not in {"LocalEntryNotFoundError", "IncompleteSnapshotError", "OfflineModeIsEnabled"}:
                raise
    from vitcli.output import RichTqdm

    check_reachable()
    remove_stale_partials(repo_id)
    return hf.hf_hub_download(**kwargs, endpoint=env.endpoint(), tqdm_class=RichTqdm.named(filename))


STALE_PARTIAL_S = 600  # a download in progress writes its partial file all the time


def remove_stale_partials(repo_id: str) -> list[str]:
    """Delete the partial files a killed download left in the repo's cache.

    huggingface_hub 2.x downloads into a process-unique `<blob>.<id>.incomplete` file and, on purpose
    (shared partial files corrupted caches on some network file systems), never resumes another
    process's: a killed download starts over and its partial file stays for ever. Those untouched for
    10 minutes belong to no running download; they go, so a cache does not fill up with them.
    """
    import time
    from pathlib import Path

    blobs = Path(env.hub_cache_dir()) / ("models--" + repo_id.replace("/", "--")) / "blobs"
    removed = []
    for partial in blobs.glob("*.incomplete") if blobs.is_dir() else ():
        try:
            if time.time() - partial.stat().st_mtime > STALE_PARTIAL_S:
                partial.unlink()
                removed.append(partial.name)
        except OSError:
            continue
    return removed


def check_reachable(timeout: float = 5.0) -> None:
    """Fail at once when nothing answers at the Hub's address.

    With no cached copy, huggingface_hub retries a failed connection 5 times with backoff (1+2+4+8+8 s):
    a refused connection or an unknown host then costs 23 s per file, 46 s for `vit predict` (weights,
    then the pickle fallback), before the same error. Those do not heal in seconds, so one TCP connect
    decides first; anything that does answer gets huggingface_hub's retries.
    """
    import socket
    from urllib.parse import urlsplit

    endpoint = env.endpoint()
    url = urlsplit(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname or "", port), timeout=timeout).close()
    except OSError as e:
        if isinstance(e, TimeoutError):
            reason = f"no answer within {timeout:g} s"
        else:
            reason = str(e) if not isinstance(e, socket.gaierror) else f"unknown host {url.hostname}: {e.strerror}"
        raise HubError(
            f"cannot connect to the Hugging Face Hub at {endpoint} ({reason})",
            "check your network or HF_ENDPOINT; with the model cached, add --offline",
        ) from e


@_explained
def download_weights(repo_id: str, revision: str | None = None, refresh: bool = False) -> str:
    """The repo's weights: model.safetensors, else pytorch_model.bin (loaded later with weights_only)."""
    last = None
    for name in WEIGHT_FILES:
        try:
            return _download_file(repo_id, name, revision, refresh)
        except Exception as e:
            if not _is_missing_entry(e):
                raise
            last = e
    raise last  # type: ignore[misc]


def _is_missing_entry(e: BaseException) -> bool:
    """The Hub has no such file (or, offline, the cache has none): try the next weights file. A file that
    could not be fetched because the connection failed is not missing: that error goes up as it is."""
    names = {c.__name__ for c in type(e).__mro__}
    if "RemoteEntryNotFoundError" in names:
        return True
    return "LocalEntryNotFoundError" in names and not caused_by(
        e, "ConnectError", "TimeoutException", "NetworkError", "HfHubHTTPError"
    )
