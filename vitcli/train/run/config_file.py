"""Reading a config file (`--config`): JSON, TOML or YAML, or a run folder (its config.json or run.json),
so that any run can be rerun. YAML is read as timm and ultralytics users write it (`lr: 1e-3` is a
number), and a document whose aliases expand past MAX_YAML_NODES values (an alias bomb) is refused before
anything is expanded. What the values mean is vitcli.train.run.config's.
"""

from __future__ import annotations

import json
from pathlib import Path

from vitcli.errors import UsageError
from vitcli.train import files


def read_config_file(path: Path) -> dict:
    """A JSON, TOML or YAML file of config keys; a run folder (or its config.json) gives that run's config."""
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / files.CONFIG if (path / files.CONFIG).is_file() else path / files.RUN_JSON
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as e:
        raise UsageError(f"cannot read config file {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise UsageError(f"config file {path} is not UTF-8 text") from None
    kind = {".toml": "TOML", ".yaml": "YAML", ".yml": "YAML"}.get(path.suffix.lower(), "JSON")
    try:
        if kind == "TOML":
            import tomllib

            values = tomllib.loads(text)
        elif kind == "YAML":
            values = _load_yaml(text)
        else:
            values = json.loads(text)
    except RecursionError:
        raise UsageError(f"config file {path} is not valid {kind}: nested too deeply") from None
    except ValueError as e:
        raise UsageError(f"config file {path} is not valid {kind}: {e}") from None
    if not isinstance(values, dict):
        raise UsageError(
            f"config file {path} does not hold a table of settings",
            "write one `key: value` (YAML), `key = value` (TOML) or JSON object entry per setting",
        )
    if isinstance(values.get("vitcli"), dict):  # a run folder's model config.json
        values = values["vitcli"].get("config", {})
    elif isinstance(values.get("config"), dict):  # run.json
        values = values["config"]
    return values


def _load_yaml(text: str):
    """YAML as timm and ultralytics users write it: `lr: 1e-3` is a number (YAML 1.1, PyYAML's dialect,
    reads a float without a dot as a string; YAML 1.2 and those tools' argparse defaults do not)."""
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        pass

    exponent = re.compile(r"^[-+]?(?:\d[\d_]*(?:\.[\d_]*)?|\.\d[\d_]*)[eE][-+]?\d+$")  # 1e-3, 1.5e3
    Loader.add_implicit_resolver("tag:yaml.org,2002:float", exponent, list("-+0123456789."))
    try:
        _check_expansion(yaml.compose(text, Loader=Loader))  # before any alias is expanded
        values = yaml.load(text, Loader=Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:  # not a ValueError
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ValueError(f"{getattr(e, 'problem', None) or e}{where}") from None
    return {} if values is None else values


MAX_YAML_NODES = 10_000  # a config holds a few dozen values; aliases may not expand it past this


def _check_expansion(root) -> None:
    """Refuse a YAML document whose aliases expand past MAX_YAML_NODES values (an alias bomb: nine levels
    of nine aliases are 387 million values), or refer to themselves, counted on the composed nodes
    (each counted once) before anything is expanded."""
    sizes: dict[int, int] = {}

    def size(node, active: frozenset) -> int:
        if id(node) in active:
            raise ValueError("a YAML alias refers to itself")
        if id(node) not in sizes:
            children = node.value if isinstance(node.value, list) else []
            inner = active | {id(node)}
            total = 1
            for child in children:
                for part in child if isinstance(child, tuple) else (child,):
                    total += size(part, inner)
                    if total > MAX_YAML_NODES:
                        raise ValueError(f"its aliases expand to more than {MAX_YAML_NODES:,} values")
            sizes[id(node)] = total
        return sizes[id(node)]

    if root is not None:
        size(root, frozenset())
