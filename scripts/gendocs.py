"""Regenerate what is derived from the app: completions/ and the command reference, docs/reference.md.

docs/reference.md holds `vit --help` and `vit CMD --help` for every command (nested groups included),
rendered at a fixed width with no colour, so it changes only when a command or a help text does.
`--check` regenerates in memory and fails if a file on disk differs (tests/test_cli.py runs it, so a
stale reference or stale completions fail the suite).

    python scripts/gendocs.py          # write
    python scripts/gendocs.py --check  # exit 1 when anything is stale
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ["TERMINAL_WIDTH"] = "100"  # typer reads it at import: stable help text
os.environ["NO_COLOR"] = "1"
os.environ.pop("FORCE_COLOR", None)

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "docs" / "reference.md"
SHELLS = {"bash": "vit.bash", "zsh": "_vit", "fish": "vit.fish"}


def completions() -> dict[Path, str]:
    from typer._completion_shared import get_completion_script

    return {
        ROOT / "completions" / name: get_completion_script(
            prog_name="vit", complete_var="_VIT_COMPLETE", shell=shell
        ).rstrip()
        + "\n"
        for shell, name in SHELLS.items()
    }


def help_text(command: str) -> str:
    from typer.testing import CliRunner

    from vitcli.cli import app

    args = command.split() + ["--help"] if command else ["--help"]
    result = CliRunner().invoke(app, args, prog_name="vit", env={"TERMINAL_WIDTH": "100", "NO_COLOR": "1"})
    if result.exit_code != 0:
        raise SystemExit(f"vit {command} --help failed:\n{result.output}")
    lines = [line.rstrip() for line in result.stdout.splitlines()]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines)


def commands() -> list[str]:
    """Every command path in registration order, groups before their subcommands: ["predict", ...]."""
    import click
    import typer

    from vitcli.cli import app

    found = []

    def walk(group: click.Group, prefix: list[str]) -> None:
        ctx = click.Context(group)
        for name in group.list_commands(ctx):
            cmd = group.get_command(ctx, name)
            if cmd is None or cmd.hidden:
                continue
            found.append(" ".join(prefix + [name]))
            if isinstance(cmd, click.Group):
                walk(cmd, prefix + [name])

    walk(typer.main.get_command(app), [])
    return found


def reference() -> dict[Path, str]:
    names = commands()
    parts = [
        "# Command reference",
        "",
        (
            "Generated from the app by `python scripts/gendocs.py` (a test fails when it is stale): the "
            "`--help` of every command, as a 100-column terminal shows it."
        ),
        "",
        "\n".join(f"- [`vit {n}`](#vit-{n.replace(' ', '-')})" for n in names),
        "",
        "## `vit`",
        "",
        "```text",
        help_text(""),
        "```",
    ]
    for name in names:
        parts += ["", f"## `vit {name}`", "", "```text", help_text(name), "```"]
    return {REFERENCE: "\n".join(parts) + "\n"}


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for path, content in {**completions(), **reference()}.items():
        current = path.read_text() if path.exists() else None
        if current != content:
            stale.append(path.relative_to(ROOT))
            if not check:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(content)
    if check and stale:
        print("stale (run `python scripts/gendocs.py`): " + ", ".join(map(str, stale)), file=sys.stderr)
        return 1
    if not check:
        print("wrote " + (", ".join(map(str, stale)) or "nothing (up to date)"))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main(sys.argv[1:]))
