"""torch.compile where it pays (vitcli.accel.compiled), the loader/model throughput report, and the
benchmark's fp32 baselines. The one real compile is of a sub-1M-parameter ViT at 32 px."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from tests.conftest import make_tiny_vit
from vitcli.accel import compiled
from vitcli.accel.runtime import Runtime
from vitcli.cli.app import app

runner = CliRunner()
CPU = Runtime(torch.device("cpu"), "fp32")


def test_nothing_compiles_unless_asked(monkeypatch):
    model = make_tiny_vit(10)
    monkeypatch.setattr(torch, "compile", lambda *a, **k: pytest.fail("must not compile"))
    monkeypatch.delenv("VIT_COMPILE", raising=False)
    assert compiled.wrap(model, CPU, compile=False, batch_size=4) is model  # the same answers every run
    monkeypatch.setenv("VIT_COMPILE", "0")
    assert compiled.wrap(model, CPU, compile=False, batch_size=4) is model


def test_compile_pads_short_batches_to_one_graph(monkeypatch):
    model = make_tiny_vit(10)
    fake = []

    def fake_compile(module, **kwargs):
        fake.append(kwargs)
        return lambda x: (fake.append(tuple(x.shape)), module(x) + 0)[1]  # stands in for the compiled graph

    monkeypatch.setattr(torch, "compile", fake_compile)
    fn = compiled.wrap(model, CPU, compile=True, batch_size=4)
    with torch.inference_mode():
        assert fn(torch.randn(4, 3, 32, 32)).shape == (4, 10) and fn.active
        x = torch.randn(3, 3, 32, 32)  # a short last batch: padded to one graph's shape, cut back
        assert torch.allclose(fn(x), model(x), atol=1e-6)
    assert fake[0] == {"dynamic": False} and all(s == (4, 3, 32, 32) for s in fake[1:])


@pytest.mark.slow
def test_vit_compile_1_compiles_a_tiny_vit_with_freezing_and_caches_it(monkeypatch):
    monkeypatch.setenv("VIT_COMPILE", "1")
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    model = make_tiny_vit(10)
    fn = compiled.wrap(model, CPU, compile=False, batch_size=4)
    x = torch.randn(3, 3, 32, 32)
    with torch.inference_mode():
        out = fn(x)
        expected = model(x)
    assert fn.compiled is not None and fn.compile_s > 0
    assert torch.allclose(out, expected, atol=1e-4)
    from pathlib import Path

    from vitcli import env

    cache = Path(env.use_compile_cache())
    assert cache == Path(env.vit_cache_dir()) / "inductor" and any(cache.iterdir())  # inductor's artefacts


def test_predict_reports_loader_and_model_throughput(tiny_vit_dir, make_images):
    paths = make_images(3)
    result = runner.invoke(app, ["predict", "--model", str(tiny_vit_dir), "--json", *map(str, paths)])
    assert result.exit_code == 0, result.stderr
    assert "3 images: model" in result.stderr and "loader" in result.stderr and "0 workers" in result.stderr


def test_benchmark_json_gives_the_plain_fp32_loops_beside_bf16(tiny_vit_dir):
    result = runner.invoke(
        app,
        [
            "benchmark",
            "--model",
            str(tiny_vit_dir),
            "--batch-size",
            "2",
            "--iters",
            "1",
            "--warmup-iters",
            "0",
            "--train",
            "--precision",
            "bf16",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["precision"] == "bf16"
    for key in (
        "timm_fp32_img_s",
        "speedup_vs_timm_fp32",
        "train_img_s",
        "timm_fp32_train_img_s",
        "train_speedup_vs_timm_fp32",
    ):
        assert out[key] > 0, key
    fp32 = runner.invoke(
        app,
        [
            "benchmark",
            "--model",
            str(tiny_vit_dir),
            "--batch-size",
            "2",
            "--iters",
            "1",
            "--warmup-iters",
            "0",
            "--precision",
            "fp32",
            "--json",
        ],
    )
    out = json.loads(fp32.stdout)
    assert out["timm_fp32_img_s"] == out["timm_img_s"]  # in fp32 the timm loop is the fp32 loop


def test_matmul_peak_is_measured():
    from vitcli.bench.ceiling import matmul_peak_tflops

    assert matmul_peak_tflops(torch.device("cpu"), torch.float32, n=64, min_seconds=0.01) > 0


def test_channels_last_where_measured_faster_for_convolutional_models(monkeypatch):
    from torch import nn

    from vitcli.accel import layout

    vit = make_tiny_vit(10)
    assert not layout.apply(vit, CPU)  # one convolution: never measured, never converted
    pool = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.AvgPool2d(3, 1, 1),
        nn.Conv2d(8, 8, 1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 5),
    ).eval()  # a PoolFormer-ish net
    pool.pretrained_cfg = {"architecture": "tiny_pool", "input_size": (3, 32, 32)}
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        expected = pool(x)
    real = layout.measure
    assert real(pool, CPU, (3, 32, 32), reps=1)["nchw_ms"] > 0
    monkeypatch.setattr(layout, "measure", lambda *a, **k: {"channels_last": True})
    assert layout.apply(pool, CPU) and layout.is_channels_last(pool)
    weight = next(p for p in pool.parameters() if p.dim() == 4)
    assert weight.is_contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        assert torch.allclose(pool(x), expected, atol=1e-5)
