"""`vit predict`: top-k labels with scores for images, as a table, JSON lines, or a file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vitcli.cli.options import (
    DEFAULT_MODEL,
    BackendOpt,
    BatchSizeOpt,
    CompileOpt,
    DeviceOpt,
    JsonOpt,
    ModelOpt,
    OfflineOpt,
    OutputFileOpt,
    PrecisionOpt,
    ThresholdOpt,
    WorkersOpt,
)
from vitcli.inference.prediction import DEFAULT_TOP_K


def predict(
    inputs: Annotated[
        list[str] | None,
        typer.Argument(
            help="Image files, folders (searched recursively), globs, http(s) URLs, or - for an image on stdin.",
            show_default=False,
        ),
    ] = None,
    model: ModelOpt = DEFAULT_MODEL,
    top_k: Annotated[
        int | None,
        typer.Option(
            "--top-k",
            "-k",
            min=1,
            show_default=False,
            help=f"Labels per image: the K most probable (default {DEFAULT_TOP_K}). A multi-label model lists every "
            "label at or above its threshold; at most K of them when -k is given.",
        ),
    ] = None,
    threshold: ThresholdOpt = None,
    batch_size: BatchSizeOpt = 32,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    backend: BackendOpt = "torch",
    compile: CompileOpt = False,
    workers: WorkersOpt = None,
    json_out: JsonOpt = False,
    output: OutputFileOpt = None,
    list_file: Annotated[
        Path | None,
        typer.Option(
            "--list", help="A text file of more inputs, one path or URL per line (for large jobs).", show_default=False
        ),
    ] = None,
    offline: OfflineOpt = False,
) -> None:
    """Predict the top-k labels of images with a pre-trained or fine-tuned model.

    A multi-label model gives every label at or above its threshold, best first.
    """
    from vitcli import env
    from vitcli.data.inputs import expand_inputs
    from vitcli.errors import UsageError

    env.set_offline(offline)
    writer = _FileWriter.check(output)
    if not inputs and list_file is None:
        raise UsageError("no images given", "give image files, folders, globs or URLs, or --list FILE")
    paths, missing = expand_inputs(inputs or [], list_file)
    if writer:
        writer.refuse_inputs([*paths, *([list_file] if list_file else [])])

    from vitcli import output as sink
    from vitcli.inference.forward import Throughput
    from vitcli.inference.predict import Prediction, open_predictor

    predictor = open_predictor(model, device, precision, backend, compile)
    ran = predictor.info()  # backend, device, precision, accel: named in every result
    sink.info(
        f"{predictor.architecture} on {predictor.describe()} ({ran['accel']}), {len(paths)} image(s)", style="dim"
    )

    writer = writer and writer.open()
    throughput = Throughput()  # the loader's and the model's img/s, said at the end
    rows, failed = [], 0
    try:
        for item, reason in missing:
            failed += 1
            _emit(Prediction(sink.display(item), error=reason), json_out, writer, rows, ran)
        with sink.progress("predict", total=len(paths), unit="img") as advance:
            for pred in predictor.run(
                paths,
                top_k=top_k,
                batch_size=batch_size,
                workers=workers,
                progress=advance,
                throughput=throughput,
                threshold=threshold,
            ):
                failed += pred.error is not None
                _emit(pred, json_out, writer, rows, ran)
    finally:  # whatever stops the run, the results already made are shown and kept
        if writer:
            writer.close()
        if not json_out:
            _render_table(rows)
    if throughput.images > 1:
        sink.info(f"{throughput.images} images: {throughput.describe()}", style="dim")
    if writer and writer.error:
        sink.warn(
            f"the results were not all written to {sink.display(writer.path)} ({writer.error}); "
            "every result is on stdout"
        )
    if failed:
        sink.warn(f"{failed} input(s) could not be read (listed above)")
    if failed or (writer and writer.error):
        raise typer.Exit(1)


PLAIN_HEADER = ("image", "rank", "label", "index", "score")


def _emit(pred, json_out: bool, writer, rows: list, ran: dict) -> None:
    from vitcli import output as sink
    from vitcli.cli import tables

    if writer:
        writer.write(pred)
    if json_out:
        sink.emit_json({**pred.to_json(), "backend": ran["backend"], "precision": ran["precision"]})
        return
    if pred.error:
        sink.error(f"{pred.path}: {pred.error}")
        return
    if tables.plain():  # a pipe: each result as it comes, one tab-separated line per label, paths whole
        if not rows:
            tables.plain_line(PLAIN_HEADER)
        if not pred.predictions:  # a multi-label model: no label at or above its threshold
            tables.plain_line([pred.path, "", "(none)", "", ""])
        for rank, p in enumerate(pred.predictions, 1):
            tables.plain_line([pred.path, rank, p["label"], p["index"], f"{p['score']:.4f}"])
    rows.append(pred)  # the predictions shown (a table on a terminal, at the end)


def _render_table(rows) -> None:
    """On a terminal: one table fitted to its width, paths relative to the folder that holds them all."""
    from vitcli import output as sink
    from vitcli.cli import tables

    if not rows or tables.plain():
        return
    root, shown = tables.relative_paths([pred.path for pred in rows])
    ranks = max(len(pred.predictions or ()) for pred in rows) > 1  # no rank column for -k 1
    columns = (
        [tables.Column("image", wrap="path")]
        + ([tables.Column("#", right=True)] if ranks else [])
        + [tables.Column("label"), tables.Column("index", right=True), tables.Column("score", right=True)]
    )
    cells = []
    for pred, path in zip(rows, shown):
        if not pred.predictions:  # a multi-label model: no label at or above its threshold
            cells.append([path] + ([""] if ranks else []) + ["(none)", "", ""])
        for rank, p in enumerate(pred.predictions, 1):
            cells.append(
                [path if rank == 1 else ""]
                + ([str(rank)] if ranks else [])
                + [p["label"], str(p["index"]), f"{p['score']:.4f}"]
            )
    if root:
        sink.info(f"images in {root}", style="dim")
    tables.print_table(columns, cells)


class _FileWriter:
    """Results streamed to a .jsonl or .csv file as they come. A write that fails (a full disk) stops
    the file, never the predictions: `error` says why, and every result still reaches stdout."""

    def __init__(self, path: Path):
        self.path, self.fh, self.csv, self.error = path, None, None, None

    @classmethod
    def check(cls, path: Path | None) -> _FileWriter | None:
        """Refuse an --output that cannot be a results file before any work is done."""
        from vitcli import output as sink
        from vitcli.errors import UsageError

        if path is None:
            return None
        if path.suffix.lower() not in {".jsonl", ".csv", ".json"}:
            raise UsageError(f"--output {sink.display(path)}: unknown format", "use a .jsonl or .csv file name")
        if path.is_dir():
            raise UsageError(f"--output {sink.display(path)} is a folder", "give a file name, e.g. results.csv")
        return cls(path)

    def refuse_inputs(self, inputs: list) -> None:
        """--output naming one of the inputs would truncate it before it is read: refused."""
        import os

        from vitcli import output as sink
        from vitcli.errors import UsageError

        target = os.path.realpath(self.path)
        if any(isinstance(p, os.PathLike) and os.path.realpath(p) == target for p in inputs):
            raise UsageError(
                f"--output {sink.display(self.path)} is one of the inputs", "write the results to another file"
            )

    def open(self) -> _FileWriter:
        import csv

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fh = open(self.path, "w", newline="", encoding="utf-8")
        if self.path.suffix.lower() == ".csv":
            self.csv = csv.writer(self.fh)
            self._guarded(self.csv.writerow, ["path", "rank", "label", "index", "score", "error"])
        return self

    def _guarded(self, fn, *args) -> None:
        if self.error is not None:
            return
        try:
            fn(*args)
            self.fh.flush()
        except OSError as e:
            self.error = e.strerror or str(e)

    def write(self, pred) -> None:
        from vitcli.output import dumps

        if self.csv is None:
            self._guarded(self.fh.write, dumps(pred.to_json()) + "\n")
        elif pred.error or not pred.predictions:  # an error, or no label at or above the thresholds
            self._guarded(self.csv.writerow, [pred.path, "", "", "", "", pred.error or ""])
        else:
            self._guarded(
                self.csv.writerows,
                [
                    [pred.path, rank, p["label"], p["index"], f"{p['score']:.6f}", ""]
                    for rank, p in enumerate(pred.predictions, 1)
                ],
            )

    def close(self) -> None:
        try:
            self.fh.close()
        except OSError as e:
            self.error = self.error or e.strerror or str(e)
