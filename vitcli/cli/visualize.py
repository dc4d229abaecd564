"""`vit visualize`: the paper's analysis figures (attention distance, rollout, position embeddings,
patch-embedding filters), class-specific Grad-CAM maps and their faithfulness, as PNG + JSON/NPY files."""

from __future__ import annotations

from typing import Annotated

import typer

from vitcli.cli.options import (
    DEFAULT_MODEL,
    BatchSizeOpt,
    DeviceOpt,
    JsonOpt,
    ModelOpt,
    OfflineOpt,
    OutDirOpt,
    PrecisionOpt,
    RandomInitOpt,
)

_METHODS = "gradcam | gradcam++ | hirescam | xgradcam | layercam | eigencam | eigengradcam | gradcam-elementwise"


def visualize(
    images: Annotated[
        list[str] | None,
        typer.Argument(
            help="Image files, folders (searched recursively) or globs, as for vit predict: the images of "
            "--attention-distance, --attention-map and --gradcam.",
            metavar="IMAGES",
            show_default=False,
        ),
    ] = None,
    attention_distance: Annotated[
        bool,
        typer.Option(
            "--attention-distance",
            help="Mean attention distance per layer and head over the IMAGES (paper Fig. 7 right).",
        ),
    ] = False,
    attention_map: Annotated[
        bool, typer.Option("--attention-map", help="Attention rollout overlay per image (paper Fig. 6) for the IMAGES.")
    ] = False,
    pos_embed_similarity: Annotated[
        bool,
        typer.Option(
            "--pos-embed-similarity", help="Cosine similarity of the position embeddings (paper Fig. 7 centre)."
        ),
    ] = False,
    filters: Annotated[
        bool, typer.Option("--filters", help="Principal components of the patch-embedding filters (paper Fig. 7 left).")
    ] = False,
    gradcam: Annotated[
        bool,
        typer.Option(
            "--gradcam",
            help="Class-specific saliency overlay per image (pytorch-grad-cam: ViT/DeiT, PoolFormer/MetaFormer, "
            "CNNs); needs vitcli\\[gradcam].",
        ),
    ] = False,
    method: Annotated[str, typer.Option("--method", help=f"Grad-CAM variant: {_METHODS}.")] = "gradcam",
    target: Annotated[
        str | None,
        typer.Option(
            "--target",
            help="The class to explain: a label name of the model or an index (default: the predicted class).",
            metavar="LABEL_OR_INDEX",
            show_default=False,
        ),
    ] = None,
    faithfulness: Annotated[
        bool,
        typer.Option(
            "--faithfulness",
            help="Deletion and insertion AUCs (RISE) of the --gradcam and --attention-map maps and of "
            "a random map, averaged over the IMAGES.",
        ),
    ] = False,
    faithfulness_steps: Annotated[
        int,
        typer.Option(
            "--faithfulness-steps", min=2, help="Faithfulness: steps of each curve (one batched forward each)."
        ),
    ] = 20,
    model: ModelOpt = DEFAULT_MODEL,
    random_init: RandomInitOpt = False,
    num_images: Annotated[
        int, typer.Option("--num-images", min=1, help="Use at most the first N of the IMAGES.")
    ] = 128,
    head_fusion: Annotated[
        str, typer.Option("--head-fusion", help="Rollout: fuse heads by mean, max or min.")
    ] = "mean",
    discard_ratio: Annotated[
        float,
        typer.Option(
            "--discard-ratio",
            min=0.0,
            max=0.99,
            help="Rollout: zero this fraction of the weakest attention weights per layer.",
        ),
    ] = 0.0,
    num_components: Annotated[
        int, typer.Option("--num-components", min=1, help="Filters: principal components to draw.")
    ] = 28,
    out_dir: OutDirOpt = None,
    batch_size: BatchSizeOpt = 8,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    json_out: JsonOpt = False,
    offline: OfflineOpt = False,
) -> None:
    """Draw the paper's analysis figures for a model into --out-dir (default runs/visualize/N)."""
    from vitcli import env

    env.set_offline(offline)
    from vitcli import output as sink
    from vitcli.analysis.visualize import VisualizeOptions, run

    result = run(
        VisualizeOptions(
            model=model,
            images=tuple(images or ()),
            attention_distance=attention_distance,
            attention_map=attention_map,
            pos_embed_similarity=pos_embed_similarity,
            filters=filters,
            gradcam=gradcam,
            method=method.lower(),
            target=target,
            faithfulness=faithfulness,
            faithfulness_steps=faithfulness_steps,
            num_images=num_images,
            head_fusion=head_fusion.lower(),
            discard_ratio=discard_ratio,
            num_components=num_components,
            out_dir=out_dir,
            batch_size=batch_size,
            device=device,
            precision=precision,
            random_init=random_init,
        )
    )
    if json_out:
        sink.emit_json(result)
    else:
        _render(result)
    if result["errors"]:
        for e in result["errors"]:
            sink.error(f"{e['path']}: {e['error']}")
        sink.warn(f"{len(result['errors'])} input(s) could not be read (listed above)")
        raise typer.Exit(1)


def _render(result: dict) -> None:
    from vitcli import output as sink
    from vitcli.cli import tables

    console = sink.out()
    if "faithfulness" in result:
        _faithfulness_table(result)
    dist = result.get("attention_distance")
    if dist:
        heads = len(dist["distance"][0])
        columns = (
            [tables.Column("layer", right=True)]
            + [tables.Column(f"h{h + 1}", right=True) for h in range(heads)]
            + [tables.Column("mean", right=True)]
        )
        tables.print_table(
            columns,
            [
                (str(i), *[f"{v:.1f}" for v in row], f"{sum(row) / len(row):.1f}")
                for i, row in enumerate(dist["distance"], 1)
            ],
            title=f"Mean attention distance (pixels), {dist['num_images']} images",
        )
        s = dist["summary"]
        console.print(
            f"first layer: heads from {s['first_layer_min']:.1f} to {s['first_layer_max']:.1f} px "
            f"({s['first_layer_ratio']:.1f}x); last {s['layers_compared']} layers look "
            f"{s['last_over_first']:.2f}x as far as the first {s['layers_compared']}"
        )
    if "pos_embed_similarity" in result:
        p = result["pos_embed_similarity"]
        console.print(
            f"position embeddings: {100 * p['neighbour_fraction']:.1f}% of the patches of the "
            f"{p['grid'][0]}x{p['grid'][1]} grid are most similar to a neighbouring patch",
            highlight=False,
        )
    g = result.get("gradcam")
    if g:
        console.print(
            f"{g['method']} at {g['layer']} ({g['layer_kind']}, {'x'.join(map(str, g['grid'] or []))}):",
            highlight=False,
        )
        for im in g["images"]:
            console.print(
                f"  {im['image']}: class {im['target']} {im['target_label'].split(',')[0]!r} "
                f"({im['target_prob']:.3g}); predicted {im['predicted']} "
                f"{im['predicted_label'].split(',')[0]!r} ({im['predicted_prob']:.3g})",
                highlight=False,
            )
    if "filters" in result:
        f = result["filters"]
        top = sum(f["explained_variance_ratio"])
        console.print(
            f"filters: top {f['num_components']} principal components of {f['layer']} explain "
            f"{100 * top:.1f}% of the variance"
        )
    console.print(f"wrote {len(result['files'])} file(s) to {result['out_dir']}")
    for path in result["files"]:
        console.print(f"  {path}")


def _faithfulness_table(result: dict) -> None:
    from vitcli.cli import tables

    setup = result["faithfulness_setup"]
    columns = [
        tables.Column("map"),
        tables.Column("deletion AUC (lower: faithful)", right=True),
        tables.Column("insertion AUC (higher: faithful)", right=True),
    ]
    tables.print_table(
        columns,
        [(name, f"{s['deletion_auc']:.4f}", f"{s['insertion_auc']:.4f}") for name, s in result["faithfulness"].items()],
        title=f"Faithfulness: {setup['num_images']} images, {setup['steps']} steps",
    )


def register(app: typer.Typer) -> None:
    app.command("visualize")(visualize)
