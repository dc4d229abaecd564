"""`vit benchmark`: throughput, latency, memory and FLOP efficiency, next to a plain timm loop."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vitcli.cli.options import (
    DEFAULT_MODEL,
    BatchSizeOpt,
    DeviceOpt,
    ImgSizeOpt,
    JsonOpt,
    ModelOpt,
    OfflineOpt,
    PrecisionOpt,
    RandomInitOpt,
)


def benchmark(
    model: ModelOpt = DEFAULT_MODEL,
    batch_size: BatchSizeOpt = 32,
    img_size: ImgSizeOpt = None,
    train: Annotated[
        bool, typer.Option("--train", help="Also time training steps (forward, backward, clip, SGD step).")
    ] = False,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    compile: Annotated[
        bool, typer.Option("--compile", help="torch.compile vitcli's side (the compile time is reported apart).")
    ] = False,
    iters: Annotated[int, typer.Option("--iters", min=1, help="Timed batches per side and phase.")] = 10,
    warmup_iters: Annotated[
        int, typer.Option("--warmup-iters", min=0, help="Untimed batches first, per side and phase.")
    ] = 2,
    random_init: RandomInitOpt = False,
    formats: Annotated[
        str | None,
        typer.Option(
            "--formats",
            help="Compare deployable forms instead, e.g. torch,onnx,onnx-int8,openvino (also onnx-fp16, "
            "pt2): top-1, agreement with torch fp32, latency at batch 1, img/s at --batch-size, size.",
            show_default=False,
        ),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            help="With --formats: images to measure top-1 and agreement on (a folder; with --labels FILE).",
            show_default=False,
        ),
    ] = None,
    labels: Annotated[
        Path | None,
        typer.Option("--labels", help="With --formats --data: 'FILENAME CLASS_INDEX' lines.", show_default=False),
    ] = None,
    calib: Annotated[
        Path | None,
        typer.Option(
            "--calib",
            help="With --formats: images to calibrate onnx-int8 on (static); else dynamic int8.",
            show_default=False,
        ),
    ] = None,
    json_out: JsonOpt = False,
    offline: OfflineOpt = False,
) -> None:
    """Measure img/s, latency, memory and GFLOP/s, next to a plain timm loop, in one process.

    GFLOP/s is also given as a share of this machine's matrix-multiply ceiling, measured in the run.
    With --formats: the model as torch, ONNX, int8 ONNX, OpenVINO... side by side, in one run.
    """
    from vitcli import env
    from vitcli import output as sink

    env.set_offline(offline)
    if formats is not None:
        from vitcli.bench import formats as deploy

        result = deploy.run(
            model,
            deploy.parse_formats(formats),
            data=data,
            labels=labels,
            calib=calib,
            batch_size=batch_size,
            iters=iters,
            warmup_iters=warmup_iters,
            log=lambda msg: sink.info(msg, style="dim"),
        )
        sink.emit_json(result.to_json()) if json_out else _render_formats(result)
        return
    if data is not None or labels is not None or calib is not None:
        from vitcli.errors import UsageError

        raise UsageError("--data, --labels and --calib go with --formats")
    from vitcli.bench.benchmark import run

    result = run(
        model,
        batch_size=batch_size,
        img_size=img_size,
        train=train,
        device=device,
        precision=precision,
        compile=compile,
        iters=iters,
        warmup_iters=warmup_iters,
        random_init=random_init,
        log=lambda msg: sink.info(msg, style="dim"),
    )
    if json_out:
        sink.emit_json(result.to_json())
    else:
        _render(result)


def _render(r) -> None:
    from vitcli import output as sink
    from vitcli.cli import tables

    sink.out().print(
        f"{r.architecture} ({r.params_m:.1f} M params) on {r.device} {r.precision}, {r.threads} threads, "
        f"batch {r.batch_size}, {r.img_size} px{', compiled' if r.compile else ''}\n"
        f"{r.gflop_per_img:.2f} GFLOP/img forward; {r.precision} matrix-multiply ceiling {r.ceiling_gflop_s:.1f} "
        f"GFLOP/s (the model's GEMM shapes; fastest shape {r.ceiling_best_gflop_s:.1f})"
    )
    phases = [("inference", r.inference, r.timm_inference, r.speedup, r.timm_fp32_inference)]
    if r.train is not None:
        phases.append(("training", r.train, r.timm_train, r.train_speedup, r.timm_fp32_train))
    for phase, ours, timm, ratio, timm_fp32 in phases:
        columns = [
            tables.Column(name, right=name != "loop", wrap="none")
            for name in ("loop", "img/s", "GFLOP/s", "% ceiling", "p50 ms", "p90 ms", "p99 ms", "peak MB")
        ]
        rows = [("vitcli", ours), ("timm eager", timm)] + ([("timm eager fp32", timm_fp32)] if timm_fp32 else [])
        cells = [
            (
                loop,
                f"{f.img_s:.1f}",
                f"{f.gflop_s:.1f}",
                f"{f.ceiling_pct:.0f} %" if f.ceiling_pct is not None else "-",
                f"{f.latency_ms['p50']:.1f}",
                f"{f.latency_ms['p90']:.1f}",
                f"{f.latency_ms['p99']:.1f}",
                f"{f.peak_mem_mb:.0f}" if f.peak_mem_mb is not None else "-",
            )
            for loop, f in rows
        ]
        cells.append(("ratio", f"{ratio:.2f}x"))
        if timm_fp32:
            cells.append(("vs fp32", f"{ours.img_s / timm_fp32.img_s:.2f}x"))
        tables.print_table(columns, cells, title=phase, styles=[None] * len(rows) + ["bold"] * (len(cells) - len(rows)))
    if r.compile_s is not None:
        sink.out().print(f"compile: {r.compile_s:.1f} s (first call, not in the figures)")
    if r.peak_tflops:
        sink.out().print(
            f"MFU: inference {r.mfu_pct:.1f} %"
            + (f", training {r.train_mfu_pct:.1f} %" if r.train_mfu_pct is not None else "")
            + f" of {r.peak_tflops:.0f} TFLOP/s (data sheet)"
        )
    if r.measured_peak_tflops:
        peak = r.measured_peak_tflops * 1e3
        sink.out().print(
            f"MFU: inference {100 * r.inference.gflop_s / peak:.1f} %"
            + (f", training {100 * r.train.gflop_s / peak:.1f} %" if r.train is not None else "")
            + f" of {r.measured_peak_tflops:.0f} TFLOP/s (an 8192^3 {r.precision} matmul measured here)"
        )
    for note in r.notes:
        sink.warn(note)


def _render_formats(r) -> None:
    from rich.table import Table

    from vitcli import output as sink

    sink.out().print(f"{r.architecture}: {r.images} {r.on}, {r.threads} threads, batch 1 and {r.batch_size}")
    table = Table(box=None, pad_edge=False)
    for name in ("format", "runs in", "top-1", "agree", "ms@1", f"img/s@{r.batch_size}", "MB"):
        table.add_column(name, justify="left" if name in ("format", "runs in") else "right", no_wrap=True)
    for row in r.rows:
        table.add_row(
            row.format,
            f"{row.backend} {row.precision}",
            f"{100 * row.top1:.1f}%" if row.top1 is not None else "-",
            f"{100 * row.agreement:.1f}%",
            f"{row.latency_ms:.1f}",
            f"{row.img_s:.1f}",
            f"{row.size_mb:.1f}" if row.size_mb else "-",
        )
    sink.out().print(table)
    for row in r.rows:
        if row.notes:
            sink.out().print(f"{row.format}: {row.notes}", soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("benchmark")(benchmark)
