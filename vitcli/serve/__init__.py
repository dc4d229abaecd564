"""`vit serve`: a model over HTTP (FastAPI + uvicorn): the predict API, a micro-batcher, a page to try it."""
