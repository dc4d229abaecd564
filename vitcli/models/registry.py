"""vitcli's own timm registrations: the architectures timm lacks, registered under timm's model API.

Today that is `vitcli_metaformer` (vitcli.models.metaformer): a timm ViT or PoolFormer with its token
mixer swapped. A run folder's config.json names it, so every path that builds a model from a name
(the resolver, the zoo) calls `ensure_registered()` first.
"""

from __future__ import annotations


def ensure_registered() -> None:
    """Register vitcli's architectures with timm (importing the module does it, once per process)."""
    import vitcli.models.metaformer  # noqa: F401 - @register_model runs at import
