"""CPU inference kernels (vitcli/kernels.py): what is swapped, that outputs stay the model's, that
training never runs through them, and the measured verdict."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from tests.conftest import make_tiny_vit
from vitcli.accel import kernels

pytestmark = pytest.mark.skipif(not kernels.available(), reason="this torch build has no oneDNN")


def test_fuse_swaps_every_linear_folds_gelu_and_keeps_the_parameters():
    model = make_tiny_vit(10)
    reference = make_tiny_vit(10)
    keys = list(model.state_dict())
    linears = sum(type(m) is nn.Linear for m in model.modules())
    assert kernels.fuse(model) == linears and kernels.is_fused(model)
    assert not any(type(m) is nn.Linear for m in model.modules())
    assert list(model.state_dict()) == keys  # same names: checkpoints, digests and hooks see no change
    mlp = model.blocks[0].mlp
    assert mlp.fc1.activation == "gelu" and isinstance(mlp.act, nn.Identity) and mlp.fc2.activation == "none"
    assert model.blocks[0].attn.qkv.activation == "none" and model.head.activation == "none"
    x = torch.randn(3, 3, 32, 32)
    with torch.inference_mode():
        assert torch.allclose(model(x), reference(x), rtol=1e-5, atol=1e-5)


def test_with_gradients_a_fused_model_trains_like_the_eager_model():
    model, reference = make_tiny_vit(4), make_tiny_vit(4)
    kernels.fuse(model)
    x = torch.randn(2, 3, 32, 32)
    out, ref = model(x), reference(x)  # grad enabled: the autograd Function, GELU separate
    assert out.grad_fn is not None and torch.allclose(out, ref, rtol=1e-5, atol=1e-5)
    out.square().sum().backward()
    ref.square().sum().backward()
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        assert p.grad is not None and torch.allclose(p.grad, q.grad, rtol=1e-4, atol=1e-6), name


def test_frozen_layers_still_pass_gradients_to_the_input():
    linear = nn.Linear(6, 5).requires_grad_(False)
    fused = kernels.FusedLinear(linear)
    x = torch.randn(4, 3, 6, requires_grad=True)
    fused(x).sum().backward()
    x2 = x.detach().clone().requires_grad_(True)
    linear(x2).sum().backward()
    assert linear.weight.grad is None and torch.allclose(x.grad, x2.grad, rtol=1e-5, atol=1e-6)


def test_non_gelu_mlp_is_not_folded():
    from timm.layers import Mlp

    mlp = Mlp(8, 16, act_layer=nn.ReLU)
    kernels.fuse(mlp)
    assert mlp.fc1.activation == "none" and isinstance(mlp.act, nn.ReLU)
    tanh = Mlp(8, 16, act_layer=lambda: nn.GELU(approximate="tanh"))
    kernels.fuse(tanh)
    assert tanh.fc1.activation == "none" and isinstance(tanh.act, nn.GELU)


def test_the_verdict_is_measured_once_and_cached(monkeypatch, tmp_path):
    monkeypatch.setenv("VIT_CACHE", str(tmp_path))
    calls = []
    real = kernels.measure
    monkeypatch.setattr(kernels, "measure", lambda **kw: calls.append(1) or real(reps=2, **kw))
    first = kernels.faster_here()
    assert kernels.faster_here() == first and len(calls) == 1
    (entry,) = json.loads((tmp_path / "measurements.json").read_text()).values()
    verdict = entry["verdict"]
    assert entry["name"] == "onednn-linear-fp32" and entry["measured"]  # what, and when: vit info shows it
    assert verdict["fused"] == first and verdict["allclose"] is True
    assert first == (verdict["fused_ms"] < 0.97 * verdict["eager_ms"])


def test_switches(monkeypatch):
    from vitcli import accel
    from vitcli.accel.runtime import Runtime

    cpu = Runtime(torch.device("cpu"), "fp32")
    monkeypatch.setenv("VIT_KERNELS", "0")
    assert accel.prepare(make_tiny_vit(4), cpu).linears == "eager"
    monkeypatch.setenv("VIT_KERNELS", "1")
    monkeypatch.setattr(kernels, "faster_here", lambda *a: pytest.fail("VIT_KERNELS=1 must not measure"))
    assert accel.prepare(make_tiny_vit(4), cpu).linears == "onednn fp32"


def test_bf16_training_kernels_are_timm_math_attention_with_the_flash_kernels_gradients(monkeypatch):
    from vitcli import accel
    from vitcli.accel import attention
    from vitcli.accel.runtime import Runtime

    bf16 = Runtime(torch.device("cpu"), "bf16")
    model, reference = make_tiny_vit(4), make_tiny_vit(4)
    keys = list(model.state_dict())
    monkeypatch.setenv("VIT_KERNELS", "1")

    def for_training(m, rt, recorded=None):
        return accel.prepare(m, rt, "training", recorded).training_kernels

    assert for_training(model, bf16) == "math-attention" and attention.is_math(model)
    assert all(not b.attn.fused_attn for b in model.blocks) and list(model.state_dict()) == keys
    assert for_training(reference, bf16, recorded="eager") == "eager"  # a resumed run keeps its own
    x = torch.randn(2, 3, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, ref = model(x), reference(x)
    out.float().square().sum().backward()
    ref.float().square().sum().backward()
    assert torch.allclose(out.float(), ref.float(), rtol=5e-2, atol=5e-2)
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=0.1, atol=5e-2 * q.grad.abs().max().item()), name
    monkeypatch.setenv("VIT_KERNELS", "0")
    assert for_training(make_tiny_vit(4), bf16) == "eager"
    assert for_training(make_tiny_vit(4), bf16, recorded="math-attention") == "math-attention"


def test_the_training_attention_verdict_is_measured_once_and_cached(monkeypatch, tmp_path):
    from vitcli.accel import attention

    monkeypatch.setenv("VIT_CACHE", str(tmp_path))
    calls = []
    real = attention.measure
    monkeypatch.setattr(attention, "measure", lambda training: calls.append(1) or real(training, batch=2, reps=2))
    first = attention.math_faster_here(training=True)
    assert attention.math_faster_here(training=True) == first and len(calls) == 1
    (entry,) = json.loads((tmp_path / "measurements.json").read_text()).values()
    verdict = entry["verdict"]
    assert verdict["math"] == first and first == (verdict["math_ms"] < 0.9 * verdict["flash_ms"])
