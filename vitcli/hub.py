"""Hugging Face Hub downloads: the standard cache, a rich progress bar per file, offline mode.

timm exposes no progress hook, so model files are fetched here with `hf_hub_download` (which takes a
`tqdm_class`) and timm is then pointed at the local file. A file already in the cache is used without
any network request; `vit download` asks the Hub again and refreshes it.
"""

from __future__ import annotations

import logging
import os

from vitcli import __version__, hub_env

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def _prepare():
    """Import huggingface_hub with the settings in force now (not those at its first import)."""
    import huggingface_hub
    from huggingface_hub import constants

    constants.HF_HUB_OFFLINE = hub_env.offline()
    constants.HF_HUB_DISABLE_TELEMETRY = True
    if os.environ.get("VIT_DEBUG") != "1":
        logging.getLogger("huggingface_hub").setLevel(logging.ERROR)
    return huggingface_hub


def split_revision(repo: str) -> tuple[str, str | None]:
    """'org/name@rev' -> ('org/name', 'rev')."""
    if "@" in repo:
        repo_id, revision = repo.split("@", 1)
        return repo_id, revision or None
    return repo, None


def download_file(repo_id: str, filename: str, revision: str | None = None, refresh: bool = False) -> str:
    """Path of `filename` from the Hub repo, from the cache when it is there (unless `refresh`)."""
    hf = _prepare()
    kwargs = dict(repo_id=repo_id, filename=filename, revision=revision, cache_dir=hub_env.cache_dir(),
                  library_name="vitcli", library_version=__version__)
    if not refresh or hub_env.offline():
        try:
            return hf.hf_hub_download(**kwargs, local_files_only=True)
        except Exception as e:  # not cached: fall through to a real download
            if hub_env.offline():
                raise
            if type(e).__name__ not in {"LocalEntryNotFoundError", "IncompleteSnapshotError",
                                        "OfflineModeIsEnabled"}:
                raise
    from vitcli.output import RichTqdm

    return hf.hf_hub_download(**kwargs, endpoint=hub_env.endpoint(), tqdm_class=RichTqdm.named(filename))


def download_weights(repo_id: str, revision: str | None = None, refresh: bool = False) -> str:
    """The repo's weights: model.safetensors, else pytorch_model.bin (loaded later with weights_only)."""
    last = None
    for name in WEIGHT_FILES:
        try:
            return download_file(repo_id, name, revision, refresh=refresh)
        except Exception as e:
            if not _is_missing_entry(e):
                raise
            last = e
    raise last  # type: ignore[misc]


def _is_missing_entry(e: BaseException) -> bool:
    names = {c.__name__ for c in type(e).__mro__}
    return bool(names & {"RemoteEntryNotFoundError", "LocalEntryNotFoundError"})
