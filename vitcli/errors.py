"""Errors a user can fix, and the one place that turns any exception into one line on stderr.

Core code raises a `VitError` (message + hint). Known library exceptions (Hub, HTTP, PIL, CUDA
out-of-memory) are translated here too, by name and module, so this module imports nothing heavy.
"""

from __future__ import annotations

import errno
import os
import sys
from dataclasses import dataclass


class VitError(Exception):
    """An error the user can fix: one line of message, one line of hint, an exit code."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsageError(VitError):
    """Bad usage (wrong option combination, nothing to do): exit 2."""

    exit_code = 2


class ModelError(VitError):
    """The model could not be resolved, downloaded or loaded."""


class HubError(ModelError):
    """A Hugging Face Hub download failed (offline, not found, connection)."""


class DataError(VitError):
    """A dataset or input file is missing or malformed."""


class ImageError(VitError):
    """One image could not be read: `path` (as shown to the user) and `reason`; the message is both."""

    def __init__(self, path: str, reason: str, hint: str | None = None):
        super().__init__(f"{path}: {reason}", hint)
        self.path = path
        self.reason = reason


@dataclass
class Failure:
    message: str
    hint: str | None
    exit_code: int


def _chain(exc: BaseException):
    """The exception and its causes, outermost first."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def caused_by(exc: BaseException, *names: str) -> bool:
    """Whether `exc` or anything in its cause chain is (a subclass of) a class named in `names`."""
    return any(_names(e) & set(names) for e in _chain(exc))


def _hub_failure(exc: BaseException) -> Failure | None:
    """Translate huggingface_hub / httpx errors, looking through the cause chain for the real reason."""
    chain = list(_chain(exc))
    names = [(_names(e), e) for e in chain]

    def find(*wanted):
        for n, e in names:
            if n & set(wanted):
                return e
        return None

    if e := find("RepositoryNotFoundError", "GatedRepoError"):
        repo = getattr(e, "repo_id", None) or _url_repo(e)
        return Failure(
            f"model repository {repo or ''} was not found on the Hub (or it is private/gated)".replace("  ", " "),
            "check the name (`vit models PATTERN` lists timm's), or log in with `hf auth login` for private repos",
            1,
        )
    if e := find("RevisionNotFoundError"):
        return Failure(
            "that revision (branch, tag or commit) does not exist in the model repository",
            "check the part after '@' in the model id, or drop it to use 'main'",
            1,
        )
    if e := find("RemoteEntryNotFoundError"):
        return Failure(
            f"the model repository has no file {_url_file(e) or 'of that name'}",
            "the repository may not hold timm weights; try another revision or model",
            1,
        )
    if e := find("ConnectError", "ConnectTimeout"):
        return Failure(
            f"cannot connect: {_first_line(e)}",
            "check your network (and HF_ENDPOINT); with the model cached, add --offline",
            1,
        )
    if e := find("RemoteProtocolError", "ReadError", "ReadTimeout", "TimeoutException", "NetworkError"):
        return Failure(
            f"the download was interrupted: {_first_line(e)}",
            "run the command again: finished files are kept and the download resumes",
            1,
        )
    if find("LocalEntryNotFoundError"):
        return Failure(
            "the model could not be downloaded and is not in the cache",
            "check your network or HF_ENDPOINT, or run `vit download MODEL` while online",
            1,
        )
    if e := find("HfHubHTTPError"):
        return Failure(
            f"the Hub answered with an error: {_first_line(e)}", "try again later; set VIT_DEBUG=1 for details", 1
        )
    if e := find("ConsistencyError") or (isinstance(exc, OSError) and "Consistency check failed" in str(exc) and exc):
        return Failure(
            "a downloaded file is incomplete (the connection dropped)",
            "run the command again to resume the download",
            1,
        )
    return None


def _url_repo(e) -> str | None:
    resp = getattr(e, "response", None)
    url = str(getattr(getattr(resp, "request", None), "url", "") or "")
    if "/resolve/" in url:
        return "/".join(url.split("/resolve/")[0].rstrip("/").split("/")[-2:])
    return None


def _url_file(e) -> str | None:
    resp = getattr(e, "response", None)
    url = str(getattr(getattr(resp, "request", None), "url", "") or "")
    if "/resolve/" in url:
        return url.split("/resolve/")[1].split("/", 1)[-1]
    return None


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def describe(exc: BaseException) -> Failure | None:
    """One-line description of an exception a user can act on, or None for a real bug."""
    if isinstance(exc, VitError):
        return Failure(exc.message, exc.hint, exc.exit_code)
    if isinstance(exc, KeyboardInterrupt):
        return Failure("interrupted", None, 130)
    hub = _hub_failure(exc)
    if hub is not None:
        return hub
    names = _names(exc)
    if "OutOfMemoryError" in names or "out of memory" in str(exc).lower() and "CUDA" in str(exc):
        return Failure(
            "the GPU ran out of memory",
            "lower --batch-size (training: raise --accum to keep the global batch), or use --precision bf16",
            1,
        )
    if isinstance(exc, MemoryError) or "can't allocate memory" in str(exc) or "not enough memory" in str(exc):
        return Failure(
            "out of memory",
            "lower --batch-size (training: raise --accum to keep the global batch), or close other programs",
            1,
        )
    full = next((e for e in _chain(exc) if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)), None)
    rust = _rust_errno(exc)  # safetensors (Rust) says "I/O error: ... (os error 28)", not an OSError
    if full is not None or "PytorchStreamWriter failed writing" in str(exc) or rust in (errno.ENOSPC, errno.EDQUOT):
        where = f" while writing {full.filename}" if full is not None and full.filename else ""
        return Failure(
            f"no space left on the device{where}",
            "free some space (or point VIT_CACHE, HF_HOME or --project elsewhere) and run again; "
            "files already finished are kept",
            1,
        )
    if "DecompressionBombError" in names:
        return Failure(_first_line(exc), "raise the limit with VIT_MAX_IMAGE_PIXELS if you trust the file", 1)
    if "UnidentifiedImageError" in names:
        return Failure(_first_line(exc), "the file is not an image PIL can read", 1)
    if isinstance(exc, FileNotFoundError):
        return Failure(f"file not found: {exc.filename or _first_line(exc)}", None, 1)
    if isinstance(exc, PermissionError):
        return Failure(f"permission denied: {exc.filename or _first_line(exc)}", None, 1)
    if isinstance(exc, IsADirectoryError):
        return Failure(f"{exc.filename} is a folder, not a file", None, 1)
    return _os_failure(exc)


# errno -> (what happened, what to do): every OSError a user can meet is one line, whatever raised it
_ERRNO = {
    errno.EROFS: ("the file system is read-only", "write somewhere else (another -o, --out-dir or --project)"),
    errno.EACCES: ("permission denied", "check the folder's permissions, or write somewhere else"),
    errno.EPERM: ("operation not permitted", "check the folder's permissions, or write somewhere else"),
    errno.ENOTDIR: ("a part of the path is a file, not a folder", "check the path"),
    errno.EISDIR: ("is a folder, not a file", "give a file name"),
    errno.EEXIST: ("already exists", "remove it or pick another name"),
    errno.ENAMETOOLONG: ("the file name is too long", "use a shorter name"),
    errno.ELOOP: ("too many levels of symbolic links", "check the links in the path"),
    errno.EMFILE: ("too many open files", "raise the limit (ulimit -n) or lower --workers"),
    errno.ENFILE: ("too many open files on the system", "close other programs and run again"),
    errno.EIO: ("an input/output error (the disk or the network file system)", "check the device and run again"),
    errno.EXDEV: ("cannot move a file across file systems", "keep the output on one file system"),
    errno.EBADF: ("a file descriptor is closed", "run it with stdin, stdout and stderr open"),
    errno.ENXIO: ("no such device", "check the path"),
    errno.ENODEV: ("no such device", "check the path"),
    errno.ETXTBSY: ("the file is busy", "run again when the other program is done with it"),
}


def _rust_errno(exc: BaseException) -> int | None:
    """The errno a Rust library (safetensors) names in its message: `... (os error 30)`."""
    import re

    for e in _chain(exc):
        found = re.search(r"\(os error (\d+)\)", str(e))
        if found:
            return int(found.group(1))
    return None


def _os_failure(exc: BaseException) -> Failure | None:
    """Any OSError with an errno (first in the cause chain), or an errno a Rust library's message names:
    one line naming the file."""
    e = next((e for e in _chain(exc) if isinstance(e, OSError) and isinstance(e.errno, int)), None)
    if e is None and _rust_errno(exc) is not None:
        e = OSError(_rust_errno(exc), os.strerror(_rust_errno(exc)))
    if e is None:
        return None
    what, hint = _ERRNO.get(e.errno, (e.strerror or errno.errorcode.get(e.errno, f"OS error {e.errno}"), None))
    where = f": {e.filename}" if e.filename else ""
    return Failure(f"{what}{where}", hint, 1)


def report(exc: BaseException, debug: bool = False, stream=None) -> int:
    """Print one line (plus a hint) for `exc` on stderr and return the exit code.

    Unknown exceptions are bugs: they keep their traceback. `debug` (VIT_DEBUG=1) shows every traceback.
    """
    import traceback

    stream = stream or sys.stderr
    failure = describe(exc)
    if debug or failure is None:
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=stream)
        if failure is None:
            print("error: unexpected failure (a bug in vitcli; please report it with the traceback above)", file=stream)
            return 1
    print(f"error: {failure.message}", file=stream)
    if failure.hint:
        print(f"hint: {failure.hint}", file=stream)
    return failure.exit_code
