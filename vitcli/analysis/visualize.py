"""`vit visualize`: the paper's analysis figures for a model, written to a folder.

`run(...)` validates the request, loads the model once, and writes what was asked for:

- attention_distance.{png,json}: mean attention distance per layer and head (Fig. 7 right);
- rollout/<image>.{png,npy}: attention rollout per image (Fig. 6); the .npy is the (rows, cols) map;
- pos_embed_similarity.{png,npy}: cosine similarity of the patch position embeddings (Fig. 7 centre);
  the .npy is the (N, N) matrix over patches in row-major grid order;
- filters.png: principal components of the patch-embedding filters (Fig. 7 left);
- gradcam/<image>.{png,npy}: a class-specific Grad-CAM map per image (vitcli.analysis.gradcam);
- faithfulness.{png,json}: deletion and insertion AUCs of those maps and of a random map
  (vitcli.analysis.faithfulness).

The maths lives in vitcli.analysis.maths, attention extraction in vitcli.analysis.attention, drawing
in vitcli.analysis.figures; images come through the one image path and batched forward
(vitcli.data.loader, vitcli.inference.forward). It returns a JSON-ready dict: what was written and the
numbers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from pathlib import Path

from vitcli.errors import UsageError, VitError
from vitcli.output import atomic_write, display, dumps

DEFAULT_OUT_BASE = Path("runs") / "visualize"


def next_run_dir(base: Path = DEFAULT_OUT_BASE) -> Path:
    """base/<n>, n one more than the largest numbered folder already there (1 for the first)."""
    base.mkdir(parents=True, exist_ok=True)
    while True:
        taken = [int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit()]
        path = base / str(max(taken, default=0) + 1)
        try:
            path.mkdir()
            return path
        except FileExistsError:  # another run took it between the listing and mkdir
            continue


def _arch_name(loaded) -> str:
    return loaded.architecture.split(".", 1)[0] if loaded.architecture else type(loaded.model).__name__


def patch_position_embeddings(model):
    """The learned position embeddings of the patches (prefix tokens' rows dropped): ((N, C), grid)."""
    import torch

    from vitcli.analysis.attention import token_layout

    pe = getattr(model, "pos_embed", None)
    if not isinstance(pe, torch.Tensor):
        raise VitError(f"{type(model).__name__} has no learned absolute position embedding (pos_embed)",
                       "--pos-embed needs a ViT with learned position embeddings")
    pe = pe.detach().float()
    if pe.dim() == 4:  # (1, rows, cols, C)
        return pe[0].reshape(-1, pe.shape[-1]), (pe.shape[1], pe.shape[2])
    pe = pe[0]  # (T, C)
    layout = token_layout(model)
    extra = pe.shape[0] - layout.num_patches
    if extra not in (0, layout.num_prefix):
        raise VitError(f"pos_embed has {pe.shape[0]} rows, which does not match a "
                       f"{layout.grid[0]}x{layout.grid[1]} patch grid")
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
    raise VitError(f"{type(model).__name__} has no convolutional patch embedding",
                   "--filters needs a model whose first layer is a convolution on the image")


def _check(loaded, attention: bool, pos_embed: bool, filters: bool, gradcam: bool) -> None:
    """Fail before any work when the model cannot make one of the figures asked for."""
    from vitcli.analysis.attention import attention_modules
    from vitcli.analysis.gradcam import cam_layer

    if gradcam:
        cam_layer(loaded.model)
    if attention:
        attention_modules(loaded.model)
    if pos_embed:
        patch_position_embeddings(loaded.model)
    if filters:
        patch_embedding_weights(loaded.model)


@dataclass(frozen=True)
class VisualizeOptions:
    """What `vit visualize` was asked, in one value: the CLI fills it (its defaults live there only)."""

    model: str
    images: tuple[str, ...]
    attention_distance: bool
    attention_map: bool
    pos_embed_similarity: bool
    filters: bool
    gradcam: bool
    method: str
    target: str | None
    faithfulness: bool
    faithfulness_steps: int
    num_images: int
    head_fusion: str
    discard_ratio: float
    num_components: int
    out_dir: Path | None
    batch_size: int
    device: str
    precision: str
    random_init: bool


def run(opts: VisualizeOptions) -> dict:
    """Make the asked-for figures for `model` from `images` (files, folders, globs; the first
    `num_images` of them); returns what was written and the numbers."""
    (model, images, attention_distance, attention_map, pos_embed_similarity, filters, gradcam, method, target,
     faithfulness, faithfulness_steps, num_images, head_fusion, discard_ratio, num_components, out_dir, batch_size,
     device, precision, random_init) = (getattr(opts, f.name) for f in fields(opts))
    from vitcli.analysis.maths import HEAD_FUSIONS
    from vitcli.data.inputs import expand_inputs

    if not (attention_distance or attention_map or pos_embed_similarity or filters or gradcam):
        raise UsageError("nothing to draw", "give one or more of --attention-distance, --attention-map, "
                                            "--pos-embed-similarity, --filters, --gradcam")
    _check_options(gradcam=gradcam, method=method, target=target, faithfulness=faithfulness,
                   attention_map=attention_map, steps=faithfulness_steps)
    if head_fusion not in HEAD_FUSIONS:
        raise UsageError(f"--head-fusion {head_fusion!r}: use one of {', '.join(HEAD_FUSIONS)}")
    if not 0.0 <= discard_ratio < 1.0:
        raise UsageError(f"--discard-ratio {discard_ratio}: must be in [0, 1)")
    if num_components < 1:
        raise UsageError("--num-components must be at least 1")
    attention = attention_distance or attention_map
    paths, errors = [], []
    if attention or gradcam:
        if not images:
            asked = [f for f, on in (("--attention-distance", attention_distance), ("--attention-map", attention_map),
                                     ("--gradcam", gradcam)) if on]
            raise UsageError(f"{' and '.join(asked)} {'need' if len(asked) > 1 else 'needs'} images",
                             "give image files, folders or globs after the options")
        paths, missing = expand_inputs(list(images))
        paths = paths[:num_images]
        errors = [{"path": display(p), "error": why} for p, why in missing]
    if gradcam or faithfulness:
        from vitcli.analysis.gradcam import engine

        engine()  # before the model loads: a missing optional package is a one-line error

    from vitcli import output as sink
    from vitcli.accel.runtime import runtime
    from vitcli.models.resolver import load_model

    rt = runtime(device, precision)
    if random_init:  # the same random weights, so the same maps, every run
        import torch

        torch.manual_seed(0)
    loaded = load_model(model, device=rt.device, pretrained=not random_init)
    target_index = None
    if target is not None:
        from vitcli.analysis.gradcam import resolve_target

        target_index = resolve_target(target, loaded.label_names)
    _check(loaded, attention, pos_embed_similarity, filters, gradcam)
    out = Path(out_dir) if out_dir is not None else next_run_dir()
    out.mkdir(parents=True, exist_ok=True)
    sink.info(f"{loaded.architecture}{' (random weights)' if random_init else ''} on {rt.describe()} -> {out}",
              style="dim")

    result: dict = {"model": model, "architecture": loaded.architecture, "random_init": random_init,
                    "out_dir": str(out), "files": [], "errors": errors}
    stems = image_stems(paths)
    rollout_maps: dict | None = {} if faithfulness and attention_map else None
    if attention and paths:
        distance = attention_figures(loaded, rt, paths, out, distance=attention_distance, rollout=attention_map,
                                     head_fusion=head_fusion, discard_ratio=discard_ratio, batch_size=batch_size,
                                     result=result, stems=stems, keep_rollout=rollout_maps)
        if distance is not None:
            result["attention_distance"] = distance
    cams = None  # the Grad-CAM maps and classes, for the faithfulness pass
    if gradcam and paths:
        from vitcli.analysis.gradcam import gradcam_figures

        cams = gradcam_figures(loaded, rt, paths, stems, out, method=method, target=target_index,
                               batch_size=batch_size, arch=_arch_name(loaded), result=result)
    if faithfulness and paths:
        from vitcli.analysis.attention import token_layout
        from vitcli.analysis.faithfulness import faithfulness_figures

        maps = {**({method: cams.maps} if cams else {}), **({"rollout": rollout_maps} if attention_map else {})}
        grid = cams.grid if cams and cams.grid else token_layout(loaded.model,
                                                                 tuple(loaded.data_config["input_size"][1:])).grid
        result["faithfulness"] = faithfulness_figures(
            loaded, rt, paths, maps, out, grid=grid, targets=cams.targets if cams else None, target=target_index,
            steps=faithfulness_steps, batch_size=batch_size, arch=_arch_name(loaded), result=result)
    if pos_embed_similarity:
        result["pos_embed_similarity"] = _pos_embed_figure(loaded, out, result)
    if filters:
        result["filters"] = _filters_figure(loaded, out, num_components, result)
    result["errors"] = list({(e["path"], e["error"]): e for e in result["errors"]}.values())  # once per image
    return result


def _check_options(*, gradcam: bool, method: str, target, faithfulness: bool, attention_map: bool,
                   steps: int) -> None:
    from vitcli.analysis.gradcam import check_method

    check_method(method)
    if faithfulness and not (gradcam or attention_map):
        raise UsageError("--faithfulness scores the maps of --gradcam and --attention-map",
                         "add --gradcam and/or --attention-map")
    if target is not None and not (gradcam or faithfulness):
        raise UsageError("--target chooses the class of --gradcam and --faithfulness", "add --gradcam")
    if steps < 2:
        raise UsageError("--faithfulness-steps must be at least 2")


def _pos_embed_figure(loaded, out: Path, result: dict) -> dict:
    import numpy as np

    from vitcli.analysis import figures
    from vitcli.analysis.maths import cosine_similarity_matrix, most_similar_is_neighbour

    pe, grid = patch_position_embeddings(loaded.model)
    sim = cosine_similarity_matrix(pe)
    atomic_write(out / "pos_embed_similarity.npy", lambda tmp: np.save(tmp, sim.numpy().astype(np.float32)))
    figures.pos_embed_similarity(sim.numpy(), grid, out / "pos_embed_similarity.png",
                                 title=f"Position embedding similarity: {_arch_name(loaded)}")
    result["files"] += [str(out / "pos_embed_similarity.png"), str(out / "pos_embed_similarity.npy")]
    return {"grid": list(grid),
            "neighbour_fraction": round(float(most_similar_is_neighbour(sim, grid).double().mean()), 4)}


def _filters_figure(loaded, out: Path, num_components: int, result: dict) -> dict:
    from vitcli.analysis import figures
    from vitcli.analysis.maths import principal_components

    weights, layer = patch_embedding_weights(loaded.model)
    comps, explained = principal_components(weights, num_components)
    figures.filters(comps.numpy(), out / "filters.png", explained=explained.tolist(),
                    title=f"Principal components of the patch embedding ({layer}): {_arch_name(loaded)}")
    result["files"].append(str(out / "filters.png"))
    return {"layer": layer, "num_components": int(comps.shape[0]), "filter_shape": list(weights.shape[1:]),
            "explained_variance_ratio": [round(float(v), 5) for v in explained]}


def image_stems(paths) -> list[str]:
    """A file-name stem per image for its outputs (rollout/, gradcam/): the name, made unique (-2, -3, ...)."""
    taken: set[str] = set()
    stems = []
    for path in paths:
        stem = re.sub(r"[^\w.-]+", "_", Path(path).stem) or "image"
        name, n = stem, 1
        while name in taken:
            n += 1
            name = f"{stem}-{n}"
        taken.add(name)
        stems.append(name)
    return stems


def write_json(path: Path, obj: dict) -> None:
    """A JSON object with one key per line (a table stays one row per line)."""
    lines = [f" {dumps(k)}: " + (
        "[\n  " + ",\n  ".join(dumps(row) for row in v) + "\n ]" if k == "distance" else dumps(v))
        for k, v in obj.items()]
    atomic_write(path, "{\n" + ",\n".join(lines) + "\n}\n")


def attention_figures(loaded, rt, paths, out: Path, *, distance: bool, rollout: bool, head_fusion: str,
                      discard_ratio: float, batch_size: int, result: dict, stems=None,
                      keep_rollout: dict | None = None) -> dict | None:
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
    stems = image_stems(paths) if stems is None else stems
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
                    raise NotAViTError(f"{maps[0].shape[-1]} attention tokens do not match {layout.num_prefix} "
                                       f"prefix tokens + a {layout.grid[0]}x{layout.grid[1]} patch grid")
                if distance:
                    d = torch.stack([mean_attention_distance(a, layout.grid, layout.patch_size, layout.num_prefix)
                                     for a in maps])  # (layers, B, heads)
                    total = d.sum(dim=1).cpu() if total is None else total + d.sum(dim=1).cpu()
                    count += batch.images.shape[0]
                if rollout:
                    r = attention_rollout(maps, layout.num_prefix, layout.has_class_token, head_fusion,
                                          discard_ratio).reshape(-1, *layout.grid).float().cpu().numpy()
                    view = (batch.images.float() * std + mean).clamp(0, 1).permute(0, 2, 3, 1).numpy()
                    for j, i in enumerate(batch.positions):
                        png, npy = out / "rollout" / f"{stems[i]}.png", out / "rollout" / f"{stems[i]}.npy"
                        if keep_rollout is not None:
                            keep_rollout[i] = r[j].astype(np.float32)
                        atomic_write(npy, lambda tmp: np.save(tmp, r[j].astype(np.float32)))
                        figures.map_overlay(view[j], r[j], png, title=(
                            f"{display(Path(paths[i]).name)}: {_arch_name(loaded)}, head fusion {head_fusion}, "
                            f"discard ratio {discard_ratio:g}"))
                        result["files"] += [display(png), display(npy)]
                        result.setdefault("rollout", []).append(
                            {"image": display(paths[i]), "png": display(png), "npy": display(npy)})
            advance(len(batch.positions) + len(batch.skipped))
    if not distance:
        return None
    if count == 0:
        raise VitError("none of the images could be read, so there is no attention distance to report")
    table = (total / count).tolist()  # (layers, heads)
    patch = layout.patch_size[0] if layout.patch_size[0] == layout.patch_size[1] else list(layout.patch_size)
    record = {"model": loaded.architecture, "patch_size": patch, "grid": list(layout.grid),
              "num_prefix_tokens": layout.num_prefix, "num_images": count,
              "distance": [[round(v, 3) for v in row] for row in table]}
    write_json(out / "attention_distance.json", record)
    figures.attention_distance(table, out / "attention_distance.png", image_size=max(
        layout.grid[0] * layout.patch_size[0], layout.grid[1] * layout.patch_size[1]),
        title=f"Mean attention distance: {_arch_name(loaded)}, {count} images")
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
    return {"first_layer_min": round(min(first), 3), "first_layer_max": round(max(first), 3),
            "first_layer_ratio": round(max(first) / max(min(first), 1e-9), 3),
            "layers_compared": k, "first_layers_mean": round(first_k, 3), "last_layers_mean": round(last_k, 3),
            "last_over_first": round(last_k / max(first_k, 1e-9), 3)}
