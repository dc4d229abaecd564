"""The wiring file: registers the commands and maps errors to one line. Imports no torch or timm.

Each command lives in `vitcli/cli/<name>.py`; the heavy core is imported inside the command
function, so `vit --help` and TAB completion answer without loading torch.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Annotated

import typer
from typer.core import TyperGroup

from vitcli import __version__


class VitGroup(TyperGroup):
    """Runs a command and turns a user-fixable exception into one line on stderr (exit 1 or 2)."""

    def list_commands(self, ctx):  # keep registration order in --help
        return list(self.commands)

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        """Click's usage errors in vitcli's one error style (`error:` + `hint:`, exit 2), not typer's box."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except Exception as exc:  # typer vendors click: its exceptions are known by name
            names = {cls.__name__ for cls in type(exc).__mro__}
            if "NoArgsIsHelpError" in names:  # `vit` alone: the help is already printed
                code = 2
            elif "ClickException" in names:
                code = _click_error(exc)
            elif "Abort" in names:
                print("error: aborted", file=sys.stderr)
                code = 1
            else:
                raise
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx):
        try:
            with _term_as_interrupt():
                return super().invoke(ctx)
        except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (Terminated): what finished was shown (finally)
            print("terminated" if isinstance(e, Terminated) else "interrupted", file=sys.stderr)
            raise typer.Exit(143 if isinstance(e, Terminated) else 130)
        except BrokenPipeError:  # `vit predict ... | head`: the reader left; stop quietly, as Unix tools do
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(141)
        except Exception as exc:  # noqa: BLE001 - the one place exceptions become messages
            if type(exc).__module__.startswith(("typer", "click")):
                raise  # usage errors and exits: typer/click report them (exit 2) or they are exits
            from vitcli import env
            from vitcli.errors import report

            raise typer.Exit(report(exc, debug=env.debug()))


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: every `finally` runs (predict prints its finished rows), exit 143."""


def _raise_terminated(signum, frame):
    raise Terminated


@contextmanager
def _term_as_interrupt():
    """SIGTERM raises Terminated while a command runs (training installs its own handler, StopSignals,
    which saves first). Left alone where someone else already handles SIGTERM, or off the main thread."""
    import signal
    import threading

    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    ):
        yield
        return
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _click_error(exc) -> int:
    """One `error:` line (and a `hint:` naming the usage and --help) for a click exception: its exit code."""
    from vitcli.errors import UsageError as VitUsageError
    from vitcli.errors import report

    message = exc.format_message().strip()
    message = message[:1].lower() + message[1:] if message[:2] != message[:2].upper() else message
    ctx = getattr(exc, "ctx", None)
    hint = "see `vit COMMAND --help` for the options"  # click names no context for some parse errors
    if ctx is not None:
        usage = ctx.get_usage().strip().removeprefix("Usage: ").strip()
        hint = f"usage: {usage} (see `{ctx.command_path} --help`)"
    error = VitUsageError(" ".join(message.split()).rstrip("."), hint)
    error.exit_code = exc.exit_code
    return report(error)


app = typer.Typer(
    name="vit",
    cls=VitGroup,
    help="Vision Transformers from the terminal: predict, fine-tune, train, evaluate and visualize "
    "ViT and MetaFormer models with the papers' recipes.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool):
    if value:
        typer.echo(f"vit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool | None, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = None,
) -> None:
    """Vision Transformers from the terminal."""


def _register() -> None:
    from vitcli.cli import (
        benchmark,
        download,
        eval,
        export,
        finetune,
        info,
        models,
        predict,
        push,
        serve,
        shard,
        train,
        visualize,
    )

    app.command("predict")(predict.predict)
    app.command("download")(download.download)
    for module in (train, finetune, eval, push, visualize, models, benchmark, export, serve, shard, info):
        module.register(app)


_register()


def main() -> None:
    """Console-script entry point."""
    from vitcli import env

    if env.debug():
        os.environ.setdefault("PYTHONFAULTHANDLER", "1")
    if not _standard_streams():
        _fast_exit(1)
    sys.argv[1:] = bare_resume(sys.argv[1:])
    try:
        app(prog_name="vit")
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if not isinstance(e.code, (int, type(None))):
            print(e.code, file=sys.stderr)
    _fast_exit(code)


def _standard_streams() -> bool:
    """Closed standard streams become /dev/null, so that no file opened later takes their number (a
    message, or a traceback, written into a results file) and no message falls back to stdout; streams
    that cannot encode a name (an ASCII-only locale) escape it instead of raising. False (after the
    message) when stdout is closed: the results would have nowhere to go."""
    closed = []
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            closed.append(fd)
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
    if 2 in closed or sys.stderr is None:
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process
    for stream in (sys.stdout, sys.stderr):
        if stream is not None and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    if 1 in closed or sys.stdout is None:
        print("error: stdout is closed: the results would have nowhere to go", file=sys.stderr)
        print(
            "hint: run it with stdout open (redirect it to a file, or to /dev/null to drop the results)",
            file=sys.stderr,
        )
        return False
    return True


def bare_resume(args: list[str]) -> list[str]:
    """`vit finetune --resume` with no folder (at the end, or before another option) means `--resume last`:
    click options cannot have an optional value."""
    out = []
    for i, arg in enumerate(args):
        out.append(arg)
        if arg == "--resume" and (i + 1 == len(args) or args[i + 1].startswith("-")) and "--" not in args[:i]:
            out.append("last")
    return out


def _fast_exit(code: int) -> None:
    """Exit without tearing the interpreter down once torch is loaded.

    Finalising the modules and objects of torch costs 0.3-0.7 s on a small CPU (measured: `python -c
    "import torch"` 1.7-2.0 s, 1.3 s with os._exit), a third of a one-image `vit predict`. The atexit
    handlers still run (multiprocessing joins DataLoader workers, tempfile and weakref finalizers clean
    up) and stdout/stderr are flushed; only the module teardown is skipped.
    """
    from vitcli import env

    if (
        "torch" not in sys.modules or env.debug() or sys.getprofile() is not None or sys.gettrace() is not None
    ):  # profilers write at exit
        raise SystemExit(code)
    import atexit

    try:
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a closed pipe (vit predict ... | head)
                code = code or 141
        os._exit(code)
