"""Device and precision choice, shared by every command.

auto device: cuda, then mps, then cpu. auto precision: bf16 autocast on CUDA (tensor cores); on a CPU,
bf16 autocast where the CPU has native bf16 (AMX, avx512_bf16, Arm's bf16) *and* a ViT-shaped bf16
matrix multiply is measured here at least 1.5x as fast as fp32, else fp32 (without native bf16 the
bf16 path runs 6-7x slower: measured on a 2-core AVX-512 machine without it); fp32 on MPS unless asked.
The CPU measurement (`cpu_bf16_verdict`) takes about 0.1 s once and is cached in vitcli's cache
(precision.json) per CPU, torch version and thread count, like vitcli.inference.kernels' verdict.
Autocast keeps the weights in fp32 (training updates fp32 master weights) and runs LayerNorm, softmax
and the loss in fp32; `--precision fp32` gives exact fp32 numbers.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from vitcli.errors import UsageError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class Runtime:
    device: "object"  # torch.device
    precision: str  # fp32 | bf16 | fp16

    @property
    def autocast_dtype(self):
        import torch

        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)

    def autocast(self):
        """Autocast context for the forward pass (a no-op for fp32)."""
        import torch

        dtype = self.autocast_dtype
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def describe(self) -> str:
        return f"{self.device} {self.precision}"


def canonical(spec: str | None) -> str:
    """A device spec as torch names it: `0` or `1` (a GPU index, as ultralytics takes it) is cuda:N."""
    spec = (spec or "auto").strip().lower()
    return f"cuda:{spec}" if spec.isdigit() else spec


def resolve_device(spec: str = "auto"):
    import torch

    spec = canonical(spec)
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError):
        raise UsageError(f"unknown device {spec!r}", "use auto, cpu, cuda, cuda:N (or just N) or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError("CUDA was asked for but no CUDA device is available",
                             "use --device auto or --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"{spec} does not exist: {torch.cuda.device_count()} CUDA device(s) visible",
                             "pick an index below the device count")
    elif device.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise UsageError("MPS was asked for but is not available", "use --device auto or --device cpu")
    elif device.type != "cpu":
        raise UsageError(f"unsupported device {spec!r}", "use auto, cpu, cuda, cuda:N (or just N) or mps")
    return device


def resolve_precision(spec: str, device) -> str:
    spec = (spec or "auto").strip().lower()
    if spec not in PRECISIONS:
        raise UsageError(f"unknown precision {spec!r}", "use auto, fp32, bf16 or fp16")
    if spec == "auto":
        if device.type == "cuda":
            return "bf16"
        if device.type == "cpu" and cpu_bf16_verdict().get("bf16"):
            return "bf16"
        return "fp32"
    return spec


def runtime(device: str = "auto", precision: str = "auto") -> Runtime:
    dev = resolve_device(device)
    return Runtime(dev, resolve_precision(precision, dev))


def fused_optimizer_ok(device) -> bool:
    """torch's fused (one-kernel) SGD / Adam(W) step: CUDA, and CPU from torch 2.4 (MPS: not here)."""
    import torch

    if device.type == "cuda":
        return True
    if device.type != "cpu":
        return False
    try:
        p = torch.nn.Parameter(torch.zeros(1))
        p.grad = torch.zeros(1)
        torch.optim.SGD([p], lr=0.1, momentum=0.9, fused=True).step()
        return True
    except (RuntimeError, TypeError, ValueError):
        return False


# ----------------------------------------------------------------------------------------------
# The CPU's native bf16, confirmed by a one-time measurement

BF16_FLAGS = ("amx_bf16", "avx512_bf16", "bf16")  # x86 AMX, x86 AVX-512 BF16, Arm (Features: bf16)
BF16_MIN_SPEEDUP = 1.5  # the matmul gain that survives the casts and the fp32 LayerNorm / softmax


def _cpuinfo() -> tuple[str, set]:
    """(model name, flags) from /proc/cpuinfo; ('', set()) where there is none."""
    name, flags = "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip().lower()
            if key == "model name" and not name:
                name = value.strip()
            elif key in ("flags", "features") and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return name, flags


def cpu_name() -> str:
    import platform

    return _cpuinfo()[0] or platform.processor() or platform.machine()


def native_bf16_flags() -> list[str]:
    """The CPU's native bf16 instruction sets (empty: bf16 would be emulated, much slower)."""
    flags = _cpuinfo()[1]
    return [f for f in BF16_FLAGS if f in flags]


def best_ms(fns: dict, reps: int) -> dict[str, float]:
    """Each function of `fns` (name -> no-argument callable) timed `reps` times, alternating so that a
    drifting load hits all alike; the best time of each, in ms. Warm-ups are the caller's."""
    times = {name: float("inf") for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name] = min(times[name], time.perf_counter() - start)
    return {name: 1000 * t for name, t in times.items()}


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


def machine_key() -> str:
    """What a CPU measurement depends on: the CPU, the torch version and the thread count."""
    import torch

    return f"{cpu_name()}|torch {torch.__version__}|{torch.get_num_threads()} threads"


def load_verdicts(filename: str) -> dict:
    """A file of vitcli's measurements (key -> dict) from vitcli's cache; {} when absent or unreadable."""
    from vitcli import env

    try:
        verdicts = json.loads((Path(env.vit_cache_dir()) / filename).read_text())
    except (OSError, ValueError):
        return {}
    return verdicts if isinstance(verdicts, dict) else {}


def save_verdict(filename: str, key: str, verdict: dict) -> None:
    """Add or replace one measurement (a read-only cache is not an error: it is measured again)."""
    from vitcli import env
    from vitcli.output import atomic_write

    verdicts = load_verdicts(filename)
    verdicts[key] = verdict
    try:
        atomic_write(Path(env.vit_cache_dir()) / filename, json.dumps(verdicts, indent=1))
    except OSError:
        pass


def cached_verdict(filename: str, measure: Callable[[], dict], valid: Callable[[dict], bool],
                   suffix: str = "") -> dict:
    """The one-time measurement of vitcli's machine-dependent choices: `measure()` once per
    `machine_key()` (+ `suffix`), its dict kept in vitcli's cache (`filename`, one entry per key), read
    back after."""
    key = machine_key() + suffix
    verdict = load_verdicts(filename).get(key)
    if not isinstance(verdict, dict) or not valid(verdict):
        verdict = measure()
        save_verdict(filename, key, verdict)
    return verdict


def cpu_bf16_verdict() -> dict:
    """Whether bf16 autocast is the fast precision on this CPU: {"bf16": bool, "flags": [...], and the
    timings when measured}. Cached per machine_key(); measured only on a CPU with native bf16
    (elsewhere the answer is fp32 without timing an emulation)."""
    flags = native_bf16_flags()
    if not flags:
        return {"bf16": False, "flags": []}

    def measure() -> dict:
        try:
            result = measure_bf16()
        except (RuntimeError, TypeError):  # no bf16 matmul in this build: fp32
            result = {"error": True, "speedup": 0.0}
        return {**result, "flags": flags, "bf16": bool(result["speedup"] >= BF16_MIN_SPEEDUP)}

    return cached_verdict("precision.json", measure, lambda v: "bf16" in v)
