"""Result tables on stdout, the same way for every command.

On a terminal: columns fitted to its width (COLUMNS or the terminal's), text wrapped at spaces and
paths after a `/`, never in the middle of a word and never cut short with "…"; a column only gets
narrower than its longest word when nothing else is left to give, and then the line runs long instead.
In a pipe or a file: plain lines, cells separated by one tab, nothing wrapped, cut or coloured, so
`cut -f`, `sort` and `awk -F'\\t'` read them (a tab or newline inside a cell is written as `\\t`,
`\\n`). `--json` stays the format for programs; this is for people and shell pipelines.
"""

from __future__ import annotations

import os
import sys
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

GAP = 2  # spaces between columns


@dataclass(frozen=True)
class Column:
    name: str
    right: bool = False  # right-aligned (numbers)
    wrap: str = "words"  # "words": at spaces; "path": after "/" (and at spaces); "none": never


def plain() -> bool:
    """Whether stdout is not a terminal (then tables are tab-separated lines)."""
    from vitcli import output

    return not output.out().is_terminal


def plain_cell(value) -> str:
    return str(value).replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def plain_line(cells: Iterable) -> None:
    """One tab-separated line on stdout, flushed (a pipe reader sees each result as it comes)."""
    sys.stdout.write("\t".join(plain_cell(c) for c in cells) + "\n")
    sys.stdout.flush()


def relative_paths(paths: Sequence[str]) -> tuple[str, list[str]]:
    """(root, paths relative to it): the deepest folder holding every local path, so a table shows
    `cats/1.jpg` instead of the same long prefix on every line. URLs and `-` are kept as they are."""
    local = [p for p in paths if p != "-" and "://" not in p]
    if not local:
        return "", list(paths)
    try:
        root = os.path.commonpath([os.path.dirname(p) or "." for p in local])
    except ValueError:  # absolute and relative paths mixed
        return "", list(paths)
    if root in ("", "."):
        return "", list(paths)
    prefix = root.rstrip(os.sep) + os.sep
    return prefix, [p.removeprefix(prefix) for p in paths]


def print_table(
    columns: Sequence[Column],
    rows: Sequence[Sequence],
    *,
    title: str | None = None,
    header: bool = True,
    styles: Sequence[str | None] | None = None,
    width: int | None = None,
) -> None:
    """`rows` (cells as text) under `columns` on stdout: fitted to the terminal, or tab-separated."""
    rows = [[str(c) for c in row] + [""] * (len(columns) - len(row)) for row in rows]
    if plain():
        if title:
            plain_line([f"# {title}"])
        if header:
            plain_line(c.name for c in columns)
        for row in rows:
            plain_line(row)
        return
    from rich.text import Text

    from vitcli import output

    console = output.out()
    names = [c.name for c in columns] if header else None
    widths = fit([c.wrap for c in columns], ([names] if names else []) + rows, width or console.width)
    if title:
        console.print(Text(title, style="bold"), soft_wrap=True)
    lines = []
    if names:
        lines += [(line, "bold") for line in _layout(columns, names, widths)]
    for i, row in enumerate(rows):
        lines += [(line, styles[i] if styles else None) for line in _layout(columns, row, widths)]
    for line, style in lines:
        console.print(Text(line, style=style or ""), soft_wrap=True)


def fit(wraps: Sequence[str], rows: Sequence[Sequence[str]], width: int) -> list[int]:
    """Column widths for `rows` in `width` cells: natural widths, then the widest column that may wrap
    gives one cell at a time, never below its longest word (or path part)."""
    from rich.cells import cell_len

    n = len(wraps)
    natural = [
        max((cell_len(line) for row in rows for line in row[i].splitlines() or [""]), default=0) for i in range(n)
    ]
    least = [
        max((cell_len(piece) for row in rows for piece in _pieces(row[i], wraps[i])), default=0)
        if wraps[i] != "none"
        else natural[i]
        for i in range(n)
    ]
    widths = list(natural)
    excess = sum(widths) + GAP * (n - 1) - width
    while excess > 0:
        free = [i for i in range(n) if widths[i] > least[i]]
        if not free:
            break
        widest = max(free, key=lambda i: widths[i])
        widths[widest] -= 1
        excess -= 1
    return widths


def _pieces(text: str, wrap: str) -> list[str]:
    """The parts a cell may be broken into: words, or for paths the parts after each `/`."""
    words = text.split()
    if wrap != "path":
        return words
    return [part for word in words for part in _path_parts(word)]


def _path_parts(word: str) -> list[str]:
    parts = word.split("/")
    return [p + "/" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def _wrap(text: str, width: int, wrap: str) -> list[str]:
    if wrap == "none" or width <= 0:
        return text.splitlines() or [""]
    out = []
    for paragraph in text.splitlines() or [""]:
        if wrap == "path":
            out += _wrap_path(paragraph, width)
        else:
            out += textwrap.wrap(paragraph, width, break_long_words=False, break_on_hyphens=False) or [""]
    return out


def _wrap_path(text: str, width: int) -> list[str]:
    from rich.cells import cell_len

    lines, line = [], ""
    for word in text.split(" "):
        for part in _path_parts(word) or [""]:
            if line and cell_len(line) + cell_len(part) > width:
                lines.append(line.rstrip(" "))
                line = ""
            line += part
        line += " "
    lines.append(line.rstrip(" "))
    return lines


def _layout(columns: Sequence[Column], cells: Sequence[str], widths: Sequence[int]) -> list[str]:
    """The text lines of one row: every cell wrapped to its column, padded, joined, right-stripped."""
    from rich.cells import cell_len

    wrapped = [_wrap(cell, w, c.wrap) for c, cell, w in zip(columns, cells, widths)]
    height = max(len(w) for w in wrapped)
    lines = []
    for k in range(height):
        parts = []
        for c, cell_lines, w in zip(columns, wrapped, widths):
            text = cell_lines[k] if k < len(cell_lines) else ""
            pad = " " * max(0, w - cell_len(text))
            parts.append(pad + text if c.right else text + pad)
        lines.append((" " * GAP).join(parts).rstrip())
    return lines
