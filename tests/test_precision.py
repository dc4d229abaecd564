"""Precision auto: bf16 autocast on a CPU with native bf16 where it is measured faster, fp32 elsewhere;
the classifier kept in fp32 under autocast; the guard on the real val images."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from tests.conftest import make_tiny_vit
from vitcli import accel
from vitcli.accel import kernels
from vitcli.accel import precision as precision_mod
from vitcli.accel.runtime import Runtime, resolve_precision, runtime
from vitcli.cli.app import app

runner = CliRunner()


def test_auto_is_fp32_without_native_bf16_and_measures_nothing(monkeypatch):
    monkeypatch.setattr(precision_mod, "native_bf16_flags", lambda: [])
    monkeypatch.setattr(precision_mod, "measure_bf16", lambda: pytest.fail("no timing without native bf16"))
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert resolve_precision("bf16", torch.device("cpu")) == "bf16"  # asked for: given


@pytest.mark.parametrize("speedup, expected", [(4.4, "bf16"), (1.2, "fp32")])
def test_auto_follows_the_recorded_measurement(monkeypatch, tmp_path, speedup, expected):
    monkeypatch.setenv("VIT_CACHE", str(tmp_path))
    monkeypatch.setattr(precision_mod, "native_bf16_flags", lambda: ["avx512_bf16"])
    calls = []
    monkeypatch.setattr(precision_mod, "measure_bf16", lambda: calls.append(1) or {"fp32_ms": 1.0, "speedup": speedup})
    assert resolve_precision("auto", torch.device("cpu")) == expected
    assert runtime("cpu", "auto").precision == expected and len(calls) == 1  # measured once
    (entry,) = json.loads((tmp_path / "measurements.json").read_text()).values()
    assert entry["name"] == "cpu-bf16" and entry["measured"]
    assert entry["verdict"]["bf16"] == (expected == "bf16") and entry["verdict"]["flags"] == ["avx512_bf16"]


def test_the_measurement_times_both_precisions():
    result = precision_mod.measure_bf16(rows=64, dim=32, reps=2)
    assert result["fp32_ms"] > 0 and result["bf16_ms"] > 0 and result["speedup"] > 0


def test_the_classifier_stays_fp32_under_autocast(monkeypatch):
    monkeypatch.setenv("VIT_KERNELS", "0")  # the head alone (the bf16 kernels: the next test)
    model = make_tiny_vit(10)
    keys = list(model.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert model(x).dtype == torch.bfloat16
        rt = Runtime(torch.device("cpu"), "bf16")
        assert accel.prepare(model, rt).head_fp32 and accel.prepare(model, rt).head_fp32  # once, then kept
        features = model.forward_head(model.forward_features(x), pre_logits=True)
        logits = model(x)
    assert isinstance(model.head, kernels.FullPrecisionLinear) and list(model.state_dict()) == keys
    assert logits.dtype == torch.float32
    with torch.inference_mode():
        expected = torch.nn.functional.linear(features.float(), model.head.weight, model.head.bias)
    assert torch.equal(logits, expected)


@pytest.mark.skipif(not kernels.works_here("bf16"), reason="oneDNN has no bf16 inner product on this CPU")
def test_bf16_kernels_fuse_bias_and_gelu_and_keep_the_parameters(monkeypatch):
    monkeypatch.setenv("VIT_KERNELS", "1")
    model = make_tiny_vit(10)
    keys = list(model.state_dict())
    x = torch.randn(3, 3, 32, 32)
    rt = Runtime(torch.device("cpu"), "bf16")
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = model(x).float()
        done = accel.prepare(model, rt)  # the fp32 head; qkv, proj, fc1, fc2 as bf16 kernels; math attention
        assert (done.linears, done.attention, done.head_fp32) == ("onednn bf16", "math", True)
        out = model(x)
    fc1 = model.blocks[0].mlp.fc1
    assert isinstance(fc1, kernels.FusedLinear) and fc1.activation == "gelu" and fc1.weight_lp.dtype == torch.bfloat16
    assert list(model.state_dict()) == keys and out.dtype == torch.float32
    assert torch.allclose(out, expected, atol=0.05)  # bf16 rounding apart
    # timm's own switch: the attention modules compute without the flash kernel
    monkeypatch.setattr(
        torch.nn.functional,
        "scaled_dot_product_attention",
        lambda *a, **k: pytest.fail("the flash kernel ran in bf16 inference"),
    )
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(model(x), out)


def test_eval_records_the_precision_and_how_to_get_fp32(tiny_vit_dir, make_images, tmp_path):
    paths = make_images(4, folder=tmp_path / "val")
    labels = tmp_path / "labels.txt"
    labels.write_text("".join(f"{p.name} {i}\n" for i, p in enumerate(paths)))
    for precision in ("bf16", "fp32"):
        result = runner.invoke(
            app,
            [
                "eval",
                "--model",
                str(tiny_vit_dir),
                "--data",
                str(tmp_path / "val"),
                "--labels",
                str(labels),
                "--json",
                "--precision",
                precision,
            ],
        )
        assert result.exit_code == 0, result.stderr
        summary = json.loads(result.stdout)
        assert summary["precision"] == precision and f"torch cpu {precision}" in result.stderr
        assert summary["backend"] == "torch"
        assert ("--precision fp32" in summary.get("precision_note", "")) == (precision == "bf16")


@pytest.mark.slow
def test_auto_keeps_the_answers_on_the_real_val_images(assets, monkeypatch):
    """The guard: where auto picks bf16, top-1 agrees with fp32 on at least 99 of the 100 val images."""
    if runtime("cpu", "auto").precision == "fp32":
        pytest.skip("auto is fp32 on this CPU (no native bf16, or bf16 not measured faster)")
    monkeypatch.setenv("VIT_EXPORT", "0")
    model = str(assets / "models" / "vit_tiny_patch16_224.augreg_in21k_ft_in1k")
    images = assets / "images" / "imagenet-val-100" / "images"
    top1 = {}
    for precision in ("auto", "fp32"):
        result = runner.invoke(
            app,
            [
                "predict",
                "--model",
                model,
                "--json",
                "--device",
                "cpu",
                "-k",
                "1",
                "--precision",
                precision,
                str(images),
            ],
        )
        assert result.exit_code == 0, result.stderr
        assert ("cpu bf16" if precision == "auto" else "cpu fp32") in result.stderr  # the header says which
        top1[precision] = {
            Path(r["path"]).name: r["predictions"][0]["index"] for r in map(json.loads, result.stdout.splitlines())
        }
    assert len(top1["auto"]) == len(top1["fp32"]) == 100
    agree = sum(top1["auto"][name] == top1["fp32"][name] for name in top1["fp32"])
    assert agree >= 99, f"bf16 auto agrees with fp32 on {agree}/100 top-1 labels"
