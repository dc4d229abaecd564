"""Help texts say what they mean: no text eaten as rich markup, and a flag's help belongs to its command."""

from __future__ import annotations

import re

import typer
from rich.markup import render
from typer.testing import CliRunner

from vitcli.cli import app

ENV = {"TERMINAL_WIDTH": "200", "NO_COLOR": "1"}


def _help_texts():
    """(where, text) for the help of every command and parameter, nested groups included."""
    root = typer.main.get_command(app)

    def walk(cmd, path):
        yield path, cmd.help or ""
        for p in cmd.params:
            yield f"{path} {'/'.join(getattr(p, 'opts', [p.name]))}", getattr(p, "help", None) or ""
        if hasattr(cmd, "list_commands"):
            ctx = root.context_class(cmd)
            for name in cmd.list_commands(ctx):
                yield from walk(cmd.get_command(ctx, name), f"{path} {name}")

    yield from walk(root, "vit")


def test_no_help_text_is_eaten_as_rich_markup():
    """typer renders help as rich markup: `vitcli[tensorboard]` or `name[@rev]` must be written `\\[`."""
    eaten = [(where, text) for where, text in _help_texts() if render(text).plain != re.sub(r"\\(\[)", r"\1", text)]
    assert not eaten, eaten


def test_report_to_help_names_the_extras():
    result = CliRunner().invoke(app, ["finetune", "--help"], env=ENV)
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    assert "vitcli[tensorboard], vitcli[wandb]" in text and "extras vitcli, vitcli" not in text
    assert "hf-hub:org/name[@rev]" in text


def test_export_output_help_is_its_own():
    def output_help(command):
        result = CliRunner().invoke(app, [command, "--help"], env=ENV)
        line = next(line for line in result.stdout.splitlines() if "--output" in line)
        return " ".join(line.split("│")[1].split()[3:]) if "│" in line else line

    export, predict = output_help("export"), output_help("predict")
    assert "The file to write" in export and ".onnx or .pt2" in export
    assert "results" not in export and export != predict
