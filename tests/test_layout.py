"""The package's layout rules (docs/ARCHITECTURE.md): folders by responsibility, small modules, imports
that point one way, no private names across modules."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "vitcli"
TOP_LEVEL = {"__init__.py", "__main__.py", "errors.py", "output.py", "env.py"}
FOLDERS = {
    "cli",
    "accel",
    "models",
    "data",
    "inference",
    "export",
    "hub",
    "train",
    "eval",
    "analysis",
    "bench",
    "serve",
}
# what each folder may import from the others (the arrows of docs/ARCHITECTURE.md; the top-level
# modules errors, output and env may be imported from anywhere). An entry "folder.module" allows that
# one module only: models opens exported files and reaches the Hub through leaf modules
# (LEAVES) that themselves import nothing of vitcli's folders.
MAY_IMPORT = {
    "cli": FOLDERS - {"cli"},
    "hub": {"models", "export", "train", "eval"},
    "train": {"accel", "models", "data", "inference", "eval"},
    "eval": {"accel", "models", "data", "inference", "export", "train.files"},
    "analysis": {"accel", "models", "data", "inference"},
    "bench": {"accel", "models", "data", "inference", "export", "eval"},
    "serve": {"accel", "models", "data", "inference", "export", "analysis"},
    "inference": {"accel", "models", "data", "export"},
    "export": {"accel", "models", "data"},
    "models": {"export.onnx_model", "export.pt2_model", "export.openvino_model", "hub.files"},
    "accel": set(),
    "data": set(),
}
LEAVES = {
    "vitcli.export.onnx_model",
    "vitcli.export.pt2_model",
    "vitcli.export.openvino_model",
    "vitcli.hub.files",
    "vitcli.train.files",
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


MODULES = _modules()


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(module, imported names, line) for every vitcli import in the file, at any depth (functions too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names if a.name.startswith("vitcli")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("vitcli"):
            found.append((node.module, [a.name for a in node.names], node.lineno))
    return found


def _edges(name: str) -> set[str]:
    """The vitcli modules `name` imports (a `from pkg import mod` names the module itself)."""
    edges = set()
    for module, names, _ in _imports(MODULES[name]):
        targets = [f"{module}.{n}" for n in names if f"{module}.{n}" in MODULES]
        edges |= set(targets) or {module}
    return edges - {name}


def test_top_level_holds_only_the_shared_modules():
    files = {p.name for p in PACKAGE.glob("*.py")}
    assert files <= TOP_LEVEL and len(files) <= 6, files
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"} == FOLDERS


def test_no_module_over_400_lines():
    long = {name: n for name, path in MODULES.items() if (n := len(path.read_text().splitlines())) > 400}
    assert not long, long


def test_no_import_cycle():
    graph = {name: _edges(name) for name in MODULES}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name, path):
        state[name] = 1
        for nxt in sorted(graph.get(name, ())):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(nxt) :] + [nxt]))
            if nxt in graph and state.get(nxt) is None:
                visit(nxt, path + [nxt])
        state[name] = 2

    for name in sorted(graph):
        if state.get(name) is None:
            visit(name, [name])


def test_imports_point_one_way():
    wrong = []
    for name, path in MODULES.items():
        parts = name.split(".")
        if len(parts) < 2 or parts[1] not in FOLDERS:
            if len(parts) == 2 and name != "vitcli.__main__":  # shared top-level modules import no folder
                wrong += [(name, m) for m, _, _ in _imports(path) if m.split(".")[1:2] and m.split(".")[1] in FOLDERS]
            continue
        folder = parts[1]
        for target in _edges(name):
            other = target.split(".")[1] if target.count(".") else None
            leaf = ".".join(target.split(".")[1:3])
            if (
                other in FOLDERS
                and other != folder
                and other not in MAY_IMPORT[folder]
                and leaf not in MAY_IMPORT[folder]
            ):
                wrong.append((name, target))
    for leaf in LEAVES:  # the leaf modules lower folders may use import only the shared top-level modules
        wrong += [(leaf, t) for t in _edges(leaf) if t.split(".")[1] in FOLDERS]
    assert not wrong, wrong


def test_no_private_name_imported_from_another_module():
    private = [
        (name, module, n, line)
        for name, path in MODULES.items()
        for module, names, line in _imports(path)
        for n in names
        if n.startswith("_") and not n.startswith("__") and module != name
    ]
    assert not private, private


def test_no_markup_in_messages():
    """The consoles print literally (vitcli.output): a style is an argument, never markup in the text."""
    import re

    markup = re.compile(r"\[/?(dim|red|bold|yellow|green|blue|italic)\]")
    found = [
        (name, n)
        for name, path in MODULES.items()
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if markup.search(line) and "TextColumn(" not in line
    ]
    assert not found, found


def test_ruff_lint_and_format_are_clean():
    """`ruff check .` and `ruff format --check .` (configured in pyproject.toml) pass on the repository."""
    import shutil
    import subprocess
    import sys

    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        import pytest

        pytest.skip("ruff is not installed (pip install -e '.[dev]')")
    root = PACKAGE.parent
    for args in (["check", "."], ["format", "--check", "."]):
        done = subprocess.run([ruff, *args], cwd=root, capture_output=True, text=True)
        assert done.returncode == 0, f"ruff {' '.join(args)}:\n{done.stdout}{done.stderr}"
