"""The HTTP API of `vit serve` (FastAPI): predict, health, and the page to try a model in a browser.

  POST /v1/predict   an image as a multipart `file` field or as the raw body (any image content type);
                     query `k` (labels, default 5), `threshold` (lowest score returned; multi-label models:
                     every label at or above it, default 0.5), `rollout=true` (attention rollout, ViTs).
                     -> {"path", "predictions": [{"label", "index", "score"}], "backend", "precision"}
                     as `vit predict --json` prints it.
  GET  /health       {"status": "ok", model info, the batches run so far}
  GET  /             the page (vitcli.serve.page)
A bad upload (not an image, empty, too large, too many pixels, a bad parameter) is a 4xx with
{"error": message}; anything else a 500 with one line, never a traceback.
"""

from __future__ import annotations

from fastapi import (
    Request,  # at module level: FastAPI reads the handlers' annotations from here
)

from vitcli.serve.batcher import MicroBatcher

MAX_BYTES = 20 * 2**20  # one upload


def create_app(served, *, max_bytes: int = MAX_BYTES, max_batch: int = 16, max_wait_ms: float = 5.0):
    from contextlib import asynccontextmanager

    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from vitcli.serve.page import page

    batcher = MicroBatcher(served.run, max_batch=max_batch, max_wait_ms=max_wait_ms)

    @asynccontextmanager
    async def lifespan(_app):
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="vit serve", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.batcher, app.state.served = batcher, served

    class BadRequest(Exception):
        def __init__(self, status: int, message: str):
            self.status, self.message = status, message

    @app.exception_handler(BadRequest)
    async def bad_request(_request, exc: BadRequest):
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def bad_parameter(_request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or "request"
        return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid')}"}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request, exc: StarletteHTTPException):
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def internal(_request, exc: Exception):
        return JSONResponse(
            {"error": f"internal error: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"},
            status_code=500,
        )

    async def read_upload(request: Request) -> tuple[bytes, str]:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > max_bytes + 64 * 1024:
            raise BadRequest(413, f"upload of {int(length)} bytes: the limit is {max_bytes} bytes")
        kind = request.headers.get("content-type", "")
        if kind.startswith("multipart/form-data"):
            try:
                form = await request.form(max_files=1, max_fields=8)
            except Exception as e:  # noqa: BLE001 - a malformed multipart body is the client's
                raise BadRequest(400, f"cannot read the multipart body ({e})") from None
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise BadRequest(400, "no file: send the image as the multipart field 'file' or as the raw body")
            data = await upload.read(max_bytes + 1)
            name = upload.filename or "upload"
        else:
            chunks, size = [], 0
            async for chunk in request.stream():
                size += len(chunk)
                if size > max_bytes:
                    raise BadRequest(413, f"upload larger than the limit of {max_bytes} bytes")
                chunks.append(chunk)
            data, name = b"".join(chunks), "upload"
        if len(data) > max_bytes:
            raise BadRequest(413, f"upload larger than the limit of {max_bytes} bytes")
        if not data:
            raise BadRequest(400, "empty upload: send an image")
        return data, name

    @app.get("/health")
    async def health():
        return {
            "status": "ok",
            **served.info(),
            "batches": len(batcher.batches),
            "largest_batch": max(batcher.batches, default=0),
        }

    @app.get("/", response_class=HTMLResponse)
    async def index():
        return page(served.info())

    @app.post("/v1/predict")
    async def predict(request: Request, k: int = 5, threshold: float | None = None, rollout: bool = False):
        from vitcli.data.images import decode_image
        from vitcli.errors import ImageError

        if not 1 <= k <= 1000:
            raise BadRequest(422, f"k={k}: give 1 to 1000")
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise BadRequest(422, f"threshold={threshold}: give a score from 0 to 1")
        data, name = await read_upload(request)
        try:
            image = decode_image(data, name, served.draft_size)
            array = served.preprocess(image)
        except ImageError as e:
            raise BadRequest(
                415 if "not an image" in e.reason or "format" in e.reason else 400, f"{name}: {e.reason}"
            ) from None
        logits = await batcher.submit(array)
        cut = threshold if threshold is not None else (0.5 if served.multi_label else 0.0)
        out = {
            "path": name,
            "predictions": served.answer(logits, k, cut),
            "backend": served.backend,
            "precision": served.precision,
        }
        if rollout and served.can_rollout():
            out["rollout"] = await batcher.exclusive(served.rollout, array)
        return out

    return app


def serve(
    spec: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    device: str = "auto",
    precision: str = "auto",
    max_batch: int = 16,
    max_wait_ms: float = 5.0,
    max_bytes: int = MAX_BYTES,
    log=lambda m: None,
) -> None:
    """Open `spec` and serve it until interrupted."""
    import uvicorn

    from vitcli.serve.model import open_served

    served = open_served(spec, device=device, precision=precision)
    log(
        f"{served.architecture} on {served.backend} {served.device} {served.precision}: http://{host}:{port}/ "
        f"(POST /v1/predict; batches of up to {max_batch} within {max_wait_ms:g} ms)"
    )
    app = create_app(served, max_bytes=max_bytes, max_batch=max_batch, max_wait_ms=max_wait_ms)
    uvicorn.run(app, host=host, port=port, log_level="warning")
