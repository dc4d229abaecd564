"""The figures `vit visualize` reads from a model's learned embeddings alone, no images: the cosine
similarity of the patch position embeddings (Fig. 7 centre) and the principal components of the
patch-embedding filters (Fig. 7 left), with the readers of those weights.
"""

from __future__ import annotations

from pathlib import Path

from vitcli.errors import VitError
from vitcli.output import atomic_write


def patch_position_embeddings(model):
    """The learned position embeddings of the patches (prefix tokens' rows dropped): ((N, C), grid)."""
    import torch

    from vitcli.analysis.attention import token_layout

    pe = getattr(model, "pos_embed", None)
    if not isinstance(pe, torch.Tensor):
        raise VitError(
            f"{type(model).__name__} has no learned absolute position embedding (pos_embed)",
            "--pos-embed needs a ViT with learned position embeddings",
        )
    pe = pe.detach().float()
    if pe.dim() == 4:  # (1, rows, cols, C)
        return pe[0].reshape(-1, pe.shape[-1]), (pe.shape[1], pe.shape[2])
    pe = pe[0]  # (T, C)
    layout = token_layout(model)
    extra = pe.shape[0] - layout.num_patches
    if extra not in (0, layout.num_prefix):
        raise VitError(
            f"pos_embed has {pe.shape[0]} rows, which does not match a {layout.grid[0]}x{layout.grid[1]} patch grid"
        )
    return pe[extra:], layout.grid


def patch_embedding_weights(model):
    """The patch embedding's convolution weights (D, 3, h, w) and that layer's name.

    ViTs: patch_embed.proj. Other models (PoolFormer's stem): the first convolution on the input image.
    """
    import torch

    proj = getattr(getattr(model, "patch_embed", None), "proj", None)
    if isinstance(proj, torch.nn.Conv2d):
        return proj.weight.detach().float(), "patch_embed.proj"
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Conv2d) and module.in_channels in (1, 3):
            return module.weight.detach().float(), name
    raise VitError(
        f"{type(model).__name__} has no convolutional patch embedding",
        "--filters needs a model whose first layer is a convolution on the image",
    )


def pos_embed_figure(loaded, out: Path, *, arch: str, result: dict) -> dict:
    """pos_embed_similarity.{png,npy}: cosine similarity of the patch position embeddings (Fig. 7
    centre), and the share of patches whose most similar other patch is a grid neighbour."""
    import numpy as np

    from vitcli.analysis import figures
    from vitcli.analysis.maths import cosine_similarity_matrix, most_similar_is_neighbour

    pe, grid = patch_position_embeddings(loaded.model)
    sim = cosine_similarity_matrix(pe)
    atomic_write(out / "pos_embed_similarity.npy", lambda tmp: np.save(tmp, sim.numpy().astype(np.float32)))
    figures.pos_embed_similarity(
        sim.numpy(), grid, out / "pos_embed_similarity.png", title=f"Position embedding similarity: {arch}"
    )
    result["files"] += [str(out / "pos_embed_similarity.png"), str(out / "pos_embed_similarity.npy")]
    return {
        "grid": list(grid),
        "neighbour_fraction": round(float(most_similar_is_neighbour(sim, grid).double().mean()), 4),
    }


def filters_figure(loaded, out: Path, num_components: int, *, arch: str, result: dict) -> dict:
    """filters.png: the first `num_components` principal components of the patch-embedding filters
    (Fig. 7 left), and the variance each explains."""
    from vitcli.analysis import figures
    from vitcli.analysis.maths import principal_components

    weights, layer = patch_embedding_weights(loaded.model)
    comps, explained = principal_components(weights, num_components)
    figures.filters(
        comps.numpy(),
        out / "filters.png",
        explained=explained.tolist(),
        title=f"Principal components of the patch embedding ({layer}): {arch}",
    )
    result["files"].append(str(out / "filters.png"))
    return {
        "layer": layer,
        "num_components": int(comps.shape[0]),
        "filter_shape": list(weights.shape[1:]),
        "explained_variance_ratio": [round(float(v), 5) for v in explained],
    }
