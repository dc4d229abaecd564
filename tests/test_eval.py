"""`vit eval`: timm's numbers, the flat folder + labels layout, class mapping, artefacts, ReaL; the real
ViT-Ti on ImageNet val images when ../shared/assets is present."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from tests.conftest import make_tiny_vit, save_hub_layout
from vitcli.cli import app

runner = CliRunner()


def _timm_reference(model_dir: Path, paths: list[Path]):
    """Logits from timm's own pipeline: local-dir model, resolve_data_config, create_transform, PIL."""
    import timm
    import torch
    from timm.data import create_transform, resolve_data_config

    model = timm.create_model(f"local-dir:{model_dir}", pretrained=True).eval()
    transform = create_transform(**resolve_data_config({}, model=model))
    with torch.no_grad():
        return model(torch.stack([transform(Image.open(p).convert("RGB")) for p in paths]))


def _images(folder: Path, n: int, seed: int = 0, names=None) -> list[Path]:
    """n RGB images of varied sizes (so resize and centre crop matter)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        w, h = int(rng.integers(30, 90)), int(rng.integers(30, 90))
        path = folder / (names[i] if names else f"img{i:03d}.png")
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def _labels_file(path: Path, names, targets) -> Path:
    path.write_text("".join(f"{n} {t}\n" for n, t in zip(names, targets)))
    return path


def _run(*args):
    return runner.invoke(app, ["eval", *map(str, args)])


def test_top1_top5_equal_timms_pipeline(tiny_vit_dir, tmp_path):
    import torch
    from timm.utils import accuracy

    paths = _images(tmp_path / "val", 24)
    ref = _timm_reference(tiny_vit_dir, paths)
    # half the targets are timm's top-1 (so top-1 is not trivially 0), the rest arbitrary
    targets = [int(c) if i % 2 == 0 else (i * 7) % 10 for i, c in enumerate(ref.argmax(1))]
    labels = _labels_file(tmp_path / "labels.txt", [p.name for p in paths], targets)
    result = _run(
        "--model",
        tiny_vit_dir,
        "--data",
        tmp_path / "val",
        "--labels",
        labels,
        "--json",
        "--batch-size",
        5,
        "--workers",
        0,
        "--precision",
        "fp32",
    )  # exact fp32, as timm's
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    t1, t5 = accuracy(ref, torch.tensor(targets), topk=(1, 5))
    assert summary["num_images"] == 24 and summary["num_failed"] == 0
    assert summary["top1"] == pytest.approx(float(t1), abs=1e-4)
    assert summary["top5"] == pytest.approx(float(t5), abs=1e-4)
    loss = torch.nn.functional.cross_entropy(ref, torch.tensor(targets)).item()
    assert summary["loss"] == pytest.approx(loss, abs=1e-4)
    for key in ("ece", "macro_precision", "macro_recall", "macro_f1"):
        assert 0 <= summary[key] <= 100


def test_flat_folder_artefacts_and_unreadable_images(tiny_vit_dir, tmp_path):
    paths = _images(tmp_path / "val", 6)
    (tmp_path / "val" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    names = [p.name for p in paths] + ["broken.jpg", "missing.png"]
    labels = _labels_file(tmp_path / "labels.txt", names, [0, 1, 2, 3, 4, 5, 6, 7])
    out = tmp_path / "out"
    result = _run(
        "--model", tiny_vit_dir, "--data", tmp_path / "val", "--labels", labels, "--out-dir", out, "--workers", 0
    )
    assert result.exit_code == 1, result.stderr  # the numbers stand; the exit code says two images were not read
    assert "top-1" in result.stdout and "ECE" in result.stdout
    assert "broken.jpg" in result.stderr and "missing.png" in result.stderr
    data = json.loads((out / "metrics.json").read_text())
    assert data["num_images"] == 6 and data["num_failed"] == 2  # counted, never replaced
    assert sorted(Path(f["path"]).name for f in data["failed"]) == ["broken.jpg", "missing.png"]
    assert all(f["error"] for f in data["failed"])
    rows = list(csv.reader(open(out / "confusion_matrix.csv")))
    assert rows[0][1:] == [f"class{i}" for i in range(10)] and len(rows) == 11
    cm = np.array([[int(x) for x in r[1:]] for r in rows[1:]])
    assert cm.sum() == 6 and np.trace(cm) == round(data["top1"] * 6 / 100)
    per_class = list(csv.DictReader(open(out / "per_class.csv")))
    assert sum(int(r["support"]) for r in per_class) == 6
    assert (out / "confusion.png").stat().st_size > 1000
    predictions = list(csv.DictReader(open(out / "predictions.csv")))  # one row per readable image
    assert [Path(r["path"]).name for r in predictions] == [p.name for p in paths]
    assert [int(r["true_index"]) for r in predictions] == [0, 1, 2, 3, 4, 5]
    assert sum(int(r["top1_index"]) == int(r["true_index"]) for r in predictions) == round(data["top1"] * 6 / 100)
    assert all(0 < float(r["top1_score"]) <= 1 for r in predictions)


def test_labels_file_errors(tiny_vit_dir, tmp_path):
    paths = _images(tmp_path / "val", 2)
    bad = tmp_path / "bad.txt"
    bad.write_text(f"{paths[0].name} 1\n{paths[1].name}\n")
    result = _run("--model", tiny_vit_dir, "--data", tmp_path / "val", "--labels", bad)
    assert result.exit_code == 1 and "bad.txt:2" in result.stderr and "Traceback" not in result.output
    big = _labels_file(tmp_path / "big.txt", [p.name for p in paths], [1, 10])
    result = _run("--model", tiny_vit_dir, "--data", tmp_path / "val", "--labels", big)
    assert result.exit_code == 1 and "class index 10" in result.stderr
    result = _run("--model", tiny_vit_dir)
    assert result.exit_code == 2 and "--dataset" in result.stderr


def _tree(root: Path, classes, per_class=3, seed=0) -> Path:
    for j, c in enumerate(classes):
        _images(root / c, per_class, seed=seed + j)
    return root


def test_class_mismatch_is_a_clear_error(tiny_vit_dir, tmp_path):
    tree = _tree(tmp_path / "pets", ["ants", "bees"])
    result = _run("--model", tiny_vit_dir, "--data", tree)
    assert result.exit_code == 1, result.output
    assert "do not match" in result.stderr and "ants" in result.stderr and "Traceback" not in result.output
    assert "--few-shot" in result.stderr  # the hint


def test_run_folder_label_names_map_the_classes(tmp_path):
    """A model whose label_names cover the dataset's classes is evaluated in its own class order."""
    model_dir = save_hub_layout(make_tiny_vit(4, seed=1), tmp_path / "run" / "best", ["cat", "dog", "ants", "bees"])
    tree = _tree(tmp_path / "data", ["ants", "bees"])  # dataset classes 0, 1 -> model classes 2, 3
    out = tmp_path / "out"
    result = _run("--model", tmp_path / "run", "--data", tree, "--json", "--out-dir", out, "--workers", 0)
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["num_images"] == 6 and summary["split"] == "all"
    per_class = {r["name"]: r for r in json.loads((out / "metrics.json").read_text())["per_class"]}
    assert per_class["ants"]["support"] == 3 and per_class["bees"]["support"] == 3
    assert "cat" not in per_class or per_class["cat"]["support"] == 0
    assert model_dir.is_dir()


def test_dataset_tree_split(tiny_vit_dir, tmp_path):
    root = tmp_path / "tree"
    _tree(root / "train", ["class1", "class4"], per_class=3)
    _tree(root / "val", ["class1", "class4"], per_class=2, seed=5)
    result = _run("--model", tiny_vit_dir, "--dataset", root, "--json", "--workers", 0)
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["split"] == "val" and summary["num_images"] == 4


def test_real_labels(tiny_vit_dir, tmp_path):
    names = [f"ILSVRC2012_val_{i:08d}.png" for i in (2, 4, 5)]
    paths = _images(tmp_path / "val", 3, names=names)
    preds = _timm_reference(tiny_vit_dir, paths).argmax(1).tolist()
    labels = _labels_file(tmp_path / "labels.txt", names, [(p + 1) % 10 for p in preds])  # all wrong
    # real.json covers val images 1..5: image 2 has its prediction among the real labels, 4 not, 5 none
    real = [[0], [preds[0], 9], [0], [(preds[1] + 1) % 10], []]
    (tmp_path / "real.json").write_text(json.dumps(real))
    result = _run(
        "--model",
        tiny_vit_dir,
        "--data",
        tmp_path / "val",
        "--labels",
        labels,
        "--real-labels",
        tmp_path / "real.json",
        "--json",
        "--workers",
        0,
    )
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["top1"] == 0.0
    assert summary["real_num_images"] == 2 and summary["real_top1"] == 50.0


def test_core_run_without_cli(tiny_vit_dir, tmp_path):
    from vitcli.eval import evaluate, splits
    from vitcli.inference.opened import open_model

    paths = _images(tmp_path / "val", 4)
    split = splits.open_labelled_folder(
        tmp_path / "val", _labels_file(tmp_path / "l.txt", [p.name for p in paths], [0, 0, 1, 1])
    )
    opened = open_model(str(tiny_vit_dir), device="cpu", precision="auto")
    result = evaluate.run(opened, split, batch_size=3, workers=0)
    assert result.summary["num_images"] == 4
    assert result.confusion.shape == (10, 10) and result.confusion[:2].sum() == 4


@pytest.mark.slow
def test_real_vit_ti_on_imagenet_val_from_local_hub(assets, monkeypatch):
    """Acceptance: timm's 73.0 top-1 and 91.0 top-5, the model served from the local Hub."""
    from tests.hubserver import LocalHub

    model_dir = assets / "models" / "vit_tiny_patch16_224.augreg_in21k_ft_in1k"
    image_dir = assets / "images" / "imagenet-val-100"
    with LocalHub({"timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k": model_dir}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        result = _run(
            "--model",
            "vit_tiny_patch16_224.augreg_in21k_ft_in1k",
            "--data",
            image_dir / "images",
            "--labels",
            image_dir / "labels.txt",
            "--json",
            "--device",
            "cpu",
        )
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["num_images"] == 100 and summary["num_failed"] == 0
    assert summary["top1"] == 73.0 and summary["top5"] == 91.0


@pytest.mark.slow
def test_predict_and_eval_give_the_same_top1_on_every_real_val_image(assets, tmp_path, monkeypatch):
    """One image path: `vit predict` and `vit eval` label each of the 100 real val images alike."""
    monkeypatch.setenv("VIT_EXPORT", "0")  # the plain path on both sides (the fast-start copy has its own test)
    model = str(assets / "models" / "vit_tiny_patch16_224.augreg_in21k_ft_in1k")
    image_dir = assets / "images" / "imagenet-val-100"
    predicted = runner.invoke(
        app, ["predict", "--model", model, "--json", "--device", "cpu", "-k", "1", str(image_dir / "images")]
    )
    assert predicted.exit_code == 0, predicted.stderr
    top1 = {Path(r["path"]).name: r["predictions"][0] for r in map(json.loads, predicted.stdout.splitlines())}
    result = _run(
        "--model",
        model,
        "--data",
        image_dir / "images",
        "--labels",
        image_dir / "labels.txt",
        "--device",
        "cpu",
        "--out-dir",
        tmp_path / "out",
    )
    assert result.exit_code == 0, result.stderr
    rows = {Path(r["path"]).name: r for r in csv.DictReader(open(tmp_path / "out" / "predictions.csv"))}
    assert len(top1) == len(rows) == 100
    assert all(int(rows[name]["top1_index"]) == p["index"] for name, p in top1.items())
    assert all(abs(float(rows[name]["top1_score"]) - p["score"]) < 1e-5 for name, p in top1.items())


def test_named_dataset_missing_offline_says_where_to_put_it(tiny_vit_dir, tmp_path):
    result = _run("--model", tiny_vit_dir, "--dataset", "cifar10", "--data-dir", tmp_path / "data", "--offline")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "cifar-10-batches-py" in result.stderr and str(tmp_path / "data") in result.stderr
