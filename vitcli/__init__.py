"""vitcli: the `vit` command. Vision Transformer and MetaFormer recipes, analyses and figures.

This package's top level imports nothing heavy: torch, timm and huggingface_hub are imported inside
the functions that need them, so `vit --help` and shell completion stay fast.
"""

__version__ = "0.1.0"
