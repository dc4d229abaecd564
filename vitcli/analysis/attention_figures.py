"""The attention pass of `vit visualize`: one pass over the images through the model's attention
(vitcli.analysis.attention), accumulating the mean attention distance per layer and head (Fig. 7 right:
attention_distance.{png,json}, and the summary the paper's reading rests on) and/or writing an
attention rollout map per image (Fig. 6: rollout/<image>.{png,npy}).
"""

from __future__ import annotations

from pathlib import Path

from vitcli.errors import VitError
from vitcli.output import atomic_write, display, dumps


def write_json(path: Path, obj: dict) -> None:
    """A JSON object with one key per line (a table stays one row per line)."""
    lines = [
        f" {dumps(k)}: " + ("[\n  " + ",\n  ".join(dumps(row) for row in v) + "\n ]" if k == "distance" else dumps(v))
        for k, v in obj.items()
    ]
    atomic_write(path, "{\n" + ",\n".join(lines) + "\n}\n")


def attention_figures(
    loaded,
    rt,
    paths,
    out: Path,
    *,
    distance: bool,
    rollout: bool,
    head_fusion: str,
    discard_ratio: float,
    batch_size: int,
    arch: str,
    result: dict,
    stems: list[str],
    keep_rollout: dict | None = None,
) -> dict | None:
    """One pass over `paths`: mean attention distance (accumulated over images) and/or rollout maps
    (kept in `keep_rollout`, image position -> (rows, cols) map, when given)."""
    import numpy as np
    import torch

    from vitcli import output as sink
    from vitcli.analysis import figures
    from vitcli.analysis.attention import NotAViTError, attention_maps, method_for, token_layout
    from vitcli.analysis.maths import mean_attention_distance
    from vitcli.analysis.maths import rollout as attention_rollout
    from vitcli.data.loader import ImageDataset, Records
    from vitcli.data.transforms import eval_transform
    from vitcli.inference.forward import forward

    model = loaded.model
    method = method_for(model)
    mean = torch.tensor(loaded.data_config["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(loaded.data_config["std"]).view(1, 3, 1, 1)
    dataset = ImageDataset(Records.of_paths(paths), transform=eval_transform(loaded.data_config))
    total, count, layout = None, 0, None
    what = "attention distance" if distance else "attention rollout"

    def maps_of(x):
        return attention_maps(model, x, method)

    with sink.progress(what, total=len(paths), unit="img") as advance:
        for batch, maps in forward(maps_of, dataset, rt, batch_size=batch_size):
            result["errors"] += [{"path": s.path, "error": s.reason} for s in batch.skipped]
            if maps is not None:
                layout = token_layout(model, tuple(batch.images.shape[-2:]))
                if rt.device.type == "mps":  # the analysis runs in float64, which MPS lacks
                    maps = [m.cpu() for m in maps]
                if maps[0].shape[-1] != layout.num_tokens:
                    raise NotAViTError(
                        f"{maps[0].shape[-1]} attention tokens do not match {layout.num_prefix} "
                        f"prefix tokens + a {layout.grid[0]}x{layout.grid[1]} patch grid"
                    )
                if distance:
                    d = torch.stack(
                        [mean_attention_distance(a, layout.grid, layout.patch_size, layout.num_prefix) for a in maps]
                    )  # (layers, B, heads)
                    total = d.sum(dim=1).cpu() if total is None else total + d.sum(dim=1).cpu()
                    count += batch.images.shape[0]
                if rollout:
                    r = (
                        attention_rollout(maps, layout.num_prefix, layout.has_class_token, head_fusion, discard_ratio)
                        .reshape(-1, *layout.grid)
                        .float()
                        .cpu()
                        .numpy()
                    )
                    view = (batch.images.float() * std + mean).clamp(0, 1).permute(0, 2, 3, 1).numpy()
                    for j, i in enumerate(batch.positions):
                        png, npy = out / "rollout" / f"{stems[i]}.png", out / "rollout" / f"{stems[i]}.npy"
                        if keep_rollout is not None:
                            keep_rollout[i] = r[j].astype(np.float32)
                        atomic_write(npy, lambda tmp: np.save(tmp, r[j].astype(np.float32)))
                        figures.map_overlay(
                            view[j],
                            r[j],
                            png,
                            title=(
                                f"{display(Path(paths[i]).name)}: {arch}, head fusion {head_fusion}, "
                                f"discard ratio {discard_ratio:g}"
                            ),
                        )
                        result["files"] += [display(png), display(npy)]
                        result.setdefault("rollout", []).append(
                            {"image": display(paths[i]), "png": display(png), "npy": display(npy)}
                        )
            advance(len(batch.positions) + len(batch.skipped))
    if not distance:
        return None
    if count == 0:
        raise VitError("none of the images could be read, so there is no attention distance to report")
    table = (total / count).tolist()  # (layers, heads)
    patch = layout.patch_size[0] if layout.patch_size[0] == layout.patch_size[1] else list(layout.patch_size)
    record = {
        "model": loaded.architecture,
        "patch_size": patch,
        "grid": list(layout.grid),
        "num_prefix_tokens": layout.num_prefix,
        "num_images": count,
        "distance": [[round(v, 3) for v in row] for row in table],
    }
    write_json(out / "attention_distance.json", record)
    figures.attention_distance(
        table,
        out / "attention_distance.png",
        image_size=max(layout.grid[0] * layout.patch_size[0], layout.grid[1] * layout.patch_size[1]),
        title=f"Mean attention distance: {arch}, {count} images",
    )
    result["files"] += [str(out / "attention_distance.png"), str(out / "attention_distance.json")]
    return {**record, "summary": distance_summary(table), "method": method}


def distance_summary(table) -> dict:
    """The numbers the paper's reading of Fig. 7 rests on: the spread of the first layer's heads, and how
    much farther the last layers look than the first (k = min(3, layers // 2) layers each)."""
    layers = len(table)
    k = max(1, min(3, layers // 2))
    first, last = table[0], table[-k:]
    first_k = sum(sum(row) / len(row) for row in table[:k]) / k
    last_k = sum(sum(row) / len(row) for row in last) / k
    return {
        "first_layer_min": round(min(first), 3),
        "first_layer_max": round(max(first), 3),
        "first_layer_ratio": round(max(first) / max(min(first), 1e-9), 3),
        "layers_compared": k,
        "first_layers_mean": round(first_k, 3),
        "last_layers_mean": round(last_k, 3),
        "last_over_first": round(last_k / max(first_k, 1e-9), 3),
    }
