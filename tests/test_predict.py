"""`vit predict` through the CLI: outputs, order, bad images, files; the real ViT-Ti when present."""

from __future__ import annotations

import csv
import json

import pytest
from PIL import Image
from typer.testing import CliRunner

from vitcli.cli import app

runner = CliRunner()


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_predict_json_in_input_order(tiny_vit_dir, make_images):
    paths = make_images(5)
    args = [
        "predict",
        *map(str, reversed(paths)),
        "--model",
        str(tiny_vit_dir),
        "--json",
        "-k",
        "3",
        "--batch-size",
        "2",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = _json_lines(result.stdout)
    assert [r["path"] for r in rows] == [str(p) for p in reversed(paths)]
    for row in rows:
        preds = row["predictions"]
        assert len(preds) == 3
        assert all(p["label"] == f"class{p['index']}" for p in preds)
        scores = [p["score"] for p in preds]
        assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1.0001


def test_predict_matches_the_model(tiny_vit_dir, make_images):
    """The scores are the model's softmax under timm's own eval transform."""
    import timm
    import torch
    from timm.data import create_transform, resolve_model_data_config

    path = make_images(1)[0]
    model = timm.create_model(f"local-dir:{tiny_vit_dir}", pretrained=True).eval()
    transform = create_transform(**resolve_model_data_config(model))
    with torch.no_grad():
        probs = model(transform(Image.open(path).convert("RGB"))[None]).softmax(-1)[0]
    result = runner.invoke(
        app, ["predict", str(path), "--model", str(tiny_vit_dir), "--json", "-k", "1", "--precision", "fp32"]
    )  # timm's exact fp32 scores (auto may pick bf16)
    top = _json_lines(result.stdout)[0]["predictions"][0]
    assert top["index"] == int(probs.argmax())
    assert top["score"] == pytest.approx(float(probs.max()), abs=1e-5)


def test_bad_images_are_reported_and_the_rest_predicted(tiny_vit_dir, make_images, tmp_path):
    good = make_images(3)
    empty = tmp_path / "images" / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "images" / "fake.png"
    text.write_text("hello")
    result = runner.invoke(
        app,
        [
            "predict",
            str(good[0]),
            str(empty),
            str(text),
            str(good[1]),
            "missing.jpg",
            str(good[2]),
            "--model",
            str(tiny_vit_dir),
            "--json",
        ],
    )
    assert result.exit_code == 1
    rows = {r["path"]: r for r in _json_lines(result.stdout)}
    assert rows[str(empty)]["error"] == "empty file"
    assert "not an image" in rows[str(text)]["error"]
    assert rows["missing.jpg"]["error"] == "no such file or folder"
    assert all("predictions" in rows[str(p)] for p in good)
    assert "Traceback" not in result.output


def test_output_files_csv_and_jsonl(tiny_vit_dir, make_images, tmp_path):
    paths = make_images(2)
    out_csv = tmp_path / "p.csv"
    result = runner.invoke(
        app, ["predict", *map(str, paths), "--model", str(tiny_vit_dir), "-k", "2", "--output", str(out_csv)]
    )
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out_csv.open()))
    assert len(rows) == 4 and rows[0]["rank"] == "1" and rows[0]["label"].startswith("class")
    assert "class" in result.stdout  # the table
    out_jsonl = tmp_path / "p.jsonl"
    runner.invoke(app, ["predict", *map(str, paths), "--model", str(tiny_vit_dir), "-o", str(out_jsonl)])
    assert len(_json_lines(out_jsonl.read_text())) == 2


def test_bad_output_suffix_is_a_usage_error(tiny_vit_dir, make_images, tmp_path):
    result = runner.invoke(
        app, ["predict", str(make_images(1)[0]), "--model", str(tiny_vit_dir), "-o", str(tmp_path / "x.xlsx")]
    )
    assert result.exit_code == 2 and "unknown format" in result.stderr


def test_unknown_model_suggests_names(make_images):
    result = runner.invoke(app, ["predict", str(make_images(1)[0]), "--model", "vit_tiny_patch16_225"])
    assert result.exit_code == 1
    assert "unknown model" in result.stderr and "vit_tiny_patch16_224" in result.stderr


@pytest.mark.slow
def test_real_vit_ti_matches_timm_on_imagenet_val(assets, tmp_path, monkeypatch):
    """Acceptance: served from the local Hub, 73 (+-1) top-1 right and timm's top-1 on >= 99 images."""
    import timm
    import torch
    from timm.data import create_transform, resolve_data_config

    from tests.hubserver import LocalHub

    model_dir = assets / "models" / "vit_tiny_patch16_224.augreg_in21k_ft_in1k"
    image_dir = assets / "images" / "imagenet-val-100"
    labels = dict(line.split() for line in (image_dir / "labels.txt").read_text().splitlines() if line.strip())
    with LocalHub({"timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k": model_dir}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        result = runner.invoke(
            app,
            ["predict", "--model", "vit_tiny_patch16_224.augreg_in21k_ft_in1k", "--json", str(image_dir / "images")],
        )
    assert result.exit_code == 0, result.stderr
    rows = _json_lines(result.stdout)
    assert len(rows) == 100
    ours = {r["path"].rsplit("/", 1)[-1]: r["predictions"][0]["index"] for r in rows}
    correct = sum(ours[name] == int(label) for name, label in labels.items())
    assert 72 <= correct <= 74

    model = timm.create_model(
        "vit_tiny_patch16_224", pretrained=True, pretrained_cfg_overlay={"file": str(model_dir / "model.safetensors")}
    ).eval()
    transform = create_transform(**resolve_data_config({}, model=model))
    same = 0
    with torch.no_grad():
        names = sorted(ours)
        for i in range(0, len(names), 50):
            batch = torch.stack(
                [transform(Image.open(image_dir / "images" / n).convert("RGB")) for n in names[i : i + 50]]
            )
            for n, c in zip(names[i : i + 50], model(batch).argmax(-1).tolist()):
                same += ours[n] == c
    assert same >= 99
