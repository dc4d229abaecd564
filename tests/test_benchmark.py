"""Performance plumbing: the timm-free preprocessing, the TorchScript fast start, JPEG draft decoding,
FLOP counting and `vit benchmark`. No timed assertions: speed is measured by benchmarks/, not tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
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


@pytest.mark.parametrize("config", [
    dict(input_size=(3, 224, 224), interpolation="bicubic", crop_pct=0.9, crop_mode="center",
         mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
    dict(input_size=(3, 32, 32), interpolation="bilinear", crop_pct=0.875, crop_mode="center",
         mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
    dict(input_size=(3, 40, 56), interpolation="bicubic", crop_pct=0.95, crop_mode="center",
         mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),  # non-square: timm's ResizeKeepRatio
    dict(input_size=(3, 48, 48), interpolation="bilinear", crop_pct=1.0, crop_mode="squash",
         mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)),
    dict(input_size=(3, 64, 64), interpolation="bicubic", crop_pct=1.2, crop_mode="center",
         mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),  # crop larger than the resize: black padding
])
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
    from vitcli.models.resolver import load_model
    from vitcli.data.transforms import EvalTransform

    data_config = load_model(str(assets / "models" / "vit_tiny_patch16_224.augreg_in21k_ft_in1k")).data_config
    fast, slow = EvalTransform(data_config), _timm_transform(data_config)
    for path in sorted((assets / "images" / "imagenet-val-100" / "images").iterdir())[:20]:
        image = load_image(path)
        assert torch.equal(fast(image), slow(image)), path


def test_unsupported_preprocessing_falls_back_to_timm():
    from vitcli.data.transforms import EvalTransform, eval_transform, supports

    border = dict(input_size=(3, 32, 32), interpolation="bicubic", crop_pct=0.9, crop_mode="border",
                  mean=(0.5,) * 3, std=(0.5,) * 3)
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


def _predict_json(model_dir, image, extra_env=None):
    env = {**os.environ, **(extra_env or {})}
    code = ("import sys, json; from typer.testing import CliRunner; from vitcli.cli import app; "
            f"r = CliRunner().invoke(app, ['predict', {str(image)!r}, '--model', {str(model_dir)!r}, '--json']); "
            "print(json.dumps({'exit': r.exit_code, 'out': r.stdout, 'timm': 'timm' in sys.modules, "
            "'torchvision': 'torchvision' in sys.modules}))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_second_predict_uses_the_exported_model_without_timm(tiny_vit_dir, make_images, tmp_path):
    image = make_images(1, size=(50, 37))[0]
    env = {"VIT_CACHE": str(tmp_path / "vitcache")}
    first = _predict_json(tiny_vit_dir, image, env)
    assert first["exit"] == 0 and first["timm"]  # the normal path, which then saves the copy
    saved = list((tmp_path / "vitcache" / "exported").glob("*/meta.json"))
    assert len(saved) == 1
    meta = json.loads(saved[0].read_text())
    assert meta["equal_logits"] and (saved[0].parent / "model.pt").is_file()
    second = _predict_json(tiny_vit_dir, image, env)
    assert second["exit"] == 0 and not second["timm"] and not second["torchvision"]
    assert second["out"] == first["out"]  # same labels and scores to the last digit


def test_exported_logits_equal_the_model_and_a_changed_model_is_not_served(tmp_path, monkeypatch):
    import torch

    from tests.conftest import make_tiny_vit, save_hub_layout
    from vitcli.inference import faststart as export
    from vitcli.devices import runtime
    from vitcli.inference.predict import load_predictor

    folder = save_hub_layout(make_tiny_vit(5, seed=1), tmp_path / "m", [f"c{i}" for i in range(5)])
    rt = runtime("cpu", "fp32")
    loaded = load_predictor(str(folder), rt)
    assert not isinstance(loaded, export.ExportedModel)
    assert export.remember(str(folder), loaded, rt.device) is not None
    exported = export.lookup(str(folder))
    assert isinstance(exported, export.ExportedModel)
    assert exported.label_names == loaded.label_names and exported.data_config["input_size"] == [3, 32, 32]
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad(), torch.jit.optimized_execution(False):
        assert torch.equal(exported.model(x), loaded.model(x))
    # new weights in the same folder: another key, so the old copy is never served
    save_hub_layout(make_tiny_vit(5, seed=2), folder, [f"c{i}" for i in range(5)])
    assert export.lookup(str(folder)) is None
    monkeypatch.setenv("VIT_EXPORT", "0")  # switched off: nothing saved, nothing served
    loaded2 = load_predictor(str(folder), rt)
    assert export.remember(str(folder), loaded2, rt.device) is None and export.lookup(str(folder)) is None


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
    result = runner.invoke(app, ["benchmark", "--model", str(tiny_vit_dir), "--batch-size", "2", "--iters", "2",
                                 "--warmup-iters", "0", "--train", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    for key in ("model", "batch_size", "img_s", "timm_img_s", "gflop_per_img", "ceiling_gflop_s",
                "train_img_s", "timm_train_img_s", "latency_ms", "peak_mem_mb"):
        assert key in out, key
    assert out["model"] == str(tiny_vit_dir) and out["batch_size"] == 2 and out["img_size"] == 32
    assert out["img_s"] > 0 and out["timm_img_s"] > 0 and out["ceiling_gflop_s"] > 0
    assert out["train_gflop_per_img"] > 2 * out["gflop_per_img"]  # backward costs about twice the forward
    assert set(out["latency_ms"]) == {"p50", "p90", "p99", "mean"}


def test_benchmark_table_and_random_init():
    result = runner.invoke(app, ["benchmark", "--model", "vit_tiny_patch16_224", "--random-init", "--img-size", "32",
                                 "--batch-size", "1", "--iters", "1", "--warmup-iters", "0"])
    assert result.exit_code == 0, result.output
    assert "timm eager" in result.stdout and "ratio" in result.stdout and "32 px" in result.stdout
