"""Stopping a training run without losing it: signals, and the errors that end a run.

The first SIGINT/SIGTERM only sets a flag: the loop finishes the current step, saves the training
state, and raises `Interrupted` (exit 130/143). A second Ctrl-C raises KeyboardInterrupt at once (the
atomic checkpoint write keeps the previous checkpoint whole). DataLoader workers ignore SIGINT
(vitcli.data.worker_init), so a Ctrl-C in a terminal does not kill them under the main process.
"""

from __future__ import annotations

import signal

from vitcli.errors import VitError


class Interrupted(VitError):
    """SIGINT/SIGTERM: the state was saved; exit 128 + signal number."""

    def __init__(self, message: str, hint: str, signum: int):
        super().__init__(message, hint)
        self.exit_code = 128 + signum


class Diverged(VitError):
    """Too many non-finite steps in a row: the run stops, its last good checkpoint kept."""


class StopSignals:
    """First SIGINT/SIGTERM: finish the step, save, stop. Second SIGINT: abort at once."""

    def __init__(self):
        self.signum: int | None = None
        self._old: dict = {}

    def _handler(self, signum, frame):
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum
        from vitcli import output

        output.warn(f"{signal.Signals(signum).name}: saving after this step (Ctrl-C again: abort at once)")

    def __enter__(self):
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False
