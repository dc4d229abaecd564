"""Multi-label classification end to end: CSV folders and Sequence(ClassLabel) datasets, the metrics and
thresholds, training (BCE, the one-vs-rest probe, multi-hot mixup), `vit eval` and `vit predict`.

The data: 32 px images on grey, each with 1-3 of three coloured squares (red, green, blue) in random
quadrants; an image's labels are its colours. A ViT under 1 M parameters learns a little in a few steps.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from vitcli.cli import app

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220)}


def make_multilabel_folder(root: Path, sizes: dict, seed: int = 0, px: int = 32) -> Path:
    """images/ + train.csv / val.csv / test.csv of coloured-square images (header image,labels)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    names = list(COLOURS)
    for split, n in sizes.items():
        rows = ["image,labels"]
        for i in range(n):
            k = 1 + i % 3
            chosen = sorted(rng.choice(len(names), size=k, replace=False).tolist())
            pixels = np.full((px, px, 3), 128, dtype=np.uint8) + rng.integers(0, 20, (px, px, 3), dtype=np.uint8)
            quadrants = rng.permutation(4)[:k]
            for c, q in zip(chosen, quadrants):
                y, x = (q // 2) * px // 2, (q % 2) * px // 2
                pixels[y + 2 : y + px // 2 - 2, x + 2 : x + px // 2 - 2] = COLOURS[names[c]]
            name = f"{split}_{i}.png"
            Image.fromarray(pixels).save(root / "images" / name)
            rows.append(f"{name},{' '.join(names[c] for c in chosen)}")
        (root / f"{split}.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="module")
def ml_folder(tmp_path_factory) -> Path:
    return make_multilabel_folder(tmp_path_factory.mktemp("multilabel"), {"train": 32, "val": 12, "test": 12})


# ------------------------------------------------------------------------------------------ data
def test_csv_folder_opens_as_multi_hot_with_the_union_of_training_labels(ml_folder, tmp_path):
    from vitcli.data.datasets import open_dataset
    from vitcli.errors import DataError

    source = open_dataset(str(ml_folder))
    assert source.multi_label and source.classes == ["blue", "green", "red"]
    assert source.splits == ["train", "val", "test"] and source.selection_split == "val"
    labels = source.subset("train").labels
    assert labels.shape == (32, 3) and set(np.unique(labels)) == {0, 1} and labels.sum(1).min() >= 1
    sample = source.subset("val")[0]
    assert sample.label.shape == (3,)
    from vitcli.data.loader import collate

    val = source.subset("val", lambda image: np.asarray(image, dtype=np.float32))
    batch = collate([val[i] for i in range(4)])
    assert tuple(batch.labels.shape) == (4, 3)
    # a label only val has is refused; a default minival is carved at random without val.csv
    bad = make_multilabel_folder(tmp_path / "bad", {"train": 4})
    (bad / "val.csv").write_text("image,labels\ntrain_0.png,purple\n")
    with pytest.raises(DataError, match="purple"):
        open_dataset(str(bad))
    (bad / "val.csv").unlink()
    carved = open_dataset(str(bad), val_split=0.25)
    assert carved.splits == ["train", "minival"] and carved.size("minival") == 1


def test_hf_sequence_of_class_labels_is_multi_label(tmp_path):
    datasets = pytest.importorskip("datasets")
    from PIL import Image

    from vitcli.data.datasets import open_dataset

    images = []
    for i in range(6):
        path = tmp_path / f"{i}.png"
        Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(path)
        images.append(str(path))
    features = datasets.Features(
        {"image": datasets.Image(), "tags": datasets.Sequence(datasets.ClassLabel(names=["a", "b", "c"]))}
    )
    ds = datasets.Dataset.from_dict(
        {"image": images, "tags": [[0], [1, 2], [], [0, 2], [1], [0, 1, 2]]}, features=features
    )
    ds.save_to_disk(str(tmp_path / "saved"))
    source = open_dataset(str(tmp_path / "saved"), val_split=0.0)
    assert source.multi_label and source.classes == ["a", "b", "c"]
    assert source.subset("train").labels.tolist() == [[1, 0, 0], [0, 1, 1], [0, 0, 0], [1, 0, 1], [0, 1, 0], [1, 1, 1]]


# ------------------------------------------------------------------------------------------ maths
def test_average_precision_matches_scikit_learn_and_thresholds_maximise_f1():
    from vitcli.eval import multilabel as ml

    rng = np.random.default_rng(0)
    targets = (rng.random((200, 4)) < 0.3).astype(int)
    scores = np.round(targets * 0.3 + rng.random((200, 4)), 2)  # ties included
    metrics = pytest.importorskip("sklearn.metrics")
    for c in range(4):
        assert ml.average_precision(scores[:, c], targets[:, c]) == pytest.approx(
            metrics.average_precision_score(targets[:, c], scores[:, c])
        )
    assert np.isnan(ml.average_precision([0.1, 0.2], [0, 0]))
    thresholds = ml.choose_thresholds(scores, targets, prior=0)
    best = ml.threshold_scores(scores, targets, thresholds)["per_class"]["f1"]
    for c in range(4):
        for t in np.linspace(0, 1.3, 27):
            f1 = ml.threshold_scores(scores[:, [c]], targets[:, [c]], [t])["per_class"]["f1"][0]
            assert f1 <= best[c] + 1e-12
    separable = np.array([[0.9], [0.8], [0.3], [0.1]]), np.array([[1], [1], [0], [0]])
    assert ml.choose_thresholds(*separable, prior=0) == [pytest.approx(0.55)]
    assert ml.choose_thresholds(*separable) == [pytest.approx((2 * 0.55 + ml.PRIOR * 0.5) / (2 + ml.PRIOR))]
    at = ml.threshold_scores(np.array([[0.9, 0.2], [0.6, 0.7]]), np.array([[1, 0], [0, 1]]), [0.5, 0.5])
    assert at["micro_precision"] == pytest.approx(200 / 3) and at["micro_recall"] == 100.0
    assert at["exact_match"] == 50.0


def test_one_vs_rest_probe_and_multi_hot_mixup():
    import torch

    from vitcli.train.recipe import multilabel
    from vitcli.train.recipe.regularise import Regularisation
    from vitcli.train.run.config import resolve

    rng = np.random.default_rng(0)
    y = (rng.random((60, 3)) < 0.5).astype(np.int64)
    x = torch.as_tensor(y * 2.0 - 1 + rng.normal(0, 0.3, (60, 3)))
    l2, scores = multilabel.choose_l2(x, y, 3)
    assert l2 in scores and scores[l2][1] > 95
    w, b = multilabel.fit_ovr(x, y, 3, l2)
    assert (((x @ w + b) > 0).numpy() == y.astype(bool)).mean() > 0.95

    cfg = resolve("finetune", {"dataset": "x", "steps": 1, "mixup": 0.8, "cutmix": 1.0, "multi_label": True})
    reg = Regularisation(cfg, 3, seed=0)
    labels = torch.tensor([[1, 0, 0], [0, 1, 1], [1, 1, 0], [0, 0, 1]])
    _, targets = reg.mix(torch.rand(4, 3, 8, 8), labels, step=0)
    assert targets.shape == (4, 3) and torch.allclose(targets + targets.flip(0), (labels + labels.flip(0)).float())
    loss = reg.criterion(torch.zeros(4, 3), targets)
    assert loss.item() == pytest.approx(3 * np.log(2))  # BCE summed over classes, mean over images


# ------------------------------------------------------------------------------------------ end to end
def test_finetune_eval_predict_multi_label_through_the_cli(tiny_vit_dir, ml_folder, tmp_path):
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "finetune",
            "--model",
            str(tiny_vit_dir),
            "--dataset",
            str(ml_folder),
            "--steps",
            "6",
            "--batch-size",
            "8",
            "--eval-every",
            "3",
            "--lr",
            "0.05",
            "--mixup",
            "0.2",
            "--workers",
            "0",
            "--device",
            "cpu",
            "--project",
            str(tmp_path / "runs"),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    run = Path(summary["run_dir"])
    assert summary["selection_split"] == "val" and 0 <= summary["val_mAP"] <= 100 and "test_mAP" in summary
    assert "val_top1" not in summary and len(summary["thresholds"]) == 3 and "cv_mAP" in summary["probe"]
    config = json.loads((run / "config.json").read_text())
    assert config["multi_label"] is True and config["label_names"] == ["blue", "green", "red"]
    assert config["thresholds"] == summary["thresholds"] and config["vitcli"]["config"]["multi_label"] is True
    evaluated = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("mAP" in m and m.get("split") == "test" for m in evaluated)

    out = tmp_path / "eval"
    result = runner.invoke(
        app,
        ["eval", "--model", str(run), "--dataset", str(ml_folder), "--json", "--out-dir", str(out), "--device", "cpu"],
    )
    assert result.exit_code == 0, result.output
    ev = json.loads(result.stdout)
    assert ev["split"] == "test" and ev["num_images"] == 12 and ev["multi_label"] and ev["thresholds"] == "chosen"
    assert ev["mAP"] == pytest.approx(summary["test_mAP"], abs=1e-3)  # the loop's test number is vit eval's
    assert [r["name"] for r in ev["per_class"]] == ["blue", "green", "red"]
    for key in ("micro_f1", "macro_f1", "micro_precision", "micro_recall", "macro_precision", "macro_recall"):
        assert 0 <= ev[key] <= 100
    for name in ("metrics.json", "per_class.csv", "predictions.csv", "pr_curves.png"):
        assert (out / name).is_file(), name
    assert (out / "per_class.csv").read_text().splitlines()[
        0
    ] == "index,name,support,predicted,ap,threshold,precision,recall,f1"
    result = runner.invoke(app, ["eval", "--model", str(run), "--dataset", str(ml_folder), "--device", "cpu"])
    assert result.exit_code == 0 and "mAP" in result.stdout and "micro F1" in result.stdout

    image = ml_folder / "images" / "test_0.png"
    result = runner.invoke(app, ["predict", "--model", str(run), str(image), "--json", "--threshold", "0"])
    assert result.exit_code == 0, result.output
    every = json.loads(result.stdout)["predictions"]
    assert sorted(p["label"] for p in every) == ["blue", "green", "red"]
    assert [p["score"] for p in every] == sorted((p["score"] for p in every), reverse=True)
    result = runner.invoke(app, ["predict", "--model", str(run), str(image), "--json", "--threshold", "1"])
    assert json.loads(result.stdout)["predictions"] == []
    csv_file = tmp_path / "pred.csv"
    result = runner.invoke(
        app, ["predict", "--model", str(run), str(ml_folder / "images"), "-o", str(csv_file), "--json"]
    )
    assert result.exit_code == 0, result.output
    thresholds = dict(zip(config["label_names"], config["thresholds"]))
    for line in result.stdout.splitlines():
        for p in json.loads(line)["predictions"]:
            assert p["score"] >= thresholds[p["label"]]
    assert csv_file.read_text().splitlines()[0] == "path,rank,label,index,score,error"
    result = runner.invoke(app, ["predict", "--model", str(run), str(image), "--threshold", "0"])
    assert result.exit_code == 0 and "red" in result.stdout and "green" in result.stdout


def test_multi_label_flag_is_checked_against_the_data(tiny_vit_dir, ml_folder, tmp_path):
    from vitcli.errors import UsageError
    from vitcli.train.run.config import resolve
    from vitcli.train.run.start import finetune

    base = {
        "model": str(tiny_vit_dir),
        "dataset": str(ml_folder),
        "steps": 1,
        "batch_size": 8,
        "workers": 0,
        "device": "cpu",
        "project": str(tmp_path / "runs"),
    }
    with pytest.raises(UsageError, match="multi-label data"):
        finetune(resolve("finetune", {**base, "multi_label": False}))
    with pytest.raises(UsageError, match="unknown --loss"):
        resolve("finetune", {**base, "loss": "focal"})


@pytest.fixture(scope="module")
def ml_model_dir(tmp_path_factory) -> Path:
    """A tiny 3-class model folder marked multi-label, with chosen thresholds (as a run writes them)."""
    from tests.conftest import make_tiny_vit, save_hub_layout

    folder = save_hub_layout(make_tiny_vit(3, seed=3), tmp_path_factory.mktemp("mlmodel"), ["blue", "green", "red"])
    config = json.loads((folder / "config.json").read_text())
    config.update({"multi_label": True, "thresholds": [0.0, 0.5, 1.0]})
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_onnx_export_and_gradcam_of_a_multi_label_model(ml_model_dir, ml_folder, tmp_path):
    pytest.importorskip("pytorch_grad_cam")
    runner = CliRunner()
    images = [str(ml_folder / "images" / f"test_{i}.png") for i in range(3)]
    torch_side = runner.invoke(app, ["predict", "--model", str(ml_model_dir), "--json", "--precision", "fp32", *images])
    assert torch_side.exit_code == 0, torch_side.output
    sets = [[p["label"] for p in json.loads(line)["predictions"]] for line in torch_side.stdout.splitlines()]
    assert all("blue" in s and "red" not in s for s in sets)  # thresholds 0 and 1: always, never
    onnx = tmp_path / "ml.onnx"
    result = runner.invoke(app, ["export", "--model", str(ml_model_dir), "-o", str(onnx), "--json"])
    assert result.exit_code == 0, result.output
    onnx_side = runner.invoke(app, ["predict", "--model", str(onnx), "--json", *images])
    assert onnx_side.exit_code == 0, onnx_side.output
    assert [[p["label"] for p in json.loads(line)["predictions"]] for line in onnx_side.stdout.splitlines()] == sets

    out = tmp_path / "cams"
    result = runner.invoke(
        app, ["visualize", "--gradcam", "--model", str(ml_model_dir), "--out-dir", str(out), "--json", images[0]]
    )
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)["gradcam"]["images"]
    assert sorted(im["target_label"] for im in shown) == sorted(sets[0])  # one map per label given
    assert len(list((out / "gradcam").glob("*.png"))) == len(sets[0])
    assert all(0 <= im["target_prob"] <= 1 for im in shown)


def test_faithfulness_of_a_multi_label_model_follows_the_sigmoid(ml_model_dir, ml_folder, tmp_path):
    """Each label is its own yes/no: deletion and insertion follow its sigmoid probability, not a softmax
    over labels that are not exclusive (the clean end of the deletion curve is the label's sigmoid)."""
    pytest.importorskip("pytorch_grad_cam")
    import torch

    from vitcli.models.resolver import load_model

    image = str(ml_folder / "images" / "test_0.png")
    out = tmp_path / "faith"
    result = CliRunner().invoke(
        app,
        ["visualize", "--gradcam", "--faithfulness", "--faithfulness-steps", "2", "--target", "blue"]
        + ["--model", str(ml_model_dir), "--precision", "fp32", "--out-dir", str(out), "--json", image],
    )
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "faithfulness.json").read_text())
    assert saved["score"] == "sigmoid probability of the explained class"
    loaded = load_model(str(ml_model_dir))
    from vitcli.data.loader import ImageDataset, Records
    from vitcli.data.transforms import eval_transform

    x = ImageDataset(Records.of_paths([image]), transform=eval_transform(loaded.data_config))[0].image[None]
    with torch.inference_mode():
        blue = float(loaded.model(x).float().sigmoid()[0, loaded.label_names.index("blue")])
    assert saved["maps"]["random"]["deletion_curve"][0] == pytest.approx(blue, abs=1e-4)


def test_top_k_caps_a_multi_label_models_labels(ml_model_dir, ml_folder, tmp_path):
    """Without -k every label at or above its threshold; with -k at most K of them, best first, in torch and
    in onnxruntime alike. A threshold of 0 for every class makes all three labels pass."""
    runner = CliRunner()
    onnx = tmp_path / "ml.onnx"
    assert runner.invoke(app, ["export", "--model", str(ml_model_dir), "-o", str(onnx), "--json"]).exit_code == 0
    image = str(ml_folder / "images" / "test_0.png")
    for model in (str(ml_model_dir), str(onnx)):
        base = ["predict", "--model", model, "--json", "--precision", "fp32", "--threshold", "0", image]
        every = runner.invoke(app, base)
        assert every.exit_code == 0, every.output
        labels = json.loads(every.stdout)["predictions"]
        assert len(labels) == 3 and [p["score"] for p in labels] == sorted((p["score"] for p in labels), reverse=True)
        two = runner.invoke(app, [*base, "-k", "2"])
        assert two.exit_code == 0, two.output
        assert json.loads(two.stdout)["predictions"] == labels[:2]
