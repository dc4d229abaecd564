"""The dataset layer: ImageFolder trees, torchvision layouts, the minival carve, unreadable images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vitcli.data import datasets as data
from vitcli.data import source
from vitcli.data.loader import Records, Skipped, make_loader
from vitcli.errors import DataError


def make_tree(root: Path, splits: dict[str, dict[str, int]], size=(24, 24)) -> Path:
    """root/<split>/<class>/img.png with random pixels ('' as split: class folders directly in root)."""
    rng = np.random.default_rng(0)
    for split, classes in splits.items():
        for cls, n in classes.items():
            folder = root / split / cls if split else root / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(
                    folder / f"{cls}{i}.png"
                )
    return root


def test_imagefolder_with_train_and_val(tmp_path):
    root = make_tree(tmp_path / "ds", {"train": {"ants": 5, "bees": 4}, "val": {"ants": 2, "bees": 3}})
    src = data.open_dataset(str(root))
    assert src.classes == ["ants", "bees"]
    assert src.splits == ["train", "val"]
    assert src.selection_split == "val"
    assert src.size("train") == 9 and src.size("val") == 5
    _, image, label = src.subset("val")[4]
    assert isinstance(image, Image.Image) and label == 1
    with pytest.raises(DataError, match="no 'test' split"):
        src.subset("test")


def test_single_folder_minival_is_stratified_deterministic_and_disjoint(tmp_path):
    root = make_tree(tmp_path / "flat", {"": {"a": 20, "b": 10}})
    src = data.open_dataset(str(root), val_split=0.2)
    assert src.splits == ["train", "minival"]
    train, mini = src.subset("train"), src.subset("minival")
    train_paths = {train.path(i) for i in range(len(train))}
    mini_paths = {mini.path(i) for i in range(len(mini))}
    assert not train_paths & mini_paths and len(train_paths | mini_paths) == 30
    assert sorted(mini.labels.tolist()) == [0, 0, 0, 0, 1, 1]  # 20 % of each class
    again = data.open_dataset(str(root), val_split=0.2).subset("minival")
    assert [again.path(i) for i in range(len(again))] == [mini.path(i) for i in range(len(mini))]
    other = data.open_dataset(str(root), val_split=0.2, seed=1).subset("minival")
    assert {other.path(i) for i in range(len(other))} != mini_paths


def test_train_and_test_without_val_carves_minival_when_asked_or_large_enough(tmp_path):
    root = make_tree(tmp_path / "ds", {"train": {"x": 10, "y": 10}, "test": {"x": 2, "y": 2}})
    small = data.open_dataset(str(root))  # a default minival of 2 images: too few to select by, not carved
    assert small.splits == ["train", "test"] and small.size("train") == 20 and small.minival_too_small == 2
    asked = data.open_dataset(str(root), val_split=0.1)
    assert asked.splits == ["train", "minival", "test"] and asked.minival_too_small is None
    assert asked.size("minival") == 2 and asked.size("train") == 18
    # 1,000 training images: the default 10 % (100 images, MIN_MINIVAL) is carved
    records = lambda n: Records(np.arange(n) % 2, paths=[f"{i}.png" for i in range(n)])  # noqa: E731
    large = source.from_parts("big", ["x", "y"], {"train": records(1000), "test": records(10)})
    assert large.splits == ["train", "minival", "test"] and large.size("minival") == source.MIN_MINIVAL == 100
    below = source.from_parts("big", ["x", "y"], {"train": records(980), "test": records(10)})
    assert below.splits == ["train", "test"] and below.minival_too_small == 98


def test_runs_that_select_carve_their_minival_whatever_its_size(tmp_path):
    from vitcli.train.run.config import resolve, with_minival

    root = make_tree(tmp_path / "ds", {"train": {"x": 10, "y": 10}, "test": {"x": 2, "y": 2}})
    assert resolve("finetune", {"dataset": str(root), "recipe": "quick"}).val_split is None
    assert resolve("finetune", {"dataset": str(root), "recipe": "quick", "patience": 2}).val_split == 0.1
    assert with_minival(resolve("train", {"dataset": "cifar10", "recipe": "quick"})).val_split == 0.02
    assert with_minival(resolve("train", {"dataset": "hf:uoft-cs/cifar100", "recipe": "quick"})).val_split == 0.02
    assert data.default_val_split(str(root)) == source.DEFAULT_VAL_SPLIT


def test_unreadable_image_is_skipped_named_once_and_counted(tmp_path, capsys):
    import torchvision.transforms as T

    root = make_tree(tmp_path / "ds", {"train": {"a": 3, "b": 3}, "val": {"a": 1, "b": 1}})
    bad = root / "train" / "a" / "a1.png"
    bad.write_bytes(b"not a png at all")
    src = data.open_dataset(str(root))
    ds = src.subset("train", T.ToTensor())
    assert isinstance(ds[1], Skipped) and ds[1].path == str(bad) and ds[1].position == 1
    seen = []
    for _ in range(2):  # two epochs: the file is named once, counted once
        for batch in make_loader(ds, batch_size=4):
            src.note_skipped(batch.skipped)
            seen.append(len(batch.labels))
    assert seen == [3, 2, 3, 2]  # the bad item is dropped, never replaced by another sample
    assert src.skipped_count == 1 and str(bad) in src.unreadable
    err = capsys.readouterr().err
    assert err.count("a1.png") == 1 and "skipping unreadable image" in err


def test_augmentation_is_seeded_per_sample_and_epoch(tmp_path):
    import torch
    import torchvision.transforms as T

    root = make_tree(tmp_path / "ds", {"train": {"a": 4}, "val": {"a": 1}}, size=(32, 32))
    aug = T.Compose([T.RandomResizedCrop(16, scale=(0.05, 1.0)), T.RandomHorizontalFlip(), T.ToTensor()])
    ds = data.open_dataset(str(root)).subset("train", aug, augment_seed=7)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = ds[2].image
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is left untouched
    assert torch.equal(ds[2].image, a)
    ds.set_epoch(1)
    assert not torch.equal(ds[2].image, a)


def _fake_pets(root: Path) -> None:
    """Exactly what torchvision's OxfordIIITPet leaves under root after its download."""
    base = root / "oxford-iiit-pet"
    (base / "images").mkdir(parents=True)
    (base / "annotations").mkdir()
    rng = np.random.default_rng(0)
    lines = {"trainval": [], "test": []}
    breeds = [("Abyssinian", 1, 1), ("american_bulldog", 2, 2)]
    for breed, label, species in breeds:
        for i in range(1, 13):
            image_id = f"{breed}_{i}"
            Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(base / "images" / f"{image_id}.jpg")
            lines["trainval" if i <= 10 else "test"].append(f"{image_id} {label} {species} 1")
    for split, rows in lines.items():
        (base / "annotations" / f"{split}.txt").write_text("\n".join(rows) + "\n")


def test_pets_on_disk_in_torchvision_layout_is_found_without_download(tmp_path, monkeypatch):
    import torchvision.datasets.oxford_iiit_pet as tv_pets
    import torchvision.datasets.utils as tv_utils

    def no_download(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(tv_pets, "download_and_extract_archive", no_download)
    monkeypatch.setattr(tv_utils, "download_url", no_download)
    _fake_pets(tmp_path / "data")
    src = data.open_dataset("pets", data_dir=tmp_path / "data", download=True, val_split=0.1)
    assert src.classes == ["Abyssinian", "American Bulldog"]
    assert src.splits == ["train", "minival", "test"]
    assert src.size("train") + src.size("minival") == 20 and src.size("test") == 4
    assert src.size("minival") == 2  # 10 % of each class
    _, image, label = src.subset("test")[3]
    assert image.size == (20, 20) and label == 1


def test_pets_default_data_dir_is_the_vit_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VIT_CACHE", str(tmp_path / "cache"))
    _fake_pets(tmp_path / "cache" / "datasets")
    assert data.open_dataset("pets", download=False).size("test") == 4


def test_missing_named_dataset_offline_says_which_files_go_where(tmp_path):
    with pytest.raises(DataError) as info:
        data.open_dataset("cifar10", data_dir=tmp_path / "nowhere", download=False)
    assert "cifar-10-batches-py" in info.value.hint and str(tmp_path / "nowhere") in info.value.hint


def test_offline_mode_never_downloads(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match="offline mode is on") as info:
        data.open_dataset("pets", data_dir=tmp_path, download=True)
    assert "oxford-iiit-pet/annotations" in info.value.hint


def test_unknown_spec(tmp_path):
    with pytest.raises(DataError, match="neither a known name nor a folder"):
        data.open_dataset(str(tmp_path / "missing"))
