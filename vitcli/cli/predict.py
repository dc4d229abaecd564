"""`vit predict`: top-k labels with scores for images, as a table, JSON lines, or a file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List

import typer

from vitcli.cli.options import (DEFAULT_MODEL, BatchSizeOpt, DeviceOpt, JsonOpt, ModelOpt, OfflineOpt,
                                OutputFileOpt, PrecisionOpt, WorkersOpt)


def predict(
    inputs: Annotated[List[str], typer.Argument(help="Image files, folders (searched recursively) or globs.",
                                                show_default=False)],
    model: ModelOpt = DEFAULT_MODEL,
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1, help="Labels per image.")] = 5,
    batch_size: BatchSizeOpt = 32,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    workers: WorkersOpt = None,
    json_out: JsonOpt = False,
    output: OutputFileOpt = None,
    offline: OfflineOpt = False,
) -> None:
    """Predict the top-k labels of images with a pre-trained or fine-tuned model."""
    from vitcli import env
    from vitcli.errors import UsageError
    from vitcli.data.images import expand_inputs

    env.set_offline(offline)
    if output is not None and output.suffix.lower() not in {".jsonl", ".csv", ".json"}:
        raise UsageError(f"--output {output}: unknown format", "use a .jsonl or .csv file name")
    paths, missing = expand_inputs(inputs)

    from vitcli import output as sink
    from vitcli.devices import runtime
    from vitcli.inference.forward import Throughput
    from vitcli.inference.predict import Prediction, load_predictor, run

    rt = runtime(device, precision)
    loaded = load_predictor(model, rt)  # a saved TorchScript copy when there is one: no timm import
    sink.info(f"[dim]{loaded.architecture} on {rt.describe()}, {len(paths)} image(s)[/]")

    writer = _FileWriter(output) if output else None
    throughput = Throughput()  # the loader's and the model's img/s, said at the end
    table_rows = []
    failed = 0
    try:
        for item, reason in missing:
            failed += 1
            _emit(Prediction(item, error=reason), json_out, writer, table_rows)
        with sink.progress("predict", total=len(paths), unit="img") as advance:
            for pred in run(paths, loaded, rt, top_k=top_k, batch_size=batch_size, workers=workers,
                            progress=advance, throughput=throughput):
                failed += pred.error is not None
                _emit(pred, json_out, writer, table_rows)
    finally:
        if writer:
            writer.close()
    if not json_out:
        _render_table(table_rows, top_k)
    if throughput.images > 1:
        sink.info(f"[dim]{throughput.images} images: {throughput.describe()}[/]")
    from vitcli.inference import faststart

    faststart.remember(model, loaded, rt.device, rt.precision)  # first run with this model: save the fast-start copy
    if failed:
        sink.warn(f"{failed} input(s) could not be read (listed above)")
        raise typer.Exit(1)


def _emit(pred, json_out: bool, writer, table_rows: list) -> None:
    from vitcli import output as sink

    if writer:
        writer.write(pred)
    if json_out:
        sink.emit_json(pred.to_json())
    else:
        table_rows.append(pred)
        if pred.error:
            sink.err().print(f"[red]error:[/] {pred.path}: {pred.error}", highlight=False)


def _render_table(rows, top_k: int) -> None:
    from rich.table import Table

    from vitcli import output as sink

    table = Table(show_lines=False, box=None, pad_edge=False)
    table.add_column("image", overflow="fold")
    table.add_column("#", justify="right")
    table.add_column("label")
    table.add_column("index", justify="right")
    table.add_column("score", justify="right")
    for pred in rows:
        if pred.error:
            continue
        for rank, p in enumerate(pred.predictions, 1):
            table.add_row(pred.path if rank == 1 else "", str(rank), p["label"], str(p["index"]),
                          f"{p['score']:.4f}", end_section=rank == len(pred.predictions))
    sink.out().print(table)


class _FileWriter:
    """Results streamed to a .jsonl or .csv file as they come (nothing lost if a later image fails)."""

    def __init__(self, path: Path):
        import csv

        path.parent.mkdir(parents=True, exist_ok=True)
        self.fh = open(path, "w", newline="", encoding="utf-8")
        self.csv = None
        if path.suffix.lower() == ".csv":
            self.csv = csv.writer(self.fh)
            self.csv.writerow(["path", "rank", "label", "index", "score", "error"])

    def write(self, pred) -> None:
        import json

        if self.csv is None:
            self.fh.write(json.dumps(pred.to_json(), ensure_ascii=False) + "\n")
        elif pred.error:
            self.csv.writerow([pred.path, "", "", "", "", pred.error])
        else:
            for rank, p in enumerate(pred.predictions, 1):
                self.csv.writerow([pred.path, rank, p["label"], p["index"], f"{p['score']:.6f}", ""])
        self.fh.flush()

    def close(self) -> None:
        self.fh.close()
