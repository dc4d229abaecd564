"""Hugging Face datasets as vitcli datasets: `--dataset hf:NAME[:CONFIG]` and `save_to_disk` folders, built
here with `datasets` from local images (no network)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.conftest import make_colour_tree, make_tiny_vit, save_hub_layout
from vitcli.cli import app
from vitcli.data.datasets import open_dataset
from vitcli.errors import DataError, UsageError

datasets = pytest.importorskip("datasets")
runner = CliRunner()


@pytest.fixture(scope="module")
def colours(tmp_path_factory) -> Path:
    return make_colour_tree(tmp_path_factory.mktemp("colours"), {"train": 16, "val": 4, "test": 4})


@pytest.fixture(scope="module")
def saved(colours, tmp_path_factory) -> Path:
    """The colour tree as `load_dataset("imagefolder")` reads it, written with `save_to_disk`."""
    cache = tmp_path_factory.mktemp("hf-cache")
    folder = tmp_path_factory.mktemp("saved") / "colours-hf"
    datasets.load_dataset("imagefolder", data_dir=str(colours), cache_dir=str(cache)).save_to_disk(str(folder))
    return folder


@pytest.fixture(scope="module")
def colour_model(tmp_path_factory) -> Path:
    return save_hub_layout(make_tiny_vit(3), tmp_path_factory.mktemp("c3"), ["c0", "c1", "c2"])


def _eval(model, dataset, *extra):
    result = runner.invoke(app, ["eval", "--model", str(model), "--dataset", str(dataset), "--json", "-j", "0", *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_save_to_disk_folder_is_a_dataset_with_the_folders_splits(saved, colours):
    source = open_dataset(str(saved))
    folder = open_dataset(str(colours))
    assert source.classes == folder.classes == ["c0", "c1", "c2"]
    assert source.splits == folder.splits == ["train", "val", "test"]  # validation -> val: no minival carved
    assert [source.size(s) for s in source.splits] == [48, 12, 12]
    item = source.subset("val")[0]
    assert item.image.size == (36, 36) and item.label in (0, 1, 2)
    assert "colours-hf/val#0" in source.subset("val").path(0)
    carved = open_dataset(str(saved), val_split=0.25)
    assert carved.splits == ["train", "minival", "val", "test"] and carved.size("minival") == 12


def test_eval_on_a_saved_copy_equals_eval_on_the_folder(saved, colours, colour_model):
    on_folder = _eval(colour_model, colours, "--split", "val")
    on_copy = _eval(colour_model, saved, "--split", "val")
    assert on_copy["num_images"] == on_folder["num_images"] == 12
    assert (on_copy["top1"], on_copy["loss"]) == (on_folder["top1"], on_folder["loss"])  # the same pixels


def test_finetune_on_hf_name_caches_under_hf_home(colours, tiny_vit_dir, tmp_path, monkeypatch):
    hf_home = tmp_path / "hf"
    monkeypatch.setenv("HF_HOME", str(hf_home))
    result = runner.invoke(
        app,
        [
            "finetune",
            "--model",
            str(tiny_vit_dir),
            "--dataset",
            f"hf:{colours}",
            "--steps",
            "2",
            "--batch-size",
            "8",
            "-j",
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
    run = json.loads((Path(summary["run_dir"]) / "run.json").read_text())
    assert run["dataset"]["classes"] == ["c0", "c1", "c2"] and run["dataset"]["splits"] == {
        "train": 48,
        "val": 12,
        "test": 12,
    }
    assert summary["test_top1"] is not None
    assert any((hf_home / "datasets").rglob("*.arrow"))  # load_dataset's cache, under HF_HOME
    config = json.loads((Path(summary["run_dir"]) / "config.json").read_text())
    assert config["label_names"] == ["c0", "c1", "c2"]


def _table_dataset(tmp_path) -> Path:
    """Columns found from the features: an Image column and two ClassLabels; train and test splits only; a
    row without a label."""
    from PIL import Image

    rng = np.random.default_rng(0)
    features = datasets.Features(
        {
            "id": datasets.Value("int32"),
            "pixels": datasets.Image(),
            "coarse": datasets.ClassLabel(names=["animal", "plant"]),
            "fine": datasets.ClassLabel(names=["cat", "dog", "fern"]),
            "caption": datasets.Value("string"),
        }
    )

    def split(n, missing=False):
        rows = {
            "id": list(range(n)),
            "pixels": [Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)) for _ in range(n)],
            "coarse": [i % 2 for i in range(n)],
            "fine": [i % 3 for i in range(n)],
            "caption": [f"item {i % 2}" for i in range(n)],
        }
        if missing:
            rows["coarse"][0] = -1
        return datasets.Dataset.from_dict(rows, features=features)

    folder = tmp_path / "table"
    datasets.DatasetDict({"train": split(20), "test": split(6, missing=True)}).save_to_disk(str(folder))
    return folder


def test_columns_from_the_features_and_overrides(tmp_path):
    folder = _table_dataset(tmp_path)
    source = open_dataset(str(folder), val_split=0.1)
    assert source.classes == ["animal", "plant"]  # the first ClassLabel
    assert source.splits == ["train", "minival", "test"]  # no validation split: minival carved from train
    assert source.size("train") + source.size("minival") == 20 and source.size("test") == 5  # label -1 left out
    fine = open_dataset(str(folder), label_column="fine")
    assert fine.classes == ["cat", "dog", "fern"] and fine.size("test") == 6
    strings = open_dataset(str(folder), label_column="caption")
    assert strings.classes == ["item 0", "item 1"]
    assert open_dataset(str(folder), image_column="pixels").subset("test")[0].image.size == (20, 20)
    with pytest.raises(DataError, match="no such column") as e:
        open_dataset(str(folder), image_column="image")
    assert "pixels" in e.value.hint
    with pytest.raises(DataError, match="not images"):
        open_dataset(str(folder), image_column="fine")
    with pytest.raises(UsageError, match="Hugging Face dataset"):
        open_dataset(str(tmp_path), label_column="fine")


def test_an_unreadable_row_is_skipped_with_its_name(tmp_path):
    from vitcli.data.loader import Skipped

    good = tmp_path / "ok.png"
    from PIL import Image

    Image.new("RGB", (8, 8), (200, 0, 0)).save(good)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    rows = {
        "image": [{"bytes": good.read_bytes(), "path": "ok.png"}, {"bytes": b"not an image", "path": "bad.jpg"}],
        "label": [0, 1],
    }
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(tmp_path / "one"))
    source = open_dataset(str(tmp_path / "one"), val_split=0.0)  # one Dataset: the training set
    assert source.splits == ["train"]
    items = [source.subset("train")[i] for i in range(2)]
    assert items[0].image.size == (8, 8)
    assert isinstance(items[1], Skipped) and items[1].path.endswith("train#1 (bad.jpg)")
    assert "not an image" in items[1].reason


def test_hf_errors_are_one_line(tmp_path, tiny_vit_dir):
    result = runner.invoke(
        app, ["eval", "--model", str(tiny_vit_dir), "--dataset", "hf:acme/no-such-dataset", "--offline"]
    )
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert (
        "error: Hugging Face dataset acme/no-such-dataset is not in the cache and offline mode is on" in result.stderr
    )
    folder = _table_dataset(tmp_path)
    result = runner.invoke(
        app, ["eval", "--model", str(tiny_vit_dir), "--dataset", str(folder), "--label-column", "nope"]
    )
    assert result.exit_code == 1 and "no such column" in result.stderr and "Traceback" not in result.output


@pytest.mark.assets
@pytest.mark.slow
def test_hymenoptera_saved_copy_gives_the_folders_top1(assets, tmp_path):
    """The acceptance: `vit eval` on a save_to_disk copy of hymenoptera gives exactly the folder's top-1
    (real JPEGs, draft-decoded by the eval transform). 24 val images per class keep it short (the README
    shows all 153). The model: the real ViT-Ti with its ImageNet head cut to ant (310) and bee (309)."""
    import shutil

    import timm
    import torch

    folder = tmp_path / "hymenoptera"
    for split, n in (("train", 2), ("val", 24)):
        for cls in ("ants", "bees"):
            (folder / split / cls).mkdir(parents=True)
            for image in sorted((assets / "datasets" / "hymenoptera" / split / cls).iterdir())[:n]:
                shutil.copy(image, folder / split / cls / image.name)
    weights = assets / "models" / "vit_tiny_patch16_224.augreg_in21k_ft_in1k" / "model.safetensors"
    model = timm.create_model("vit_tiny_patch16_224", pretrained=True, pretrained_cfg_overlay={"file": str(weights)})
    head = torch.nn.Linear(model.embed_dim, 2)
    with torch.no_grad():
        head.weight.copy_(model.head.weight[[310, 309]])
        head.bias.copy_(model.head.bias[[310, 309]])
    model.head, model.num_classes = head, 2
    model.pretrained_cfg = {**model.pretrained_cfg, "num_classes": 2}
    model_dir = save_hub_layout(model, tmp_path / "ants-bees", ["ants", "bees"])
    copy = tmp_path / "hymenoptera-hf"
    datasets.load_dataset("imagefolder", data_dir=str(folder), cache_dir=str(tmp_path / "cache")).save_to_disk(
        str(copy)
    )
    on_folder = _eval(model_dir, folder, "--split", "val")
    on_copy = _eval(model_dir, copy, "--split", "val")
    assert on_folder["num_images"] == on_copy["num_images"] == 48
    assert on_copy["top1"] == on_folder["top1"] and on_copy["loss"] == on_folder["loss"]
    assert on_folder["top1"] > 90
