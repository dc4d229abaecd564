"""The live training display on stderr: step/total, loss, lr, img/s, ETA, best held-out accuracy.

A rich progress line when stderr is a terminal; otherwise a plain log line every `every` seconds
(and every message), so logs of batch jobs stay readable.
"""

from __future__ import annotations

import time


def _clock(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "-:--"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Display:
    def __init__(self, total: int, enabled: bool = True, every: float = 15.0):
        from vitcli import output

        self.total = total
        self.enabled = enabled
        self.live = enabled and output.show_progress()
        self.every = every
        self.fields = {"loss": None, "lr": None, "img_s": None, "eta": None, "val": None}
        self.step = 0
        self._last_status = time.time()  # of the last periodic status line
        self._printed_step = -1
        self._progress = None

    def __enter__(self):
        if self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            from vitcli import output

            self._progress = Progress(
                TextColumn("[bold]train[/]"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[text]}"),
                console=output.err(),
                transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task("train", total=self.total, completed=self.step, text="")
        return self

    def __exit__(self, *exc):
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        return False

    def text(self) -> str:
        f = self.fields
        parts = []
        if f["loss"] is not None:
            parts.append(f"loss {f['loss']:.4f}")
        if f["lr"] is not None:
            parts.append(f"lr {f['lr']:.2e}")
        if f["img_s"] is not None:
            parts.append(f"{f['img_s']:.1f} img/s")
        parts.append(f"ETA {_clock(f['eta'])}")
        if f["val"] is not None:
            parts.append(f"best val {f['val']:.2f} %")
        return "  ".join(parts)

    def update(self, step: int, **fields) -> None:
        if not self.enabled:
            return
        self.step = step
        self.fields.update({k: v for k, v in fields.items() if v is not None})
        if self._progress is not None:
            self._progress.update(self._task, completed=step, text=self.text())
        elif step != self._printed_step and (time.time() - self._last_status >= self.every or step == self.total):
            self._printed_step = step
            self._last_status = time.time()
            self._print(f"step {step}/{self.total}  {self.text()}")

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        if self._progress is not None:
            self._progress.console.print(text)
        else:
            self._print(text)

    def _print(self, line: str) -> None:
        import sys

        sys.stderr.write(line + "\n")  # a log line: never wrapped to a console width
        sys.stderr.flush()
