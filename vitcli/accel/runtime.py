"""The runtime a command runs on: the device (`auto`: cuda, then mps, then cpu) and the precision
(`auto`: vitcli.accel.precision), resolved from the flags and the machine, never from what a cache file
happens to hold beyond the recorded measurements `vit info` shows.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass

from vitcli.errors import UsageError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class Runtime:
    device: object  # torch.device
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
        """What ran, as every result names it: backend, device, precision."""
        return f"torch {self.device} {self.precision}"


def canonical(spec: str | None) -> str:
    """A device spec as torch names it: `0` or `1` (a GPU index, as ultralytics takes it) is cuda:N."""
    spec = (spec or "auto").strip().lower()
    return f"cuda:{spec}" if spec.isdigit() else spec


def check_device(spec: str | None) -> str:
    """The canonical spec of a device vitcli runs on (auto, cpu, mps, cuda, cuda:N), without importing
    torch, so that `--dry-run` and a config file are refused as early as a real run; else a UsageError."""
    spec = canonical(spec)
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", spec):
        raise UsageError(f"unknown device {spec!r}", "use auto, cpu, cuda, cuda:N (or just N) or mps")
    return spec


def resolve_device(spec: str = "auto"):
    import torch

    spec = check_device(spec)
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
            raise UsageError("CUDA was asked for but no CUDA device is available", "use --device auto or --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(
                f"{spec} does not exist: {torch.cuda.device_count()} CUDA device(s) visible",
                "pick an index below the device count",
            )
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
        from vitcli.accel import precision

        return precision.auto(device)[0]
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
