"""Deploy: `vit export` (ONNX, pt2), `--model FILE.onnx` without torch, the ONNX fast start made by
`vit download`, and images from URLs, stdin and list files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from functools import partial
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import make_tiny_vit, save_hub_layout
from vitcli.cli import app

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return save_hub_layout(make_tiny_vit(5, seed=4), tmp_path_factory.mktemp("m"), [f"k{i}" for i in range(5)])


@pytest.fixture(scope="module")
def onnx_file(model_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    result = runner.invoke(app, ["export", "--model", str(model_dir), "-o", str(out), "--json"])
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["format"] == "onnx" and report["dynamic_batch"] and report["max_abs_diff"] < 1e-4
    return out


def predictions(result) -> dict:
    return {Path(r["path"]).name: r for r in map(json.loads, result.stdout.splitlines())}


def in_subprocess(args: list[str], env: dict) -> dict:
    """`vit ARGS` in a fresh interpreter: its JSON lines and whether torch / timm were imported."""
    code = (
        "import sys, json; from typer.testing import CliRunner; from vitcli.cli import app; "
        f"r = CliRunner().invoke(app, {args!r}); "
        "print(json.dumps({'exit': r.exit_code, 'out': r.stdout, 'err': r.stderr, "
        "'torch': 'torch' in sys.modules, 'timm': 'timm' in sys.modules}))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=180, env={**os.environ, **env}
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_onnx_file_alone_predicts_as_the_torch_model_without_torch(model_dir, onnx_file, make_images, tmp_path):
    images = [str(p) for p in make_images(4, size=(50, 37))]
    torch_side = runner.invoke(
        app,
        ["predict", "--model", str(model_dir), "--json", "-k", "3", "--precision", "fp32", *images],
        env={"VIT_EXPORT": "0"},
    )
    onnx_side = in_subprocess(
        ["predict", "--model", str(onnx_file), "--json", "-k", "3", *images], {"VIT_CACHE": str(tmp_path / "c")}
    )
    assert onnx_side["exit"] == 0 and not onnx_side["torch"] and not onnx_side["timm"], onnx_side["err"]
    ours = {Path(r["path"]).name: r for r in map(json.loads, onnx_side["out"].splitlines())}
    for name, ref in predictions(torch_side).items():
        assert [p["index"] for p in ours[name]["predictions"]] == [p["index"] for p in ref["predictions"]]
        assert [p["label"] for p in ours[name]["predictions"]][0].startswith("k")  # names from the file
        assert max(abs(a["score"] - b["score"]) for a, b in zip(ours[name]["predictions"], ref["predictions"])) < 1e-5
    # eval and benchmark take the file too (through onnxruntime)
    (tmp_path / "val" / "k1").mkdir(parents=True)
    for image in images:
        Path(tmp_path / "val" / "k1" / Path(image).name).write_bytes(Path(image).read_bytes())
    a = runner.invoke(app, ["eval", "--model", str(onnx_file), "--data", str(tmp_path / "val"), "--json"])
    b = runner.invoke(
        app, ["eval", "--model", str(model_dir), "--data", str(tmp_path / "val"), "--json", "--precision", "fp32"]
    )
    assert a.exit_code == b.exit_code == 0, a.stderr + b.stderr
    assert json.loads(a.stdout)["top1"] == json.loads(b.stdout)["top1"]
    assert abs(json.loads(a.stdout)["loss"] - json.loads(b.stdout)["loss"]) < 1e-4
    bench = runner.invoke(
        app,
        ["benchmark", "--model", str(onnx_file), "--iters", "1", "--warmup-iters", "0", "--batch-size", "2", "--json"],
    )
    assert bench.exit_code == 0 and json.loads(bench.stdout)["img_s"] > 0, bench.stderr


def test_pt2_export_loads_back_with_equal_outputs(model_dir, tmp_path):
    import torch

    from vitcli.models.resolver import load_model

    out = tmp_path / "tiny.pt2"
    result = runner.invoke(app, ["export", "--model", str(model_dir), "--format", "pt2", "-o", str(out), "--json"])
    assert result.exit_code == 0, result.stderr
    extra = {"vitcli.json": ""}
    program = torch.export.load(str(out), extra_files=extra)
    assert json.loads(extra["vitcli.json"])["label_names"] == [f"k{i}" for i in range(5)]
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(program.module()(x), load_model(str(model_dir)).model(x), atol=1e-5)


def test_export_usage_errors(model_dir, tmp_path):
    result = runner.invoke(app, ["export", "--model", str(model_dir), "--format", "tflite"])
    assert result.exit_code == 2 and "--format" in result.stderr
    result = runner.invoke(app, ["export", "--model", str(model_dir), "-o", str(tmp_path / "x.pt2")])
    assert result.exit_code == 2 and "ends in .onnx" in result.stderr
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    result = runner.invoke(app, ["predict", "--model", str(bad), str(bad)])
    assert result.exit_code == 1 and "not a readable ONNX model" in result.stderr and "Traceback" not in result.stderr


def test_download_makes_the_fast_start_copy_served_without_torch(model_dir, make_images, tmp_path):
    from tests.hubserver import LocalHub

    image = str(make_images(1, size=(50, 37))[0])
    env = {"VIT_CACHE": str(tmp_path / "vit"), "HF_HOME": str(tmp_path / "hf")}
    with LocalHub({"org/tiny": model_dir}) as hub:
        env["HF_ENDPOINT"] = hub.endpoint
        result = runner.invoke(app, ["download", "hf-hub:org/tiny", "--json"], env=env)
        assert result.exit_code == 0, result.stderr
        report = json.loads(result.stdout)
        assert report["fast_start"].endswith("model.onnx")
        fast = in_subprocess(["predict", "--model", "hf-hub:org/tiny", "--json", "--backend", "onnx", image], env)
        plain = in_subprocess(["predict", "--model", "hf-hub:org/tiny", "--json", "--precision", "fp32", image], env)
    assert fast["exit"] == 0 and not fast["torch"] and "onnxruntime" in fast["err"], fast["err"]
    assert plain["exit"] == 0 and plain["torch"]  # the copy exists, but only --backend onnx uses it
    assert json.loads(fast["out"])["backend"] == "onnxruntime" and json.loads(plain["out"])["backend"] == "torch"
    a, b = json.loads(fast["out"])["predictions"], json.loads(plain["out"])["predictions"]
    assert [p["index"] for p in a] == [p["index"] for p in b]
    assert max(abs(x["score"] - y["score"]) for x, y in zip(a, b)) < 1e-5


def test_a_changed_model_never_gets_a_stale_copy(model_dir, tmp_path, monkeypatch):
    import shutil

    from vitcli.export import faststart
    from vitcli.models.resolver import load_model

    folder = tmp_path / "m"
    shutil.copytree(model_dir, folder)
    assert faststart.save(str(folder), load_model(str(folder))) is not None
    assert faststart.lookup(str(folder)) is not None
    save_hub_layout(make_tiny_vit(5, seed=9), folder, [f"k{i}" for i in range(5)])  # new weights, same folder
    assert faststart.lookup(str(folder)) is None
    monkeypatch.setenv("VIT_EXPORT", "0")
    assert faststart.save(str(folder), load_model(str(folder))) is None and faststart.lookup(str(folder)) is None


def test_the_copy_serves_only_when_asked_for(model_dir, tmp_path, monkeypatch):
    """A fast-start copy made by another process never changes what the next command runs."""
    import shutil

    from vitcli.errors import UsageError
    from vitcli.export import faststart
    from vitcli.inference.predict import OnnxPredictor, TorchPredictor, open_predictor
    from vitcli.models.resolver import load_model

    monkeypatch.setenv("VIT_CACHE", str(tmp_path / "vit"))
    folder = tmp_path / "m"
    shutil.copytree(model_dir, folder)
    with pytest.raises(UsageError, match="no fast-start ONNX copy"):
        open_predictor(str(folder), "auto", "auto", "onnx")
    assert faststart.save(str(folder), load_model(str(folder))) is not None
    assert isinstance(open_predictor(str(folder), "auto", "auto", "torch"), TorchPredictor)
    assert isinstance(open_predictor(str(folder), "auto", "auto", "onnx"), OnnxPredictor)
    with pytest.raises(UsageError, match="onnxruntime on the CPU"):
        open_predictor(str(folder), "cpu", "bf16", "onnx")


def test_eval_of_an_onnx_file_reports_onnxruntime_fp32(model_dir, make_images, tmp_path):
    onnx_file = tmp_path / "m.onnx"
    result = runner.invoke(app, ["export", "--model", str(model_dir), "-o", str(onnx_file)])
    assert result.exit_code == 0, result.stderr
    paths = make_images(3, folder=tmp_path / "val")
    labels = tmp_path / "labels.txt"
    labels.write_text("".join(f"{p.name} {i}\n" for i, p in enumerate(paths)))
    args = ["eval", "--data", str(tmp_path / "val"), "--labels", str(labels), "--json"]
    onnx = runner.invoke(app, [*args, "--model", str(onnx_file)])
    torch_fp32 = runner.invoke(app, [*args, "--model", str(model_dir), "--precision", "fp32"])
    assert onnx.exit_code == 0 and torch_fp32.exit_code == 0, onnx.stderr + torch_fp32.stderr
    a, b = json.loads(onnx.stdout), json.loads(torch_fp32.stdout)
    assert (a["backend"], a["device"], a["precision"]) == ("onnxruntime", "cpu", "fp32")
    assert "precision_note" not in a and "onnxruntime cpu fp32" in onnx.stderr
    assert b["backend"] == "torch" and abs(a["loss"] - b["loss"]) < 1e-4


# ------------------------------------------------------------------------------------- inputs
class _Redirects(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(302)
        self.send_header("Location", self.path + "x")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def web(tmp_path, make_images):
    """A local http.server: /img000.png ... and /notes.txt; a second one that only redirects."""
    root = tmp_path / "www"
    make_images(2, folder=root, size=(50, 37))
    (root / "notes.txt").write_text("not an image")
    servers = [
        ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(root))),
        ThreadingHTTPServer(("127.0.0.1", 0), _Redirects),
    ]
    for s in servers:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    yield root, *(f"http://127.0.0.1:{s.server_address[1]}" for s in servers)
    for s in servers:
        s.shutdown()
        s.server_close()


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_a_url_predicts_as_the_local_file_and_a_bad_url_is_an_error_record(model_dir, web):
    import socket

    root, base, loops = web
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}/x.jpg"
    url = f"{base}/img001.png"
    args = ["predict", "--model", str(model_dir), "--json", "--device", "cpu"]
    result = runner.invoke(
        app,
        args + [url, str(root / "img001.png"), closed, f"{base}/notes.txt", f"{base}/missing.png", f"{loops}/a.png"],
        env={"VIT_EXPORT": "0"},
    )
    assert result.exit_code == 1 and "Traceback" not in result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert records[0]["path"] == url and records[0]["predictions"] == records[1]["predictions"]
    assert "cannot fetch" in records[2]["error"]
    assert "not an image" in records[3]["error"] and "HTTP 404" in records[4]["error"]
    assert "too many redirects" in records[5]["error"]


def test_stdin_and_a_list_file(model_dir, web, tmp_path):
    root, base, _ = web
    listing = tmp_path / "inputs.txt"
    listing.write_text(f"# images to do\n{root / 'img000.png'}\n\n{base}/img001.png\n")
    args = ["predict", "--model", str(model_dir), "--json", "--device", "cpu"]
    result = runner.invoke(
        app, args + ["-", "--list", str(listing)], input=(root / "img001.png").read_bytes(), env={"VIT_EXPORT": "0"}
    )
    assert result.exit_code == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["path"] for r in records] == ["-", str(root / "img000.png"), f"{base}/img001.png"]
    assert records[0]["predictions"] == records[2]["predictions"]
    result = runner.invoke(app, ["predict", "--model", str(model_dir)])
    assert result.exit_code == 2 and "no images given" in result.stderr


@pytest.mark.slow
def test_the_real_vit_ti_through_onnx_matches_torch_fp32_on_the_val_images(assets, tmp_path):
    model = assets / "models" / "vit_tiny_patch16_224.augreg_in21k_ft_in1k"
    images = str(assets / "images" / "imagenet-val-100" / "images")
    out = tmp_path / "vit_ti.onnx"
    assert runner.invoke(app, ["export", "--model", str(model), "-o", str(out)]).exit_code == 0
    a = runner.invoke(app, ["predict", "--model", str(out), "--json", images])
    b = runner.invoke(
        app,
        ["predict", "--model", str(model), "--json", "--device", "cpu", "--precision", "fp32", images],
        env={"VIT_EXPORT": "0"},
    )
    ours, ref = predictions(a), predictions(b)
    assert len(ref) == 100
    same = sum(ours[k]["predictions"][0]["index"] == ref[k]["predictions"][0]["index"] for k in ref)
    diff = max(abs(x["score"] - y["score"]) for k in ref for x, y in zip(ours[k]["predictions"], ref[k]["predictions"]))
    assert same >= 99 and diff < 1e-3
