"""Few-shot linear evaluation: the ridge solver, the draws, the feature cache, the CLI; the real
ViT-Ti on hymenoptera when ../shared/assets is present."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from vitcli.cli import app
from vitcli.eval import fewshot

runner = CliRunner()


def _separable(n_per_class: int, dim: int, classes: int, seed: int = 0, noise: float = 0.05):
    """Features clustered tightly around well-separated random class centres."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=g) * 3
    y = torch.arange(classes).repeat_interleave(n_per_class)
    x = centres[y] + noise * torch.randn(len(y), dim, generator=g)
    return x, y


@pytest.mark.parametrize("n_per_class,dim", [(5, 64), (40, 16)])  # D > N and N >= D: both branches
def test_ridge_recovers_separable_classes_exactly(n_per_class, dim):
    x, y = _separable(n_per_class, dim, classes=4)
    x_test, y_test = _separable(50, dim, classes=4, seed=0)  # same centres, fresh noise
    x_test = x_test + 0.05 * torch.randn_like(x_test)
    cache = fewshot.ridge_cache(x, y, 4)
    for l2 in (1.0, fewshot.DEFAULT_L2):
        assert fewshot.ridge_accuracy(cache, x_test, y_test, l2) == 1.0
        assert fewshot.ridge_accuracy(cache, x, y, l2) == 1.0


@pytest.mark.parametrize("n,dim", [(6, 10), (30, 5)])
def test_ridge_weights_equal_the_direct_solution(n, dim):
    """Both eigendecomposition branches give (X^T X + l2 I)^-1 X^T Y on whitened, bias-padded X."""
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(n, dim, generator=g, dtype=torch.float64), torch.arange(n) % 3
    cache = fewshot.ridge_cache(x, y, 3)
    xw = (x - x.mean(0)) / (x.std(0, unbiased=False) + 1e-5)
    xw = torch.cat([xw, torch.full((n, 1), fewshot.BIAS_CONSTANT, dtype=torch.float64)], 1)
    targets = 2.0 * torch.nn.functional.one_hot(y, 3).double() - 1
    for l2 in (0.5, 1024.0):
        direct = torch.linalg.solve(xw.T @ xw + l2 * torch.eye(dim + 1, dtype=torch.float64), xw.T @ targets)
        torch.testing.assert_close(fewshot.ridge_weights(cache, l2), direct, rtol=1e-6, atol=1e-8)


def test_draws_are_per_class_seeded_and_nested():
    labels = np.repeat(np.arange(3), [10, 4, 7])
    five = fewshot.sample_shots(labels, 5, seed=0, num_classes=3)
    assert np.bincount(labels[five], minlength=3).tolist() == [5, 4, 5]  # class 1 has only 4
    two = fewshot.sample_shots(labels, 2, seed=0, num_classes=3)
    assert set(two) <= set(five)
    assert (fewshot.sample_shots(labels, 5, seed=0, num_classes=3) == five).all()
    assert not (fewshot.sample_shots(labels, 5, seed=1, num_classes=3) == five).all()


def test_parse_lists():
    from vitcli.errors import UsageError

    assert fewshot.parse_int_list("1, 5,10,25", "--few-shot") == [1, 5, 10, 25]
    assert fewshot.parse_l2_list("1024") == [1024.0]
    assert fewshot.parse_l2_list("2**10,2^8,0.5") == [1024.0, 256.0, 0.5]
    with pytest.raises(UsageError):
        fewshot.parse_int_list("five", "--few-shot")
    with pytest.raises(UsageError):
        fewshot.parse_l2_list("-1")


def _tree(root: Path, splits: dict[str, int], classes=("red", "blue", "green")) -> Path:
    """An ImageFolder tree of solid-ish colour images: one colour per class."""
    rng = np.random.default_rng(0)
    colours = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 220, 30)}
    for split, n in splits.items():
        for c in classes:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                arr = np.clip(np.array(colours[c]) + rng.normal(0, 20, (36, 36, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(arr).save(root / split / c / f"{i}.png")
    return root


def test_cli_few_shot_and_feature_cache(tiny_vit_dir, tmp_path):
    tree = _tree(tmp_path / "colours", {"train": 6, "val": 4})
    (tree / "val" / "red" / "broken.png").write_bytes(b"not a png")
    args = [
        "eval",
        "--model",
        str(tiny_vit_dir),
        "--dataset",
        str(tree),
        "--few-shot",
        "1,3",
        "--seeds",
        "2",
        "--l2",
        "1024,4",
        "--json",
        "--workers",
        "0",
    ]
    first = runner.invoke(app, args)
    assert first.exit_code == 1, first.stderr  # one unreadable image: the numbers stand, the exit code says so
    a = json.loads(first.stdout)
    assert a["train_split"] == "train" and a["test_split"] == "val" and a["num_test"] == 12
    assert a["num_failed"] == 1 and a["failed"][0]["path"].endswith("broken.png")
    assert set(a["few_shot"]) == {"1", "3"} and a["few_shot"]["3"]["seeds"] == 2
    assert set(a["l2_sweep"]) == {"1024", "4"} and a["l2_sweep"]["1024"] == a["few_shot"]
    for r in a["few_shot"].values():
        assert 0 <= r["mean"] <= 100 and r["std"] >= 0 and len(r["accuracies"]) == 2
    # draws of 3 from 6 per class with 2 seeds: at most 18 of the 18 train images, plus the 13 val files
    assert 0 < a["forward_passes"] <= 18 + 13

    # the same run again: everything from the cache, identical numbers
    second = runner.invoke(app, args)
    b = json.loads(second.stdout)
    assert b["forward_passes"] == 0 and b["few_shot"] == a["few_shot"] and b["num_failed"] == 1
    # more seeds: only the new draws' images go through the model
    more = [*args]
    more[more.index("--seeds") + 1] = "3"
    third = json.loads(runner.invoke(app, more).stdout)
    assert third["forward_passes"] <= 9 and third["few_shot"]["3"]["accuracies"][:2] == a["few_shot"]["3"]["accuracies"]


def test_feature_cache_lives_in_the_vit_cache(tiny_vit_dir, tmp_path, monkeypatch):
    from vitcli.accel.runtime import runtime
    from vitcli.eval import splits
    from vitcli.models.resolver import load_model

    monkeypatch.setenv("VIT_CACHE", str(tmp_path / "cache"))
    tree = _tree(tmp_path / "colours", {"train": 3, "test": 2})
    source = splits.open_source(str(tree))
    train, test = splits.dataset_split(source, "train"), splits.dataset_split(source, "test")
    loaded = load_model(str(tiny_vit_dir))
    result = fewshot.run(
        loaded,
        runtime("cpu"),
        train,
        test,
        shots=[2],
        seeds=1,
        l2=[fewshot.DEFAULT_L2],
        batch_size=64,
        workers=0,
        use_cache=True,
    )
    files = list((tmp_path / "cache" / "features").glob("*.pt"))
    assert len(files) == 2 and result["forward_passes"] == 6 + 6
    # a different preprocessing is a different cache entry
    loaded.data_config = {**loaded.data_config, "crop_pct": 1.0}
    again = fewshot.run(
        loaded,
        runtime("cpu"),
        train,
        test,
        shots=[2],
        seeds=1,
        l2=[fewshot.DEFAULT_L2],
        batch_size=64,
        workers=0,
        use_cache=True,
    )
    assert again["forward_passes"] == 12 and len(list((tmp_path / "cache" / "features").glob("*.pt"))) == 4


def test_few_shot_needs_a_training_split(tiny_vit_dir, tmp_path):
    (tmp_path / "val").mkdir()
    (tmp_path / "l.txt").write_text("a.png 0\n")
    result = runner.invoke(
        app,
        [
            "eval",
            "--model",
            str(tiny_vit_dir),
            "--data",
            str(tmp_path / "val"),
            "--labels",
            str(tmp_path / "l.txt"),
            "--few-shot",
            "5",
        ],
    )
    assert result.exit_code == 2 and "training split" in result.stderr


@pytest.mark.slow
def test_real_vit_ti_five_shot_hymenoptera(assets):
    """Acceptance: 5-shot ridge on frozen ViT-Ti features, train -> val, >= 85 % over 3 seeds."""
    result = runner.invoke(
        app,
        [
            "eval",
            "--model",
            str(assets / "models" / "vit_tiny_patch16_224.augreg_in21k_ft_in1k"),
            "--dataset",
            str(assets / "datasets" / "hymenoptera"),
            "--few-shot",
            "5",
            "--seeds",
            "3",
            "--json",
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.stderr
    r = json.loads(result.stdout)
    five = r["few_shot"]["5"]
    assert r["test_split"] == "val" and r["num_test"] == 153 and five["seeds"] == 3
    assert five["mean"] >= 85.0 and five["std"] >= 0 and len(five["accuracies"]) == 3
