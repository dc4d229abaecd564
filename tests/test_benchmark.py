"""Performance plumbing: the timm-free preprocessing, JPEG draft decoding,
FLOP counting and `vit benchmark`. No timed assertions: speed is measured by benchmarks/, not tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from vitcli.cli import app

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]


def _timm_transform(data_config):
    from timm.data import create_transform

    return create_transform(**data_config, is_training=False)


@pytest.mark.parametrize(
    "config",
    [
        dict(
            input_size=(3, 224, 224),
            interpolation="bicubic",
            crop_pct=0.9,
            crop_mode="center",
            mean=(0.5, 0.5, 0.5),
            std=(0.5, 0.5, 0.5),
        ),
        dict(
            input_size=(3, 32, 32),
            interpolation="bilinear",
            crop_pct=0.875,
            crop_mode="center",
            mean=(0.485, 0.456, 0.406),
            std=(0.229, 0.224, 0.225),
        ),
        dict(
            input_size=(3, 40, 56),
            interpolation="bicubic",
            crop_pct=0.95,
            crop_mode="center",
            mean=(0.5, 0.5, 0.5),
            std=(0.5, 0.5, 0.5),
        ),  # non-square: timm's ResizeKeepRatio
        dict(
            input_size=(3, 48, 48),
            interpolation="bilinear",
            crop_pct=1.0,
            crop_mode="squash",
            mean=(0.5, 0.5, 0.5),
            std=(0.25, 0.25, 0.25),
        ),
        dict(
            input_size=(3, 64, 64),
            interpolation="bicubic",
            crop_pct=1.2,
            crop_mode="center",
            mean=(0.5, 0.5, 0.5),
            std=(0.5, 0.5, 0.5),
        ),  # crop larger than the resize: black padding
    ],
)
def test_eval_transform_equals_timm(config):
    import torch

    from vitcli.data.transforms import EvalTransform

    rng = np.random.default_rng(0)
    fast = EvalTransform(config)
    slow = _timm_transform(config)
    for w, h in [(300, 200), (199, 301), (64, 64), (17, 90), (500, 375)]:
        image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        assert torch.equal(fast(image), slow(image)), (config, w, h)


def test_eval_transform_equals_timm_on_real_images(assets):
    import torch

    from vitcli.data.images import load_image
    from vitcli.data.transforms import EvalTransform
    from vitcli.models.resolver import load_model

    data_config = load_model(str(assets / "models" / "vit_tiny_patch16_224.augreg_in21k_ft_in1k")).data_config
    fast, slow = EvalTransform(data_config), _timm_transform(data_config)
    for path in sorted((assets / "images" / "imagenet-val-100" / "images").iterdir())[:20]:
        image = load_image(path)
        assert torch.equal(fast(image), slow(image)), path


def test_unsupported_preprocessing_falls_back_to_timm():
    from vitcli.data.transforms import EvalTransform, eval_transform, supports

    border = dict(
        input_size=(3, 32, 32),
        interpolation="bicubic",
        crop_pct=0.9,
        crop_mode="border",
        mean=(0.5,) * 3,
        std=(0.5,) * 3,
    )
    assert not supports(border)
    assert not isinstance(eval_transform(border), EvalTransform)


def test_draft_decodes_large_jpegs_smaller(tmp_path):
    from vitcli.data.images import load_image

    rng = np.random.default_rng(0)
    big = tmp_path / "big.jpg"
    Image.fromarray(rng.integers(0, 256, (800, 1200, 3), dtype=np.uint8)).save(big, quality=90)
    png = tmp_path / "big.png"
    Image.open(big).save(png)
    assert load_image(big).size == (1200, 800)
    drafted = load_image(big, draft_size=180)
    assert drafted.size == (300, 200) and drafted.mode == "RGB"  # 1/4 scale, both sides still >= 180
    assert load_image(big, draft_size=500).size == (1200, 800)  # 1/2 would give 400 < 500: full size
    assert load_image(png, draft_size=180).size == (1200, 800)  # not a JPEG: untouched


def test_flop_count_and_gemm_shapes_of_a_known_model():
    import torch
    from torch import nn

    from vitcli.bench.ceiling import gemm_shapes
    from vitcli.models.meta import count_flops

    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3))
    x = torch.randn(5, 3, 2, 2)
    assert count_flops(model, x) == 2 * (12 * 8 + 8 * 3)  # per image
    assert count_flops(model, x, train=True) == 3 * 2 * (12 * 8 + 8 * 3) - 2 * 12 * 8  # no grad for the input
    assert gemm_shapes(model, x) == {(5, 12, 8): 1, (5, 8, 3): 1}


def test_flop_count_includes_attention():
    import torch

    from tests.conftest import make_tiny_vit
    from vitcli.bench.ceiling import gemm_shapes
    from vitcli.models.meta import count_flops

    model = make_tiny_vit(10)  # 32 px, patch 4: 64 patches + cls = 65 tokens, width 64, depth 2, mlp 2x
    x = torch.randn(1, 3, 32, 32)
    n, d = 65, 64
    linear = 2 * n * (d * 3 * d + d * d + d * 2 * d + 2 * d * d) * 2  # qkv, proj, fc1, fc2; 2 blocks
    attention = 2 * 2 * n * n * d * 2  # q @ k^T and attn @ v; 2 blocks
    patch = 2 * 64 * (3 * 4 * 4) * d
    head = 2 * d * 10
    assert count_flops(model, x) == linear + attention + patch + head
    shapes = gemm_shapes(model, torch.randn(2, 3, 32, 32))
    assert shapes[(2 * n, d, 3 * d)] == 2 and shapes[(2 * n, 2 * d, d)] == 2


def test_benchmark_cli_json(tiny_vit_dir):
    result = runner.invoke(
        app,
        [
            "benchmark",
            "--model",
            str(tiny_vit_dir),
            "--batch-size",
            "2",
            "--iters",
            "2",
            "--warmup-iters",
            "0",
            "--train",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    for key in (
        "model",
        "batch_size",
        "img_s",
        "timm_img_s",
        "gflop_per_img",
        "ceiling_gflop_s",
        "train_img_s",
        "timm_train_img_s",
        "latency_ms",
        "peak_mem_mb",
    ):
        assert key in out, key
    assert out["model"] == str(tiny_vit_dir) and out["batch_size"] == 2 and out["img_size"] == 32
    assert out["img_s"] > 0 and out["timm_img_s"] > 0 and out["ceiling_gflop_s"] > 0
    assert out["train_gflop_per_img"] > 2 * out["gflop_per_img"]  # backward costs about twice the forward
    assert set(out["latency_ms"]) == {"p50", "p90", "p99", "mean"}


def test_benchmark_table_and_random_init():
    result = runner.invoke(
        app,
        [
            "benchmark",
            "--model",
            "vit_tiny_patch16_224",
            "--random-init",
            "--img-size",
            "32",
            "--batch-size",
            "1",
            "--iters",
            "1",
            "--warmup-iters",
            "0",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "timm eager" in result.stdout and "ratio" in result.stdout and "32 px" in result.stdout
