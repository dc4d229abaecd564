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

The attention pass lives in vitcli.analysis.attention_figures, the figures of the learned embeddings in
vitcli.analysis.embeddings, the maths in vitcli.analysis.maths, attention extraction in
vitcli.analysis.attention, drawing in vitcli.analysis.figures; images come through the one image path
and batched forward (vitcli.data.loader, vitcli.inference.forward). It returns a JSON-ready dict: what
was written and the numbers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from pathlib import Path

from vitcli.errors import UsageError
from vitcli.output import display

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


def _check(loaded, attention: bool, pos_embed: bool, filters: bool, gradcam: bool) -> None:
    """Fail before any work when the model cannot make one of the figures asked for."""
    from vitcli.analysis.attention import attention_modules
    from vitcli.analysis.embeddings import patch_embedding_weights, patch_position_embeddings
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
    (
        model,
        images,
        attention_distance,
        attention_map,
        pos_embed_similarity,
        filters,
        gradcam,
        method,
        target,
        faithfulness,
        faithfulness_steps,
        num_images,
        head_fusion,
        discard_ratio,
        num_components,
        out_dir,
        batch_size,
        device,
        precision,
        random_init,
    ) = (getattr(opts, f.name) for f in fields(opts))
    from vitcli.analysis.maths import HEAD_FUSIONS
    from vitcli.data.inputs import expand_inputs

    if not (attention_distance or attention_map or pos_embed_similarity or filters or gradcam):
        raise UsageError(
            "nothing to draw",
            "give one or more of --attention-distance, --attention-map, --pos-embed-similarity, --filters, --gradcam",
        )
    _check_options(
        gradcam=gradcam,
        method=method,
        target=target,
        faithfulness=faithfulness,
        attention_map=attention_map,
        steps=faithfulness_steps,
    )
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
            asked = [
                f
                for f, on in (
                    ("--attention-distance", attention_distance),
                    ("--attention-map", attention_map),
                    ("--gradcam", gradcam),
                )
                if on
            ]
            raise UsageError(
                f"{' and '.join(asked)} {'need' if len(asked) > 1 else 'needs'} images",
                "give image files, folders or globs after the options",
            )
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
    sink.info(
        f"{loaded.architecture}{' (random weights)' if random_init else ''} on {rt.describe()} -> {out}", style="dim"
    )

    result: dict = {
        "model": model,
        "architecture": loaded.architecture,
        "random_init": random_init,
        "out_dir": str(out),
        "files": [],
        "errors": errors,
    }
    stems = image_stems(paths)
    rollout_maps: dict | None = {} if faithfulness and attention_map else None
    if attention and paths:
        from vitcli.analysis.attention_figures import attention_figures

        distance = attention_figures(
            loaded,
            rt,
            paths,
            out,
            distance=attention_distance,
            rollout=attention_map,
            head_fusion=head_fusion,
            discard_ratio=discard_ratio,
            batch_size=batch_size,
            arch=_arch_name(loaded),
            result=result,
            stems=stems,
            keep_rollout=rollout_maps,
        )
        if distance is not None:
            result["attention_distance"] = distance
    cams = None  # the Grad-CAM maps and classes, for the faithfulness pass
    if gradcam and paths:
        from vitcli.analysis.gradcam import gradcam_figures

        cams = gradcam_figures(
            loaded,
            rt,
            paths,
            stems,
            out,
            method=method,
            target=target_index,
            batch_size=batch_size,
            arch=_arch_name(loaded),
            result=result,
        )
    if faithfulness and paths:
        from vitcli.analysis.attention import token_layout
        from vitcli.analysis.faithfulness import faithfulness_figures

        maps = {**({method: cams.maps} if cams else {}), **({"rollout": rollout_maps} if attention_map else {})}
        grid = (
            cams.grid
            if cams and cams.grid
            else token_layout(loaded.model, tuple(loaded.data_config["input_size"][1:])).grid
        )
        result["faithfulness"] = faithfulness_figures(
            loaded,
            rt,
            paths,
            maps,
            out,
            grid=grid,
            targets=cams.targets if cams else None,
            target=target_index,
            steps=faithfulness_steps,
            batch_size=batch_size,
            arch=_arch_name(loaded),
            result=result,
        )
    if pos_embed_similarity:
        from vitcli.analysis.embeddings import pos_embed_figure

        result["pos_embed_similarity"] = pos_embed_figure(loaded, out, arch=_arch_name(loaded), result=result)
    if filters:
        from vitcli.analysis.embeddings import filters_figure

        result["filters"] = filters_figure(loaded, out, num_components, arch=_arch_name(loaded), result=result)
    result["errors"] = list({(e["path"], e["error"]): e for e in result["errors"]}.values())  # once per image
    return result


def _check_options(*, gradcam: bool, method: str, target, faithfulness: bool, attention_map: bool, steps: int) -> None:
    from vitcli.analysis.gradcam import check_method

    check_method(method)
    if faithfulness and not (gradcam or attention_map):
        raise UsageError(
            "--faithfulness scores the maps of --gradcam and --attention-map", "add --gradcam and/or --attention-map"
        )
    if target is not None and not (gradcam or faithfulness):
        raise UsageError("--target chooses the class of --gradcam and --faithfulness", "add --gradcam")
    if steps < 2:
        raise UsageError("--faithfulness-steps must be at least 2")


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
