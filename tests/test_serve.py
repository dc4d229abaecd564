"""`vit serve`: the HTTP API (as `vit predict --json` answers), bad uploads as 4xx, concurrent requests
batched, and the page in headless Chromium."""

from __future__ import annotations

import base64
import io
import json
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import make_tiny_vit, save_hub_layout
from vitcli.cli import app

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
runner = CliRunner()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return save_hub_layout(make_tiny_vit(5, seed=4), tmp_path_factory.mktemp("m"), [f"k{i}" for i in range(5)])


@pytest.fixture(scope="module")
def client(model_dir):
    from fastapi.testclient import TestClient

    from vitcli.serve.app import create_app
    from vitcli.serve.model import open_served

    with TestClient(create_app(open_served(str(model_dir), precision="fp32"), max_bytes=50_000)) as c:
        yield c


def _predict_json(model_dir, path) -> dict:
    result = runner.invoke(
        app, ["predict", "--model", str(model_dir), "--json", "-k", "3", "--precision", "fp32", str(path)]
    )
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_predict_answers_as_vit_predict_json(client, model_dir, make_images):
    path = make_images(1, size=(50, 37))[0]
    expected = _predict_json(model_dir, path)
    multipart = client.post("/v1/predict?k=3", files={"file": (path.name, path.read_bytes(), "image/png")})
    raw = client.post("/v1/predict?k=3", content=path.read_bytes(), headers={"content-type": "image/png"})
    assert multipart.status_code == raw.status_code == 200
    for got in (multipart.json(), raw.json()):
        assert [p["index"] for p in got["predictions"]] == [p["index"] for p in expected["predictions"]]
        assert [p["score"] for p in got["predictions"]] == pytest.approx(
            [p["score"] for p in expected["predictions"]], abs=1e-5
        )
        assert (got["backend"], got["precision"]) == ("torch", "fp32")
    assert multipart.json()["path"] == path.name
    top = raw.json()["predictions"][0]["score"]
    assert [
        p["score"]
        for p in client.post(f"/v1/predict?k=5&threshold={top}", content=path.read_bytes()).json()["predictions"]
    ] == [top]


def test_the_rollout_is_one_value_per_patch(client, make_images):
    path = make_images(1)[0]
    out = client.post("/v1/predict?rollout=true", content=path.read_bytes()).json()
    rows, cols = out["rollout"]["grid"]
    assert (rows, cols) == (8, 8) and len(out["rollout"]["values"]) == 64
    assert 0.0 <= min(out["rollout"]["values"]) and max(out["rollout"]["values"]) <= 1.0


@pytest.mark.parametrize(
    "body, query, status, words",
    [
        (b"", "", 400, "empty upload"),
        (b"hello, not an image", "", 415, "not an image"),
        (b"x" * 60_000, "", 413, "limit"),
        (None, "?k=0", 422, "k=0"),
        (None, "?k=abc", 422, "k"),
        (None, "?threshold=2", 422, "threshold"),
    ],
)
def test_bad_uploads_are_4xx_with_a_message(client, make_images, body, query, status, words):
    data = make_images(1)[0].read_bytes() if body is None else body
    response = client.post("/v1/predict" + query, content=data)
    assert response.status_code == status, response.text
    assert words in response.json()["error"] and "Traceback" not in response.text


def test_a_multipart_body_without_a_file_field_is_400(client):
    response = client.post("/v1/predict", files={"other": ("a.txt", b"x", "text/plain")})
    assert response.status_code == 400 and "'file'" in response.json()["error"]


def test_health_and_page(client):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["classes"] == 5 and health["rollout"] is True
    page = client.get("/")
    assert page.status_code == 200 and "/v1/predict" in page.text and "vit_tiny_patch16_224" in page.text


def test_a_multi_label_model_returns_every_label_above_the_threshold(tmp_path, make_images):
    import numpy as np

    from vitcli.serve.model import ServedModel

    served = ServedModel("x", ["a", "b", "c"], {"input_size": [3, 32, 32]}, "torch", "cpu", "fp32", True, None)
    out = served.answer(np.array([2.0, -3.0, 0.5]), k=1, threshold=0.5)
    assert [p["label"] for p in out] == ["a", "c"]  # sigmoid 0.88, 0.62; k does not cut a multi-label answer


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(model_dir):
    """`vit serve` in a subprocess on a free loopback port; its base URL."""
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vitcli",
            "serve",
            "--model",
            str(model_dir),
            "--port",
            str(port),
            "--precision",
            "fp32",
            "--max-wait-ms",
            "100",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(url + "/health", timeout=2)
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail(f"vit serve exited: {proc.stderr.read()}")
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_concurrent_requests_are_batched_and_all_answered_alike(server, model_dir, make_images):
    path = make_images(1, size=(64, 48))[0]
    expected = _predict_json(model_dir, path)["predictions"][0]["index"]
    answers, errors = [], []

    def post():
        request = urllib.request.Request(
            server + "/v1/predict", data=path.read_bytes(), method="POST", headers={"content-type": "image/png"}
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                answers.append(json.loads(response.read())["predictions"][0]["index"])
        except OSError as e:
            errors.append(e)

    threads = [threading.Thread(target=post) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and answers == [expected] * 8
    health = json.loads(urllib.request.urlopen(server + "/health", timeout=10).read())
    assert health["largest_batch"] > 1 and health["batches"] < 8  # one forward served several requests


@pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason="headless Chromium (/usr/bin/chromium) is not installed: apt-get install -y chromium",
)
def test_the_page_predicts_an_image_in_headless_chromium(server, make_images, tmp_path):
    from PIL import Image

    image = Image.new("RGB", (64, 48), (200, 60, 40))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    data_url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    dom = chromium(f"{server}/?image={urllib.parse.quote(data_url, safe='')}", tmp_path, "--dump-dom")
    assert 'data-done="1"' in dom and "<table>" in dom and "torch fp32" in dom, dom[-2000:]


def chromium(url: str, tmp_path: Path, *what: str) -> str:
    """Headless Chromium on `url` (what: --dump-dom, or --screenshot=PATH --window-size=W,H)."""
    profile = tmp_path / "chromium-profile"
    args = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=20000",
        "--run-all-compositor-stages-before-draw",
        *what,
        url,
    ]
    proc = subprocess.run(args, check=False, capture_output=True, text=True, timeout=180)
    shutil.rmtree(profile, ignore_errors=True)
    return proc.stdout
