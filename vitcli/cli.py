"""The wiring file: registers the commands and maps errors to one line. Imports no torch or timm.

Each command lives in `vitcli/commands/<name>.py`; the heavy core is imported inside the command
function, so `vit --help` and TAB completion answer without loading torch.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated, Optional

import typer
from typer.core import TyperGroup

from vitcli import __version__


class VitGroup(TyperGroup):
    """Runs a command and turns a user-fixable exception into one line on stderr (exit 1 or 2)."""

    def list_commands(self, ctx):  # keep registration order in --help
        return list(self.commands)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            raise typer.Exit(130)
        except Exception as exc:  # noqa: BLE001 - the one place exceptions become messages
            if type(exc).__module__.startswith(("typer", "click")):
                raise  # usage errors and exits: typer/click report them (exit 2) or they are exits
            from vitcli.errors import report

            raise typer.Exit(report(exc))


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
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True,
                                                    help="Print the version and exit.")] = None,
) -> None:
    """Vision Transformers from the terminal."""


def _register() -> None:
    from vitcli.commands import download, predict

    app.command("predict")(predict.predict)
    app.command("download")(download.download)
    for name in ("train", "finetune", "eval", "visualize", "models", "benchmark"):
        _register_optional(name)


def _register_optional(name: str) -> None:
    """Commands whose module exists (added issue by issue) register themselves via `register(app)`."""
    import importlib

    try:
        module = importlib.import_module(f"vitcli.commands.{name}")
    except ModuleNotFoundError as e:
        if e.name == f"vitcli.commands.{name}":
            return
        raise
    module.register(app)


_register()


def main() -> None:
    """Console-script entry point."""
    if os.environ.get("VIT_DEBUG") == "1":
        os.environ.setdefault("PYTHONFAULTHANDLER", "1")
    app(prog_name="vit")
