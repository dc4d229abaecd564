"""The output sink: results to stdout (rich tables for people, JSON for programs), everything else
(progress, warnings, hints) to stderr; progress bars only when stderr is a terminal. And the one way
vitcli writes a file: `atomic_write`, so that no reader ever sees half a file.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Callable, Union

TMP_MARK = ".tmp-"  # in the name of every temporary file `atomic_write` makes (found again by clean_stale)
_counter = itertools.count()


@lru_cache(maxsize=None)
def _console(stderr: bool, file_id: int):
    from rich.console import Console

    return Console(stderr=stderr, file=sys.stderr if stderr else sys.stdout, soft_wrap=not stderr)


def out():
    """Console for results (stdout). Re-created when sys.stdout is swapped (tests)."""
    return _console(False, id(sys.stdout))


def err():
    """Console for messages and progress (stderr)."""
    return _console(True, id(sys.stderr))


def info(message: str) -> None:
    """A message on stderr, never wrapped to the console width (paths stay whole in logs)."""
    err().print(message, highlight=False, soft_wrap=True)


def warn(message: str) -> None:
    err().print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)


def emit_json(obj) -> None:
    """One JSON object on one line of stdout."""
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
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
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn(f"{unit}"), TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=err(), transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)


class RichTqdm:
    """The tqdm interface huggingface_hub's downloads call, drawn as a rich bar on stderr."""

    label: str | None = None  # set by `named()`: the file name to show instead of the URL

    @classmethod
    def named(cls, label: str) -> type["RichTqdm"]:
        return type("RichTqdm", (cls,), {"label": label})

    def __init__(self, *args, total=None, desc=None, initial=0, unit="B", unit_scale=True, disable=False,
                 **kwargs):
        desc = self.label or desc
        self.total = total
        self.n = initial or 0
        self.disable = disable or not show_progress()
        self._progress = None
        if not self.disable:
            from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                                       TransferSpeedColumn)

            self._progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(),
                                      TransferSpeedColumn(), TimeRemainingColumn(), console=err(),
                                      transient=False)
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


def atomic_write(path: str | os.PathLike, data: Union[str, bytes, Callable[[Path], object]]) -> Path:
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
