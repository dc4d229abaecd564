"""`vit eval`: accuracy and diagnostics on a labelled split, or few-shot linear evaluation."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vitcli.cli.options import (
    DEFAULT_MODEL,
    BackendOpt,
    BatchSizeOpt,
    CompileOpt,
    DataDirOpt,
    DatasetOpt,
    DeviceOpt,
    ImageColumnOpt,
    JsonOpt,
    LabelColumnOpt,
    ModelOpt,
    OfflineOpt,
    OutDirOpt,
    PrecisionOpt,
    ThresholdOpt,
    WorkersOpt,
)


def eval_command(
    model: ModelOpt = DEFAULT_MODEL,
    dataset: DatasetOpt = None,
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            help="A folder of images: with --labels, a flat folder (ImageNet's val layout); "
            "without, a folder of class folders, evaluated whole.",
        ),
    ] = None,
    labels: Annotated[
        Path | None,
        typer.Option(
            "--labels",
            help="Labels file for --data: one 'FILENAME CLASS_INDEX' line per image, indices in the model's classes.",
        ),
    ] = None,
    split: Annotated[
        str | None,
        typer.Option("--split", help="train | minival | val | test (default: test, else val, else minival)."),
    ] = None,
    data_dir: DataDirOpt = None,
    image_column: ImageColumnOpt = None,
    label_column: LabelColumnOpt = None,
    real_labels: Annotated[
        Path | None, typer.Option("--real-labels", help="ImageNet ReaL labels (real.json) for ReaL accuracy.")
    ] = None,
    few_shot: Annotated[
        str | None,
        typer.Option("--few-shot", help="Few-shot linear evaluation instead: shots per class, e.g. 1,5,10,25."),
    ] = None,
    seeds: Annotated[int, typer.Option("--seeds", min=1, help="Few-shot draws per shot count.")] = 3,
    l2: Annotated[
        str,
        typer.Option(
            "--l2", help="Few-shot L2 strength; several (e.g. 256,1024,4096) for a sweep. The first is the headline."
        ),
    ] = "1024",
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Few-shot: do not read or write the feature cache.")
    ] = False,
    threshold: ThresholdOpt = None,
    batch_size: BatchSizeOpt = 64,
    workers: WorkersOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    backend: BackendOpt = "torch",
    compile: CompileOpt = False,
    json_out: JsonOpt = False,
    out_dir: OutDirOpt = None,
    offline: OfflineOpt = False,
) -> None:
    """Evaluate a model: top-1/5, loss, calibration, confusions; or few-shot linear probes.

    A multi-label model (or data): mAP, per-class AP, micro/macro precision, recall and F1 at the thresholds.
    --few-shot fits closed-form ridge regressions on frozen pre-logit features, as the paper does.
    """
    from vitcli import env
    from vitcli.errors import UsageError

    env.set_offline(offline)
    if dataset is None and data is None:  # a run folder: the data it was trained on (its test split by default)
        from vitcli.eval.splits import run_dataset

        trained_on = run_dataset(model)
        if trained_on is not None:
            from vitcli import output as sink

            dataset, data_dir = trained_on["dataset"], data_dir or trained_on["data_dir"]
            image_column = image_column or trained_on["image_column"]
            label_column = label_column or trained_on["label_column"]
            sink.info(f"dataset {dataset}: the one the run was trained on (run.json)", style="dim")
    if (dataset is None) == (data is None):
        raise UsageError(
            "give either --dataset NAME|PATH or --data DIR"
            if dataset is None
            else "give --dataset or --data, not both",
            "a training run folder as --model needs neither: it evaluates the run's own dataset"
            if dataset is None
            else None,
        )
    if labels is not None and data is None:
        raise UsageError("--labels needs --data (the folder the file names are relative to)")
    from vitcli import output as sink
    from vitcli.eval import evaluate, reports

    opts = evaluate.EvalOptions(
        model=model,
        dataset=dataset,
        data=data,
        labels=labels,
        split=split,
        data_dir=data_dir,
        image_column=image_column,
        label_column=label_column,
        real_labels=real_labels,
        batch_size=batch_size,
        workers=workers,
        device=device,
        precision=precision,
        backend=backend,
        compile=compile,
        few_shot=few_shot,
        seeds=seeds,
        l2=l2,
        use_cache=not no_cache,
        threshold=threshold,
    )
    announce = lambda text: sink.info(text, style="dim")  # noqa: E731
    progress_factory = lambda description, total: sink.progress(description, total=total, unit="img")  # noqa: E731
    if few_shot is not None:
        result = evaluate.few_shot(opts, announce=announce, progress_factory=progress_factory)
        _warn_failed(result["failed"])
        for asked, used in (result.get("shots_reduced") or {}).items():
            sink.warn(f"--few-shot {asked}: the largest class has {used} training images; reported as {used}-shot")
        if json_out:  # the results first: a failing --out-dir must not cost them
            sink.emit_json(result)
        else:
            _render_few_shot(result)
        if out_dir is not None:
            sink.info(f"wrote {reports.write_few_shot(result, out_dir)}", style="dim")
        if result["num_failed"]:
            raise typer.Exit(1)
        return

    result = evaluate.evaluate(opts, announce=announce, progress_factory=progress_factory)
    if result.multi_label:
        _multi_label(result, json_out, out_dir)
        return
    _warn_failed(result.summary["failed"])
    if json_out:  # the results first: a failing --out-dir must not cost them
        sink.emit_json(result.summary)
    else:
        _render(result)
    if out_dir is not None:
        written = reports.write_artefacts(result, out_dir)
        sink.info(f"wrote {', '.join(str(p) for p in written)}", style="dim")
    if result.summary["num_failed"]:  # as predict and visualize: the numbers stand, the exit code says
        raise typer.Exit(1)


def _multi_label(result, json_out, out_dir) -> None:
    from rich.table import Table

    from vitcli import output as sink
    from vitcli.eval import multilabel_eval

    s = result.summary
    _warn_failed(s["failed"])
    if json_out:
        sink.emit_json({**s, "per_class": result.per_class})
    else:
        table = Table(box=None, pad_edge=False, show_header=False)
        table.add_column("metric", style="bold")
        table.add_column("value", justify="right")
        rows = [
            ("images", f"{s['num_images']}" + (f" ({s['num_failed']} unreadable)" if s["num_failed"] else "")),
            ("mAP", f"{s['mAP']:.2f} %"),
            ("loss (BCE)", f"{s['loss']:.4f}"),
            (f"thresholds ({s['thresholds']})", ""),
            ("micro precision", f"{s['micro_precision']:.2f} %"),
            ("micro recall", f"{s['micro_recall']:.2f} %"),
            ("micro F1", f"{s['micro_f1']:.2f} %"),
            ("macro precision", f"{s['macro_precision']:.2f} %"),
            ("macro recall", f"{s['macro_recall']:.2f} %"),
            ("macro F1", f"{s['macro_f1']:.2f} %"),
            ("exact label set", f"{s['exact_match']:.2f} %"),
            ("throughput", f"{s['images_per_second']} img/s"),
        ]
        for name, value in rows:
            table.add_row(name, value)
        sink.out().print(table)
        classes = Table(box=None, pad_edge=False, title="per class", title_justify="left")
        for col in ("class", "support", "AP", "threshold", "precision", "recall", "F1"):
            classes.add_column(col, justify="left" if col == "class" else "right")
        for r in result.per_class:
            classes.add_row(
                _short(str(r["name"])),
                str(r["support"]),
                "-" if r["ap"] is None else f"{r['ap']:.1f}",
                f"{r['threshold']:.3g}",
                f"{r['precision']:.1f}",
                f"{r['recall']:.1f}",
                f"{r['f1']:.1f}",
            )
        sink.out().print(classes)
    if out_dir is not None:  # after the results: a folder that cannot be written never loses them
        written = multilabel_eval.write_artefacts(result, out_dir)
        sink.info(f"wrote {', '.join(str(p) for p in written)}", style="dim")
    if s["num_failed"]:
        raise typer.Exit(1)


def _warn_failed(failed: list[dict]) -> None:
    from vitcli import output as sink

    for item in failed[:10]:
        sink.warn(f"unreadable image {item['path']}: {item['error']}")
    if len(failed) > 10:
        sink.warn(f"... and {len(failed) - 10} more unreadable images (all listed in metrics.json with --out-dir)")


def _render(result) -> None:
    from vitcli import output as sink
    from vitcli.cli import tables

    s = result.summary
    rows = [
        ("images", f"{s['num_images']}" + (f" ({s['num_failed']} unreadable)" if s["num_failed"] else "")),
        ("top-1", f"{s['top1']:.2f} %"),
        ("top-5", f"{s['top5']:.2f} %"),
    ]
    if "real_top1" in s:
        rows += [("ReaL top-1", f"{s['real_top1']:.2f} %"), ("ReaL top-5", f"{s['real_top5']:.2f} %")]
    rows += [
        ("loss", f"{s['loss']:.4f}"),
        ("ECE (15 bins)", f"{s['ece']:.2f} %"),
        ("macro precision", f"{s['macro_precision']:.2f} %"),
        ("macro recall", f"{s['macro_recall']:.2f} %"),
        ("macro F1", f"{s['macro_f1']:.2f} %"),
        ("throughput", f"{s['images_per_second']} img/s"),
    ]
    tables.print_table([tables.Column("metric"), tables.Column("value", right=True, wrap="none")], rows, header=False)
    if s.get("precision_note"):
        sink.info(s["precision_note"], style="dim")
    if result.most_confused:
        tables.print_table(
            [tables.Column("true"), tables.Column("predicted"), tables.Column("images", right=True)],
            [(_short(row["true"]), _short(row["predicted"]), str(row["count"])) for row in result.most_confused[:5]],
            title="most confused (true -> predicted)",
        )


def _render_few_shot(result: dict) -> None:
    from vitcli import output as sink
    from vitcli.cli import tables

    sweep = result.get("l2_sweep") or {_key(result["l2"]): result["few_shot"]}
    columns = [tables.Column("shots", right=True)] + [tables.Column(f"l2={l2}", right=True) for l2 in sweep]
    rows = [
        (shots, *(f"{sweep[l2][shots]['mean']:.2f} ± {sweep[l2][shots]['std']:.2f}" for l2 in sweep))
        for shots in result["few_shot"]
    ]
    tables.print_table(
        columns,
        rows,
        title=f"few-shot top-1 on {result['dataset']} {result['test_split']} "
        f"({result['num_test']} images), mean ± std over seeds",
    )
    seeds = next(iter(result["few_shot"].values()))["seeds"]
    sink.info(
        f"{seeds} seed(s), {result['feature_dim']}-d features, {result['forward_passes']} new forward pass(es), "
        f"{result['seconds']} s",
        style="dim",
    )


def _short(name: str) -> str:
    return name.split(",")[0]  # ImageNet descriptions: "tabby, tabby cat" -> "tabby"


def _key(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)
