"""Precision `auto`: bf16 autocast where the hardware runs bf16 natively and it pays, else fp32.

On CUDA: bf16 (tensor cores). On MPS: fp32. On a CPU: bf16 autocast where the CPU has native bf16 (AMX,
avx512_bf16, Arm's bf16) *and* a ViT-shaped bf16 matrix multiply is measured here at least 1.5x as fast
as fp32, else fp32. Without native bf16 the bf16 path is emulated and runs 6-7x slower, so it is never
timed there: the answer is fp32 from the flags alone. The measurement takes about 0.1 s once and is
kept in vitcli's one measurement cache (vitcli.accel.cache), so every later run chooses the same.
Autocast keeps the weights in fp32 and runs LayerNorm, softmax and the loss in fp32; `--precision fp32`
gives exact fp32 numbers.
"""

from __future__ import annotations

from vitcli.accel.cache import best_ms, cpuinfo, measured

BF16_FLAGS = ("amx_bf16", "avx512_bf16", "bf16")  # x86 AMX, x86 AVX-512 BF16, Arm (Features: bf16)
BF16_MIN_SPEEDUP = 1.5  # the matmul gain that survives the casts and the fp32 LayerNorm / softmax


def native_bf16_flags() -> list[str]:
    """The CPU's native bf16 instruction sets (empty: bf16 would be emulated, much slower)."""
    flags = cpuinfo()[1]
    return [f for f in BF16_FLAGS if f in flags]


def measure_bf16(rows: int = 8 * 197, dim: int = 384, reps: int = 5) -> dict:
    """Time a ViT-S fc1 (batch 8: (1576, 384) @ (384, 1536)) in fp32 and in bf16, alternating; best of
    `reps` each."""
    import torch
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(rows, dim, generator=gen)
    w = torch.randn(4 * dim, dim, generator=gen)
    operands = {"fp32": (x, w), "bf16": (x.bfloat16(), w.bfloat16())}
    with torch.inference_mode():
        for a, b in operands.values():
            F.linear(a, b)  # warm-up (oneDNN's first call prepares its kernel)
        best = best_ms({name: (lambda a=a, b=b: F.linear(a, b)) for name, (a, b) in operands.items()}, reps)
    fp32_ms, bf16_ms = best["fp32"], best["bf16"]
    return {"fp32_ms": round(fp32_ms, 3), "bf16_ms": round(bf16_ms, 3), "speedup": round(fp32_ms / bf16_ms, 2)}


def cpu_bf16_verdict() -> dict:
    """Whether bf16 autocast is the fast precision on this CPU: {"bf16": bool, "flags": [...], and the
    timings when measured}. Measured only on a CPU with native bf16."""
    flags = native_bf16_flags()
    if not flags:
        return {"bf16": False, "flags": [], "why": "no native bf16 instructions (bf16 would be emulated)"}

    def measure() -> dict:
        try:
            result = measure_bf16()
        except (RuntimeError, TypeError):  # no bf16 matmul in this build: fp32
            result = {"error": True, "speedup": 0.0}
        return {**result, "flags": flags, "bf16": bool(result["speedup"] >= BF16_MIN_SPEEDUP)}

    return measured("cpu-bf16", measure, lambda v: "bf16" in v)


def auto(device) -> tuple[str, str]:
    """(precision, why) for `--precision auto` on `device`."""
    if device.type == "cuda":
        return "bf16", "CUDA: bf16 autocast on tensor cores"
    if device.type == "cpu":
        verdict = cpu_bf16_verdict()
        if verdict.get("bf16"):
            return (
                "bf16",
                f"native bf16 ({', '.join(verdict['flags'])}), bf16 matmul measured {verdict['speedup']}x fp32",
            )
        if verdict.get("flags"):
            return "fp32", f"bf16 matmul measured only {verdict.get('speedup')}x fp32 (< {BF16_MIN_SPEEDUP}x)"
        return "fp32", verdict["why"]
    return "fp32", f"{device.type}: fp32 unless asked"
