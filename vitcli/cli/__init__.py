"""The command line: `app.py` wires the commands, `options.py` defines each shared flag once, and one
module per command parses its options, calls one core function and renders the result.

Nothing here imports torch or timm at module level, so `vit --help` and TAB completion stay fast.
"""

from vitcli.cli.app import app, main

__all__ = ["app", "main"]
