"""Attention in bf16 on CPU: two bf16 matrix multiplies and a softmax instead of the fused kernel, for
inference and for training, where measured faster.

timm's `Attention` calls `F.scaled_dot_product_attention`, which on a CPU runs the flash-attention
kernel. In bf16 that kernel is no faster than in fp32 here (ViT shapes: 197 tokens, head dim 64), and
once the linears run in bf16 it becomes the largest part of a ViT: 40 % of ViT-Ti's forward pass on
the 2-core dev machine (AMD EPYC, avx512_bf16). Written out as q k^T, softmax and @ v in bf16, the
two products run on oneDNN's bf16 GEMM: the attention alone took half the time (ViT-S shapes, batch
32: 7.8 against 15.3 ms per layer), whole forward passes ran 1.34x (ViT-Ti) and 1.19x (ViT-S) faster,
and on the 100 real val images top-1 still agreed with fp32 on 99 (max score difference 0.038
instead of 0.018: the attention weights are rounded to bf16).

`swap(model)` turns each timm `Attention` into `MathAttention` (a subclass: same submodules, same
state_dict); it computes the bf16 way only for bf16 input (or any input under bf16 autocast) without
gradients, masks or gates, and is timm's own forward otherwise. `faster_here()` times one ViT-S
attention both ways once per CPU, torch and thread count (kernels.json in vitcli's cache);
VIT_KERNELS=0 turns this off.

Training under bf16 autocast has the same problem, worse: the flash kernel's backward is slower still
(ViT-S, batch 32, one autocast training step on the dev machine: flash attention forward and backward
took 22 % of the step at a sixth of the GEMMs' GFLOP/s). `for_training(model)` switches timm's own
attention modules to timm's non-fused path (`fused_attn = False`: q k^T, softmax, @ v, with autograd
through bf16 GEMMs): the whole step ran 1.2x faster (7.6 -> 9.1 img/s), gradients equal to the flash
kernel's up to bf16 rounding. `training_faster_here()` decides it from its own one-time measurement
(one ViT-S attention forward and backward both ways).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vitcli.devices import best_ms

_CLASS: list = []  # MathAttention, made on first use (timm is imported only by then)


def math_attention_class():
    """timm's Attention with, for bf16 inference, softmax(q k^T * scale) @ v as two bf16 GEMMs."""
    if _CLASS:
        return _CLASS[0]
    from timm.layers import Attention

    class MathAttention(Attention):
        def forward(self, x, attn_mask=None, is_causal: bool = False):
            if (not _bf16(x) or attn_mask is not None or is_causal or self.training
                    or torch.is_grad_enabled() or getattr(self, "gate", None) is not None):
                return super().forward(x, attn_mask=attn_mask, is_causal=is_causal)
            B, N, _ = x.shape  # (B, N, C)
            qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
            q, k, v = qkv.unbind(0)  # (B, heads, N, head_dim) each
            q, k = self.q_norm(q), self.k_norm(k)
            with torch.autocast(x.device.type, enabled=False):  # autocast would run the softmax in fp32
                attn = (q.bfloat16() * self.scale) @ k.bfloat16().transpose(-2, -1)  # (B, heads, N, N)
                x = attn.softmax(dim=-1) @ v.bfloat16()
            x = x.transpose(1, 2).reshape(B, N, -1)
            return self.proj_drop(self.proj(self.norm(x)))

    _CLASS.append(MathAttention)
    return MathAttention


def _bf16(x) -> bool:
    """bf16 input, or fp32 input under bf16 autocast: a ViT's residual stream stays fp32 under autocast
    (fp32 position embeddings + bf16 patches), so the LayerNorm before each attention returns fp32."""
    if x.dtype == torch.bfloat16:
        return True
    kind = x.device.type
    return x.dtype == torch.float32 and torch.is_autocast_enabled(kind) and torch.get_autocast_dtype(kind) == torch.bfloat16


def swap(model) -> int:
    """timm `Attention` modules -> MathAttention (a subclass: the same submodules and state_dict), in
    place; how many."""
    from timm.layers import Attention

    cls = math_attention_class()
    n = 0
    for module in model.modules():
        if type(module) is Attention:
            module.__class__ = cls
            n += 1
    return n


def is_swapped(model) -> bool:
    return bool(_CLASS) and any(type(m) is _CLASS[0] for m in model.modules())


def wanted() -> bool:
    """VIT_KERNELS=1, or measured faster here (timm-free: the fast-start lookup asks it too)."""
    from vitcli import env

    setting = env.kernels()
    return setting != "off" and (setting == "on" or faster_here())


def measure(batch: int = 8, heads: int = 6, tokens: int = 197, head_dim: int = 64, reps: int = 5) -> dict:
    """One ViT-S attention in bf16 both ways (the flash kernel, the two GEMMs), alternating; best of `reps`."""
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(batch, heads, tokens, head_dim, generator=gen).bfloat16() for _ in range(3))
    scale = head_dim ** -0.5

    def flash():
        return F.scaled_dot_product_attention(q, k, v)

    def gemms():
        return ((q * scale) @ k.transpose(-2, -1)).softmax(dim=-1) @ v

    with torch.inference_mode():
        close = torch.allclose(flash().float(), gemms().float(), atol=5e-2)
        best = best_ms({"flash": flash, "gemms": gemms}, reps)
    flash_ms, gemms_ms = best["flash"], best["gemms"]
    return {"flash_ms": round(flash_ms, 3), "gemms_ms": round(gemms_ms, 3),
            "gemms": bool(close and gemms_ms < 0.9 * flash_ms)}


def faster_here() -> bool:
    from vitcli.devices import cached_verdict

    def verdict() -> dict:
        try:
            return measure()
        except (RuntimeError, TypeError):
            return {"error": True, "gemms": False}

    return bool(cached_verdict("kernels.json", verdict, lambda v: "gemms" in v, "|bf16-attention").get("gemms"))


def _timm_attention(model, fused: bool) -> list:
    """The timm modules of `model` (attention, each with a `fused_attn` flag) whose flag is `fused`."""
    return [m for m in model.modules()
            if getattr(m, "fused_attn", None) is fused and type(m).__module__.startswith("timm.")]


def for_training(model) -> int:
    """timm's attention modules of `model` -> timm's own non-fused (math) path, in place; how many. The
    same modules and state_dict: only the `fused_attn` flag each timm attention module carries changes."""
    modules = _timm_attention(model, True)
    for module in modules:
        module.fused_attn = False
    return len(modules)


def is_unfused(model) -> bool:
    return bool(_timm_attention(model, False))


def training_measure(batch: int = 8, heads: int = 6, tokens: int = 197, head_dim: int = 64, reps: int = 4) -> dict:
    """One ViT-S attention, forward and backward in bf16, both ways (the flash kernel, the math path);
    best of `reps`, alternating."""
    gen = torch.Generator().manual_seed(0)
    leaves = [torch.randn(batch, heads, tokens, head_dim, generator=gen).bfloat16().requires_grad_()
              for _ in range(3)]
    grad_out = torch.randn(batch, heads, tokens, head_dim, generator=gen).bfloat16()
    scale = head_dim ** -0.5

    def flash(q, k, v):
        return F.scaled_dot_product_attention(q, k, v)

    def math(q, k, v):
        return ((q * scale) @ k.transpose(-2, -1)).softmax(dim=-1) @ v

    def run(fn):
        for leaf in leaves:
            leaf.grad = None
        fn(*leaves).backward(grad_out)
        return leaves[0].grad.float()

    close = torch.allclose(run(flash), run(math), atol=5e-2, rtol=5e-2)
    best = best_ms({"flash": lambda: run(flash), "math": lambda: run(math)}, reps)
    flash_ms, math_ms = best["flash"], best["math"]
    return {"flash_ms": round(flash_ms, 3), "math_ms": round(math_ms, 3),
            "math": bool(close and math_ms < 0.9 * flash_ms)}


def training_faster_here() -> bool:
    """The cached verdict (kernels.json), measured (about 0.2 s) the first time; VIT_KERNELS as above."""
    from vitcli import env
    from vitcli.devices import cached_verdict

    setting = env.kernels()
    if setting != "auto":
        return setting == "on"

    def verdict() -> dict:
        try:
            return training_measure()
        except (RuntimeError, TypeError):
            return {"error": True, "math": False}

    return bool(cached_verdict("kernels.json", verdict, lambda v: "math" in v, "|bf16-attention-train").get("math"))
