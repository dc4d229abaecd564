"""Deployable forms: `vit export --quantize int8 / --half / --format openvino`, the agreement check that refuses
an export, every exported file as a model (predict, eval, open_model name the backend and precision), and
`vit benchmark --formats`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import make_tiny_vit, save_hub_layout
from vitcli.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return save_hub_layout(make_tiny_vit(5, seed=4), tmp_path_factory.mktemp("m"), [f"k{i}" for i in range(5)])


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    import numpy as np
    from PIL import Image

    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(folder / f"img{i:02d}.png")
    (folder / "labels.txt").write_text("".join(f"img{i:02d}.png {i % 5}\n" for i in range(12)))
    return folder


def export(*args) -> dict:
    result = runner.invoke(app, ["export", *args, "--json"])
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def predict(model, *paths) -> list[dict]:
    result = runner.invoke(
        app, ["predict", "--model", str(model), "--json", "-k", "2", *map(str, paths)], env={"VIT_EXPORT": "0"}
    )
    assert result.exit_code == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_int8_static_export_is_checked_and_predicts_as_int8(model_dir, images, tmp_path):
    out = tmp_path / "tiny.int8.onnx"
    report = export("--model", str(model_dir), "--quantize", "int8", "--calib", str(images), "-o", str(out))
    assert report["precision"] == "int8" and report["quantization"]["mode"] == "static"
    assert report["on"] == "images" and report["images"] == 12 and report["top1_agreement"] >= 0.95
    assert report["quantization"]["quantized_linears"] >= 1 and report["quantization"]["head"]
    ours = predict(out, *sorted(images.glob("*.png"))[:3])
    assert {(p["backend"], p["precision"]) for p in ours} == {("onnxruntime", "int8")}
    from vitcli.inference.opened import open_model

    assert open_model(str(out), device="auto", precision="auto").describe() == "onnxruntime cpu int8"


def test_openvino_export_predicts_and_evaluates_like_torch(model_dir, images, tmp_path):
    pytest.importorskip("openvino")
    out = tmp_path / "tiny.xml"
    report = export("--model", str(model_dir), "--format", "openvino", "--check", str(images), "-o", str(out))
    assert report["precision"] == "fp32" and report["top1_agreement"] == 1.0 and out.with_suffix(".bin").is_file()
    paths = sorted(images.glob("*.png"))[:4]
    ours, ref = predict(out, *paths), predict(model_dir, *paths)
    assert [p["predictions"][0]["index"] for p in ours] == [p["predictions"][0]["index"] for p in ref]
    assert ours[0]["predictions"][0]["score"] == pytest.approx(ref[0]["predictions"][0]["score"], abs=1e-4)
    assert (ours[0]["backend"], ours[0]["precision"]) == ("openvino", "fp32")
    result = runner.invoke(
        app, ["eval", "--model", str(out), "--data", str(images), "--labels", str(images / "labels.txt"), "--json"]
    )
    assert result.exit_code == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert (metrics["backend"], metrics["precision"]) == ("openvino", "fp32")


def test_a_pt2_file_is_a_model_and_an_export_below_the_threshold_is_refused(model_dir, images, tmp_path, monkeypatch):
    import numpy as np

    from vitcli.export import check

    out = tmp_path / "tiny.pt2"
    wrong = check.file_top1
    monkeypatch.setattr(check, "file_top1", lambda run, imgs: (wrong(run, imgs) + 1) % 5)  # every top-1 changed
    result = runner.invoke(
        app, ["export", "--model", str(model_dir), "-f", "pt2", "--check", str(images), "-o", str(out)]
    )
    assert result.exit_code == 1 and "0/12 images" in result.stderr and "--force" in result.stderr
    assert not out.exists()
    result = runner.invoke(
        app,
        ["export", "--model", str(model_dir), "-f", "pt2", "--check", str(images), "-o", str(out), "--force", "--json"],
    )
    assert result.exit_code == 0 and "KEPT BELOW THE THRESHOLD" in result.stderr and json.loads(result.stdout)["forced"]
    monkeypatch.setattr(check, "file_top1", wrong)
    path = min(images.glob("*.png"))
    ours, ref = predict(out, path), predict(model_dir, path)
    assert ours[0]["predictions"] == ref[0]["predictions"]
    assert (ours[0]["backend"], ours[0]["precision"]) == ("torch.export", "fp32")
    assert np.isfinite(ours[0]["predictions"][0]["score"])


def test_fp16_copy_and_the_int8_search_over_layer_groups(model_dir, images, tmp_path):
    import onnx

    from vitcli.export import check
    from vitcli.export.onnx_model import OnnxModel
    from vitcli.export.quantize import to_fp16

    fp32 = tmp_path / "tiny.onnx"
    export("--model", str(model_dir), "-o", str(fp32))
    meta = json.loads({p.key: p.value for p in onnx.load(str(fp32)).metadata_props}["vitcli"])
    half = tmp_path / "tiny.fp16.onnx"
    to_fp16(fp32, half, {**meta, "precision": "fp16"})
    model, ref = OnnxModel(half), OnnxModel(fp32)
    assert model.precision == "fp16" and model.describe() == "onnxruntime cpu fp16"
    batch = check.read_images(images, meta["data_config"])
    assert (check.file_top1(model, batch) == check.file_top1(ref, batch)).mean() >= 0.9

    from vitcli.export.quantize import quantize_int8

    said = []  # a target no int8 file reaches: every group measured alone, then put back to float in turn
    report = quantize_int8(fp32, tmp_path / "all-float.onnx", meta, check=batch, target=1.01, log=said.append)
    assert report.mode == "dynamic" and report.quantized == 0 and len(report.kept_float) == 8
    assert sum("only the 2 linears of shape" in m for m in said) == 4  # qkv, proj, fc1, fc2 of 2 blocks


@pytest.mark.parametrize(
    "args, words",
    [
        (["-f", "pt2", "--quantize", "int8"], "--format onnx"),
        (["--quantize", "int8", "--half"], "do not go together"),
        (["--calib", "."], "--calib is for --quantize int8"),
        (["--quantize", "int4"], "use int8"),
        (["-f", "openvino", "-o", "x.onnx"], "ends in .xml"),
    ],
)
def test_export_options_that_do_not_go_together(model_dir, args, words):
    result = runner.invoke(app, ["export", "--model", str(model_dir), *args])
    assert result.exit_code == 2 and words in result.stderr, result.stderr


def test_benchmark_formats_gives_one_row_per_format(model_dir, images):
    pytest.importorskip("openvino")
    result = runner.invoke(
        app,
        [
            "benchmark",
            "--model",
            str(model_dir),
            "--formats",
            "torch,onnx,onnx-int8,openvino",
            "--data",
            str(images),
            "--labels",
            str(images / "labels.txt"),
            "--iters",
            "2",
            "--warmup-iters",
            "1",
            "--batch-size",
            "4",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    rows = {row["format"]: row for row in report["rows"]}
    assert list(rows) == ["torch", "onnx", "onnx-int8", "openvino"] and report["images"] == 12
    assert rows["torch"]["agreement"] == 1.0 and rows["onnx"]["agreement"] == 1.0
    assert [rows[f]["precision"] for f in rows] == ["fp32", "fp32", "int8", "fp32"]
    for row in rows.values():
        assert row["top1"] is not None and row["latency_ms_b1"] > 0 and row["img_s"] > 0
    assert rows["onnx-int8"]["size_mb"] < rows["onnx"]["size_mb"]
    bad = runner.invoke(app, ["benchmark", "--model", str(model_dir), "--formats", "onnx,tflite"])
    assert bad.exit_code == 2 and "tflite" in bad.stderr


REAL = "vit_tiny_patch16_224.augreg_in21k_ft_in1k"


@pytest.mark.slow
def test_the_real_vit_ti_in_int8_and_openvino_agrees_with_fp32_on_the_val_images(assets, tmp_path):
    pytest.importorskip("openvino")
    model = assets / "models" / REAL
    val = assets / "images" / "imagenet-val-100"
    result = runner.invoke(
        app,
        [
            "benchmark",
            "--model",
            str(model),
            "--formats",
            "torch,onnx,onnx-int8,openvino",
            "--data",
            str(val / "images"),
            "--labels",
            str(val / "labels.txt"),
            "--iters",
            "3",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.stderr
    rows = {row["format"]: row for row in json.loads(result.stdout)["rows"]}
    # dynamic int8, the linears kept in float chosen on these images (docs/deploy-formats.md)
    assert rows["onnx-int8"]["agreement"] >= 0.95 and rows["openvino"]["agreement"] >= 0.99
    assert rows["torch"]["top1"] == pytest.approx(0.73, abs=0.011)  # the assets README's reference figure
