"""Regenerate what is derived from the app: completions/ and README.md (from docs/sections/).

README.md is docs/sections/*.md in name order, with each `<!-- help: CMD -->` line replaced by the
output of `vit CMD --help`. `--check` regenerates in memory and fails if a file on disk differs
(tests/test_cli.py runs it, so stale completions or README help excerpts fail the suite).

    python scripts/gendocs.py          # write
    python scripts/gendocs.py --check  # exit 1 when anything is stale
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

os.environ["TERMINAL_WIDTH"] = "100"  # typer reads it at import: stable help text
os.environ["NO_COLOR"] = "1"
os.environ.pop("FORCE_COLOR", None)

ROOT = Path(__file__).resolve().parents[1]
HELP_MARK = re.compile(r"^<!-- help: ?(.*?) ?-->$", re.M)
SHELLS = {"bash": "vit.bash", "zsh": "_vit", "fish": "vit.fish"}


def completions() -> dict[Path, str]:
    from typer._completion_shared import get_completion_script

    return {ROOT / "completions" / name: get_completion_script(prog_name="vit", complete_var="_VIT_COMPLETE",
                                                               shell=shell).rstrip() + "\n"
            for shell, name in SHELLS.items()}


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


def readme() -> dict[Path, str]:
    parts = [p.read_text().strip("\n") for p in sorted((ROOT / "docs" / "sections").glob("*.md"))]
    text = "\n\n".join(parts) + "\n"

    def expand(match: re.Match) -> str:
        cmd = match.group(1).strip()
        title = f"vit {cmd} --help" if cmd else "vit --help"
        return f"<details><summary><code>{title}</code></summary>\n\n```text\n{help_text(cmd)}\n```\n</details>"

    return {ROOT / "README.md": HELP_MARK.sub(expand, text)}


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for path, content in {**completions(), **readme()}.items():
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
