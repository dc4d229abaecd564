"""`vit serve`: a model over HTTP, with a page to try it (FastAPI + uvicorn, the `serve` extra)."""

from __future__ import annotations

from typing import Annotated

import typer

from vitcli.cli.options import (
    DEFAULT_MODEL,
    DeviceOpt,
    ModelOpt,
    OfflineOpt,
    PrecisionOpt,
)


def serve(
    model: ModelOpt = DEFAULT_MODEL,
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on (127.0.0.1: this machine only).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port to listen on.")] = 8000,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    max_batch: Annotated[
        int, typer.Option("--max-batch", min=1, help="Concurrent requests run as one batch, up to this many images.")
    ] = 16,
    max_wait_ms: Annotated[
        float, typer.Option("--max-wait-ms", min=0.0, help="How long a request waits for others to batch with.")
    ] = 5.0,
    max_mb: Annotated[float, typer.Option("--max-mb", min=0.001, help="Largest upload accepted, in MB.")] = 20.0,
    offline: OfflineOpt = False,
) -> None:
    """Serve a model over HTTP: POST /v1/predict (JSON as `vit predict --json`), GET /health, a page at /.

    Any model: a timm name, a folder, a run, or a file `vit export` wrote (.onnx, .pt2, .xml).
    """
    from vitcli import env
    from vitcli import output as sink
    from vitcli.errors import UsageError

    env.set_offline(offline)
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise UsageError("vit serve needs FastAPI and uvicorn", "pip install 'vitcli[serve]'") from None
    from vitcli.serve.app import serve as run

    run(
        model,
        host=host,
        port=port,
        device=device,
        precision=precision,
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        max_bytes=int(max_mb * 2**20),
        log=lambda m: sink.info(m),
    )


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
