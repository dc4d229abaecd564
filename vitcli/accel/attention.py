"""Attention in bf16 on CPU: timm's own non-fused path instead of the flash kernel, where measured faster.

timm's `Attention` modules carry a public switch, `fused_attn`: True calls
`F.scaled_dot_product_attention` (on a CPU, the flash-attention kernel), False computes
softmax(q k^T * scale) @ v as plain matrix multiplies. Under bf16 autocast the plain path runs its two
products on oneDNN's bf16 GEMM, while the flash kernel is no faster in bf16 than in fp32 on the CPUs
measured (ViT shapes: 197 tokens, head dim 64) and its backward is slower still (figures:
docs/info.md). So on a CPU in bf16, `use_math(model)` turns the switch off on every timm attention module
where a one-time measurement (one ViT-S attention, forward for inference, forward and backward for
training; recorded in vitcli.accel.cache) says the plain path is faster here. The modules, parameters
and state_dict are unchanged. VIT_KERNELS=0 turns this off, VIT_KERNELS=1 skips the measurement.
"""

from __future__ import annotations

from vitcli.accel.cache import best_ms


def _timm_attention(model, fused: bool) -> list:
    """The timm modules of `model` (attention, each with a `fused_attn` switch) whose switch is `fused`."""
    return [
        m for m in model.modules() if getattr(m, "fused_attn", None) is fused and type(m).__module__.startswith("timm.")
    ]


def use_math(model) -> int:
    """timm's attention modules of `model` -> timm's own non-fused (math) path, in place; how many."""
    modules = _timm_attention(model, True)
    for module in modules:
        module.fused_attn = False
    return len(modules)


def is_math(model) -> bool:
    return bool(_timm_attention(model, False))


def measure(
    training: bool, batch: int = 8, heads: int = 6, tokens: int = 197, head_dim: int = 64, reps: int = 4
) -> dict:
    """One ViT-S attention in bf16 both ways (the flash kernel, the math path), forward (and backward
    when `training`), alternating; best of `reps`."""
    import torch
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(0)
    leaves = [
        torch.randn(batch, heads, tokens, head_dim, generator=gen).bfloat16().requires_grad_(training) for _ in range(3)
    ]
    grad_out = torch.randn(batch, heads, tokens, head_dim, generator=gen).bfloat16()
    scale = head_dim**-0.5

    def flash(q, k, v):
        return F.scaled_dot_product_attention(q, k, v)

    def math(q, k, v):
        return ((q * scale) @ k.transpose(-2, -1)).softmax(dim=-1) @ v  # (B, heads, N, head_dim)

    def run(fn):
        if not training:
            with torch.inference_mode():
                return fn(*leaves).float()
        for leaf in leaves:
            leaf.grad = None
        fn(*leaves).backward(grad_out)
        return leaves[0].grad.float()

    close = torch.allclose(run(flash), run(math), atol=5e-2, rtol=5e-2)
    best = best_ms({"flash": lambda: run(flash), "math": lambda: run(math)}, reps)
    return {
        "flash_ms": round(best["flash"], 3),
        "math_ms": round(best["math"], 3),
        "math": bool(close and best["math"] < 0.9 * best["flash"]),
    }


def math_faster_here(training: bool) -> bool:
    """The recorded verdict (vitcli.accel.cache), measured (about 0.2 s) the first time; VIT_KERNELS as above."""
    from vitcli import env
    from vitcli.accel.cache import measured

    setting = env.kernels()
    if setting != "auto":
        return setting == "on"

    def verdict() -> dict:
        try:
            return measure(training)
        except (RuntimeError, TypeError):
            return {"error": True, "math": False}

    name = "bf16-math-attention-" + ("training" if training else "inference")
    return bool(measured(name, verdict, lambda v: "math" in v).get("math"))
