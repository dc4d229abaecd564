"""The maths behind the paper's analysis figures (Dosovitskiy et al. 2021, Fig. 6 and 7), on tensors.

Nothing here knows about timm: inputs are attention weights, position embeddings and filters.

Mean attention distance (Fig. 7 right). For one head, one image and one query patch i, the distance is
sum_j a_ij * d(i, j), where d is the distance between the centres of patches i and j in input pixels
(grid offsets times the patch height and width) and a_ij the attention weight. Prefix tokens (class,
registers, distillation) have no position in the image, so they are dropped both as queries and as keys,
and each query's remaining weights over the patches are renormalised to sum to 1. The result is averaged
over query patches and over images. (The alternative, keeping the weights unnormalised, would make a head
that looks mostly at the class token seem "local" although it looks at no patch in particular.)

Attention rollout (Abnar & Zuidema 2020; Fig. 6): per layer fuse the heads (mean, max or min), optionally
zero the weakest `discard_ratio` of the weights, add the identity for the residual path, renormalise the
rows, and multiply the layers together from the first to the last. The class token's row over the patches
is the map; for models without a class token, the mean of the patch tokens' rows (what average pooling
sees).
"""

from __future__ import annotations

HEAD_FUSIONS = ("mean", "max", "min")


def patch_distances(grid: tuple[int, int], patch_size: tuple[int, int] = (1, 1)):
    """(N, N) Euclidean distances in pixels between patch centres; patches in row-major grid order."""
    import torch

    rows, cols = grid
    r, c = torch.meshgrid(
        torch.arange(rows, dtype=torch.float64), torch.arange(cols, dtype=torch.float64), indexing="ij"
    )
    y = r.reshape(-1) * patch_size[0]
    x = c.reshape(-1) * patch_size[1]
    return torch.sqrt((y[:, None] - y[None, :]) ** 2 + (x[:, None] - x[None, :]) ** 2)


def patch_attention(attn, num_prefix: int):
    """Attention among the patches only: drop prefix queries and keys, renormalise each row to sum 1.

    attn: (..., T, T) with T = num_prefix + N -> (..., N, N).
    """
    a = attn[..., num_prefix:, num_prefix:].double()
    total = a.sum(dim=-1, keepdim=True)
    return a / total.clamp_min(1e-30)


def mean_attention_distance(attn, grid: tuple[int, int], patch_size: tuple[int, int], num_prefix: int = 0):
    """Per image and head, the attention-weighted query-to-key distance in pixels, averaged over queries.

    attn: (B, heads, T, T) attention weights of one layer -> (B, heads) float64.
    """
    a = patch_attention(attn, num_prefix)  # (B, H, N, N)
    n = grid[0] * grid[1]
    if a.shape[-1] != n:
        raise ValueError(f"attention over {a.shape[-1]} patches does not match a {grid[0]}x{grid[1]} grid")
    d = patch_distances(grid, patch_size).to(a.device)  # (N, N)
    per_query = (a * d).sum(dim=-1)  # (B, H, N)
    return per_query.mean(dim=-1)


def fuse_heads(attn, how: str = "mean"):
    """(B, heads, T, T) -> (B, T, T) by the mean, max or min over heads."""
    if how == "mean":
        return attn.mean(dim=1)
    if how == "max":
        return attn.amax(dim=1)
    if how == "min":
        return attn.amin(dim=1)
    raise ValueError(f"head fusion must be one of {', '.join(HEAD_FUSIONS)}, not {how!r}")


def discard_weakest(a, ratio: float):
    """Zero the smallest `ratio` fraction of each (T, T) matrix's entries; the diagonal is always kept."""
    import torch

    if ratio <= 0:
        return a
    B, T, _ = a.shape
    flat = a.reshape(B, -1).clone()
    k = int(flat.shape[1] * ratio)
    if k == 0:
        return a
    _, idx = torch.topk(flat, k, dim=-1, largest=False)
    drop = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, idx, True)
    drop[:, torch.arange(T, device=a.device) * (T + 1)] = False  # keep each token's weight on itself
    return flat.masked_fill(drop, 0.0).reshape(B, T, T)


def rollout(maps, num_prefix: int, has_class_token: bool = True, head_fusion: str = "mean", discard_ratio: float = 0.0):
    """Attention rollout over layers: list of (B, heads, T, T) -> (B, N) weights on the N patches.

    The class token's row (token 0) when there is one, else the mean of the patch tokens' rows.
    """
    import torch

    result = None
    for attn in maps:
        a = discard_weakest(fuse_heads(attn.double(), head_fusion), discard_ratio)  # (B, T, T)
        eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
        a = a + eye  # the residual connection
        a = a / a.sum(dim=-1, keepdim=True)
        result = a if result is None else a @ result  # later layers on the left
    if result is None:
        raise ValueError("no attention maps to roll out")
    if has_class_token:
        return result[:, 0, num_prefix:]
    return result[:, num_prefix:, num_prefix:].mean(dim=1)


def cosine_similarity_matrix(vectors):
    """(N, C) -> (N, N) cosine similarity between every pair of rows."""
    import torch

    v = torch.as_tensor(vectors).double()
    v = v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return v @ v.T


def most_similar_is_neighbour(sim, grid: tuple[int, int]):
    """For each patch, whether the most similar *other* patch is one of its 8 grid neighbours: (N,) bool."""
    import torch

    sim = torch.as_tensor(sim).double().clone()
    n = sim.shape[0]
    sim.fill_diagonal_(float("-inf"))
    best = sim.argmax(dim=-1)
    idx = torch.arange(n)
    rows, cols = idx // grid[1], idx % grid[1]
    dr = (rows - best // grid[1]).abs()
    dc = (cols - best % grid[1]).abs()
    return torch.maximum(dr, dc) == 1


def principal_components(filters, k: int):
    """Top-k principal components of a bank of filters (D, C, h, w), each as a (C, h, w) filter.

    The filters are centred over the bank; each component's sign is chosen so that its entries sum to a
    non-negative value (PCA leaves the sign free; this keeps the tiles stable between runs).
    Returns (components (k, C, h, w), explained variance ratio (k,)).
    """
    import torch

    w = torch.as_tensor(filters).double()
    D = w.shape[0]
    flat = w.reshape(D, -1)
    flat = flat - flat.mean(dim=0, keepdim=True)
    _, s, vh = torch.linalg.svd(flat, full_matrices=False)
    k = max(1, min(k, vh.shape[0]))
    comps = vh[:k]
    signs = torch.where(comps.sum(dim=-1) < 0, -1.0, 1.0).to(comps.dtype)
    comps = comps * signs[:, None]
    var = s**2
    ratio = var[:k] / var.sum().clamp_min(1e-30)
    return comps.reshape(k, *w.shape[1:]), ratio
