"""The paper's analysis figures drawn with matplotlib, one function per figure, written as PNG files.

Figures are built with `matplotlib.figure.Figure` directly, not pyplot, so nothing global (backend,
current figure) is touched and no window can open.
"""

from __future__ import annotations

from pathlib import Path

DPI = 150


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _save(fig, path: Path, dpi: int = DPI) -> Path:
    from vitcli.output import atomic_write

    return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, facecolor="white"))


def attention_distance(distance, path: Path, *, title: str, image_size=None) -> Path:
    """Fig. 7 (right): x = layer, y = mean attention distance in pixels, one dot per head.

    distance: (layers, heads) array.
    """
    import numpy as np

    d = np.asarray(distance, dtype=float)
    layers, heads = d.shape
    fig = _figure(6.4, 4.4)
    ax = fig.add_subplot()
    cmap = _cmap("tab20" if heads > 10 else "tab10")
    for h in range(heads):
        ax.scatter(
            np.arange(1, layers + 1),
            d[:, h],
            s=22,
            color=cmap(h % cmap.N),
            label=f"head {h + 1}",
            edgecolors="none",
            alpha=0.9,
        )
    ax.set_xlabel("Network depth (layer)")
    ax.set_ylabel("Mean attention distance (pixels)")
    ax.set_title(title, fontsize=10)
    ax.set_xticks(np.arange(1, layers + 1))
    top = float(d.max()) if d.size else 1.0
    if image_size is not None:
        top = max(top, 0.6 * float(image_size))
    ax.set_ylim(0, top * 1.08)
    ax.grid(True, alpha=0.3)
    if heads <= 16:
        ax.legend(fontsize=7, ncols=2 if heads > 8 else 1, loc="lower right", frameon=True, framealpha=0.8)
    return _save(fig, path)


def pos_embed_similarity(sim, grid: tuple[int, int], path: Path, *, title: str) -> Path:
    """Fig. 7 (centre): for each patch, the cosine similarity of its position embedding with all others.

    sim: (N, N) with N = rows * cols in row-major order. Drawn as one mosaic of rows x cols small heatmaps
    (tile (r, c) is row r*cols + c of `sim`, reshaped to the grid), separated by a one-cell gap.
    """
    import numpy as np

    rows, cols = grid
    s = np.asarray(sim, dtype=float).reshape(rows, cols, rows, cols)
    gap = 1
    mosaic = np.full((rows * (rows + gap) - gap, cols * (cols + gap) - gap), np.nan)
    for r in range(rows):
        for c in range(cols):
            y, x = r * (rows + gap), c * (cols + gap)
            mosaic[y : y + rows, x : x + cols] = s[r, c]
    fig = _figure(7.4, 6.6 * rows / cols + 0.5)
    ax = fig.add_subplot()
    cmap = _cmap("viridis").with_extremes(bad="white")
    im = ax.imshow(mosaic, cmap=cmap, vmin=-1, vmax=1, interpolation="nearest")
    step = max(1, int(np.ceil(max(rows, cols) / 14)))
    ax.set_xticks(
        [c * (cols + gap) + (cols - 1) / 2 for c in range(0, cols, step)],
        [str(c + 1) for c in range(0, cols, step)],
        fontsize=7,
    )
    ax.set_yticks(
        [r * (rows + gap) + (rows - 1) / 2 for r in range(0, rows, step)],
        [str(r + 1) for r in range(0, rows, step)],
        fontsize=7,
    )
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.set_xlabel("Input patch column")
    ax.set_ylabel("Input patch row")
    ax.set_title(title, fontsize=10)
    bar = fig.colorbar(im, ax=ax, shrink=0.8)
    bar.set_label("Cosine similarity")
    return _save(fig, path)


def filters(components, path: Path, *, title: str, explained=None, per_row: int = 7) -> Path:
    """Fig. 7 (left): principal components of the patch-embedding filters as RGB tiles.

    components: (k, 3, h, w); each tile is min-max scaled to [0, 1] on its own (a component's scale and
    sign carry no colour meaning).
    """
    import numpy as np

    comps = np.asarray(components, dtype=float)
    k = comps.shape[0]
    cols = min(per_row, k)
    rows = int(np.ceil(k / cols))
    fig = _figure(1.0 * cols + 0.4, 1.08 * rows + 0.7)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).reshape(-1)
    for i, ax in enumerate(axes):
        ax.set_axis_off()
        if i >= k:
            continue
        tile = comps[i]
        tile = np.moveaxis(tile, 0, -1) if tile.shape[0] in (1, 3) else tile[0][..., None]
        lo, hi = tile.min(), tile.max()
        tile = (tile - lo) / (hi - lo) if hi > lo else np.zeros_like(tile)
        ax.imshow(
            tile.squeeze(-1) if tile.shape[-1] == 1 else tile,
            interpolation="nearest",
            cmap="gray" if tile.shape[-1] == 1 else None,
        )
        label = f"PC {i + 1}"
        if explained is not None:
            label += f" ({100 * float(explained[i]):.1f}%)"
        ax.set_title(label, fontsize=6, pad=2)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def map_overlay(
    image,
    mask,
    path: Path,
    *,
    title: str,
    name: str = "Attention rollout",
    short: str = "rollout",
    bar_label: str = "Relative attention",
) -> Path:
    """Fig. 6 and its kin: the input as the model sees it, a saliency map over it (`name`), and the input
    weighted by the map ("Input x `short`").

    image: (H, W, 3) floats in [0, 1]; mask: (rows, cols) weights over the patch grid or (H, W), shown
    min-max scaled to [0, 1].
    """
    import numpy as np
    import torch

    img = np.clip(np.asarray(image, dtype=float), 0, 1)
    H, W = img.shape[:2]
    m = torch.as_tensor(np.asarray(mask, dtype=np.float32))[None, None]
    m = torch.nn.functional.interpolate(m, size=(H, W), mode="bilinear", align_corners=False)[0, 0].numpy()
    lo, hi = float(m.min()), float(m.max())
    m = (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)
    fig = _figure(9.6, 3.6 * H / W + 0.5)
    axes = fig.subplots(1, 3)
    axes[0].imshow(img)
    axes[0].set_title("Input (model's view)", fontsize=9)
    axes[1].imshow(img)
    im = axes[1].imshow(m, cmap="jet", alpha=0.5, vmin=0, vmax=1)
    axes[1].set_title(name, fontsize=9)
    axes[2].imshow(img * m[..., None])
    axes[2].set_title(f"Input x {short}", fontsize=9)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    bar = fig.colorbar(im, ax=list(axes), shrink=0.8)
    bar.set_label(bar_label)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path, dpi=100)  # photos: the model sees 224 px, so 100 dpi loses nothing


def faithfulness_curves(fractions, maps: dict, path: Path, *, title: str) -> Path:
    """Deletion (left) and insertion (right) curves, one line per map, its mean AUC in the legend.

    maps: name -> {"deletion_curve", "insertion_curve", "deletion_auc", "insertion_auc"}; the random
    baseline is drawn grey and dashed.
    """
    x = [100 * f for f in fractions]
    fig = _figure(9.6, 3.9)
    axes = fig.subplots(1, 2, sharey=True)
    colours = _cmap("tab10")
    for n, (name, m) in enumerate(maps.items()):
        style = dict(color="0.45", linestyle="--") if name == "random" else dict(color=colours(n % 10))
        for ax, kind in zip(axes, ("deletion", "insertion")):
            ax.plot(
                x,
                m[f"{kind}_curve"],
                marker="o",
                markersize=2.5,
                linewidth=1.4,
                label=f"{name} (AUC {m[f'{kind}_auc']:.3f})",
                **style,
            )
    for ax, kind, better in zip(axes, ("Deletion", "Insertion"), ("lower", "higher")):
        ax.set_title(f"{kind}: {better} AUC is more faithful", fontsize=9)
        ax.set_xlabel(f"Pixels {'removed' if kind == 'Deletion' else 'inserted'}, most salient first (%)")
        ax.set_xlim(0, 100)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, frameon=True, framealpha=0.8)
    axes[0].set_ylabel("Probability of the explained class")
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def _cmap(name: str):
    import matplotlib

    return matplotlib.colormaps[name]
