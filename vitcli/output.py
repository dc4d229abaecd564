"""The output sink: results to stdout (rich tables for people, JSON for programs), everything else
(progress, warnings, hints) to stderr; progress bars only when stderr is a terminal. And the one way
vitcli writes a file: `atomic_write`, so that no reader ever sees half a file.

Text is printed literally: the consoles have rich's markup and emoji codes off, so a path such as
`dir[/x]/y.jpg` or `photo [edited].jpg` is shown as it is and can never raise a markup error; styles
are given as arguments (`info(..., style="dim")`), never written into the text. A file name that is
not valid UTF-8 is shown, in tables, JSON and CSV alike, with its odd bytes escaped (`display`).
JSON never holds NaN or Infinity (`dumps`: they become null).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import sys
from collections.abc import Callable
from contextlib import contextmanager
from functools import cache
from pathlib import Path

TMP_MARK = ".tmp-"  # in the name of every temporary file `atomic_write` makes (found again by clean_stale)
_counter = itertools.count()


@cache
def _console(stderr: bool, file_id: int):
    from rich.console import Console

    return Console(
        stderr=stderr,
        file=sys.stderr if stderr else sys.stdout,
        soft_wrap=not stderr,
        markup=False,
        emoji=False,
        highlight=False,
    )


def out():
    """Console for results (stdout). Re-created when sys.stdout is swapped (tests)."""
    return _console(False, id(sys.stdout))


def err():
    """Console for messages and progress (stderr)."""
    return _console(True, id(sys.stderr))


def info(message: str, style: str | None = None) -> None:
    """A message on stderr, printed literally and never wrapped to the console width (paths stay whole)."""
    err().print(message, style=style, soft_wrap=True)


def warn(message: str) -> None:
    _labelled("warning:", "yellow", message)


def error(message: str, label: str = "error:") -> None:
    """An error about one item (an image, a setting) among results that go on: `error: MESSAGE`."""
    _labelled(label, "red", message)


def _labelled(label: str, style: str, message: str) -> None:
    from rich.text import Text

    err().print(Text.assemble((label, style), " ", message), soft_wrap=True)


def display(path) -> str:
    """A path (or any name) as vitcli shows it everywhere: bytes that are not UTF-8 escaped as \\xNN."""
    text = os.fspath(path) if not isinstance(path, str) else path
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:  # surrogate escapes: a name in another encoding
        return os.fsencode(text).decode("utf-8", "backslashreplace")


def finite(obj):
    """`obj` with every NaN or infinite float replaced by None (for JSON), containers copied."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def dumps(obj, **kwargs) -> str:
    """JSON text for anything vitcli writes: never NaN or Infinity (null instead), non-ASCII kept."""
    kwargs.setdefault("ensure_ascii", False)
    return json.dumps(finite(obj), allow_nan=False, **kwargs)


def emit_json(obj) -> None:
    """One JSON object on one line of stdout (escaped to ASCII where stdout cannot encode the text)."""
    text = dumps(obj)
    try:
        text.encode(sys.stdout.encoding or "utf-8")
    except (UnicodeEncodeError, LookupError):
        text = dumps(obj, ensure_ascii=True)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def show_progress() -> bool:
    from vitcli import env

    setting = env.progress()
    return sys.stderr.isatty() if setting is None else setting


@contextmanager
def progress(description: str, total: int | None = None, unit: str = "it"):
    """A rich progress bar on stderr; yields `advance(n=1)`. Silent when stderr is not a terminal."""
    if not show_progress():
        yield lambda n=1: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(f"{unit}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=err(), transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)


class RichTqdm:
    """The tqdm interface huggingface_hub's downloads call, drawn as a rich bar on stderr."""

    label: str | None = None  # set by `named()`: the file name to show instead of the URL

    @classmethod
    def named(cls, label: str) -> type[RichTqdm]:
        return type("RichTqdm", (cls,), {"label": label})

    def __init__(self, *args, total=None, desc=None, initial=0, unit="B", unit_scale=True, disable=False, **kwargs):
        desc = self.label or desc
        self.total = total
        self.n = initial or 0
        self.disable = disable or not show_progress()
        self._progress = None
        if not self.disable:
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=err(),
                transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(f"download {desc or ''}", total=total, completed=self.n)

    def update(self, n=1):
        self.n += n
        if self._progress is not None:
            self._progress.update(self._task, completed=self.n)

    def set_description(self, desc=None, refresh=True):
        if self._progress is not None:
            self._progress.update(self._task, description=f"download {desc or ''}")

    def refresh(self):
        pass

    def reset(self, total=None):
        self.n = 0
        self.total = total
        if self._progress is not None:
            self._progress.reset(self._task, total=total)

    def close(self):
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def atomic_write(path: str | os.PathLike, data: str | bytes | Callable[[Path], object]) -> Path:
    """Write `path` whole or not at all, for every file vitcli writes.

    `data` is text (UTF-8), bytes, or a function that writes a given temporary path (torch.save, np.save,
    savefig: the temporary name keeps the suffix, so writers that go by it choose the same format). The
    temporary file sits in the same folder, is fsynced, then `os.replace`d over `path` (atomic on POSIX),
    and the folder is fsynced; a failure removes it and leaves the old file as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}{TMP_MARK}{os.getpid()}-{next(_counter)}{path.suffix}")
    try:
        if isinstance(data, str):
            tmp.write_text(data, encoding="utf-8")
        elif isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            data(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
