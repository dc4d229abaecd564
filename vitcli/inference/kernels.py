"""CPU inference kernels: every nn.Linear as one oneDNN matmul, with the bias and timm's Mlp GELU fused.

On a CPU in fp32, PyTorch runs `nn.Linear` as MKL's sgemm after copying the bias into the output
(aten::addmm: the copy alone was 6 % of a ViT-S forward pass here), then GELU as another pass over the
(B, N, 4C) hidden activations (7 %). oneDNN's matmul takes the bias and the GELU as post-ops and, on the
2-core AVX-512 dev machine, also multiplies faster than MKL (ViT shapes: 187-223 GFLOP/s against
167-198). Measured there, batch 32, fp32, 2 threads: ViT-Ti 53 -> 60 img/s, ViT-S 16.4 -> 19.1,
ViT-B 4.5 -> 5.1; the logits differ from the eager model's by rounding only (max |diff| 4e-6).

`fuse(model)` swaps the modules in place (the parameters are the same tensors under the same names, so
state_dict and hooks on other modules are unchanged). With gradients enabled (vit
finetune / train on CPU) a FusedLinear runs an autograd Function: oneDNN for the forward matmul and for
the input gradient, torch's mm for the weight gradient, GELU as its own op (its backward needs the
pre-activation): ViT-Ti training steps 5-9 % faster here, gradients equal to eager's up to rounding.

Used only where it is measured faster on this machine: `faster_here()` times one ViT-shaped fc1 both
ways once per (CPU, torch version, thread count) and caches the verdict in vitcli's cache. On CPUs
without AVX-512 oneDNN's fp32 GEMM may lose to MKL; then nothing is swapped. VIT_KERNELS=0 turns this
off, VIT_KERNELS=1 skips the measurement.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

class FusedLinear(nn.Module):
    """y = act(x @ W.T + b) in one oneDNN call (inference); the same parameters as the nn.Linear it replaces."""

    def __init__(self, linear: nn.Linear, activation: str = "none"):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = linear.weight
        self.bias = linear.bias
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x2 = x.reshape(-1, self.in_features)  # (..., in) -> (rows, in)
        if torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in self._params())):
            y = _TrainableLinear.apply(x2, self.weight, self.bias)  # training: GELU stays a separate op
            if self.activation == "gelu":
                y = F.gelu(y)
        else:
            y = torch.ops.mkldnn._linear_pointwise(x2, self.weight, self.bias, self.activation, [], "none")
        return y.view(*x.shape[:-1], self.out_features)  # (rows, out) -> (..., out)

    def _params(self):
        return (self.weight,) if self.bias is None else (self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, activation={self.activation}"


class _TrainableLinear(torch.autograd.Function):
    """x @ W.T + b with oneDNN forward and oneDNN grad-input; grad-weight stays torch's mm (MKL), which
    reads the transposed activations in place where oneDNN would need copies of them."""

    @staticmethod
    def forward(ctx, x, weight, bias):  # (rows, in), (out, in), (out,) -> (rows, out)
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y):  # (rows, out)
        x, weight = ctx.saved_tensors
        grad_y = grad_y.contiguous()
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:  # grad_y @ W = linear(grad_y, W.T)
            grad_x = torch.ops.mkldnn._linear_pointwise(grad_y, weight.t().contiguous(), None, "none", [], "")
        if ctx.needs_input_grad[1]:
            grad_w = grad_y.t().mm(x)  # (out, in)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad_y.sum(0)
        return grad_x, grad_w, grad_b


def _is_exact_gelu(module: nn.Module) -> bool:
    if isinstance(module, nn.GELU):
        return module.approximate == "none"
    return type(module).__name__ == "GELU" and type(module).__module__.startswith("timm.")  # F.gelu, exact


def fuse(model: nn.Module) -> int:
    """Swap every fp32 CPU nn.Linear of `model` for a FusedLinear, folding a following exact GELU of
    timm's Mlp (fc1 -> act) into fc1. Returns how many linears were swapped."""
    swapped = 0
    for parent in list(model.modules()):
        fold_act = (type(parent).__name__ == "Mlp" and type(getattr(parent, "fc1", None)) is nn.Linear
                    and _is_exact_gelu(getattr(parent, "act", None) or nn.Identity()))
        for name, child in list(parent.named_children()):
            if type(child) is not nn.Linear or child.weight.dtype != torch.float32 or child.weight.device.type != "cpu":
                continue
            activation = "gelu" if fold_act and name == "fc1" else "none"
            setattr(parent, name, FusedLinear(child, activation))
            if activation == "gelu":
                parent.act = nn.Identity()
            swapped += 1
    return swapped


def is_fused(model: nn.Module) -> bool:
    return any(isinstance(m, FusedLinear) for m in model.modules())


def available() -> bool:
    return (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise"))


def enabled_here() -> bool:
    """For CPU fp32: oneDNN present, not switched off (VIT_KERNELS), and measured faster here."""
    from vitcli import env

    setting = env.kernels()
    if setting == "off" or not available():
        return False
    return setting == "on" or faster_here()


def wanted(runtime) -> bool:
    """Fuse for this runtime? CPU, fp32, and `enabled_here()`."""
    return runtime.device.type == "cpu" and runtime.precision == "fp32" and enabled_here()


def for_runtime(model: nn.Module, runtime) -> int:
    """Fuse `model` in place when `wanted(runtime)` (inference or training); how many were swapped."""
    if not wanted(runtime) or is_fused(model):
        return 0
    return fuse(model)


# ----------------------------------------------------------------------------------------------
# The one-time measurement


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def _verdict_file() -> Path:
    from vitcli import env

    return Path(env.vit_cache_dir()) / "kernels.json"


def measure(rows: int = 8 * 197, dim: int = 384, reps: int = 5) -> dict:
    """Time a ViT-S fc1 (+ GELU), batch 8, both ways, alternating; best of `reps` each."""
    gen = torch.Generator().manual_seed(0)
    linear = nn.Linear(dim, 4 * dim)
    x = torch.randn(rows, dim, generator=gen)
    fused = FusedLinear(linear, "gelu")
    times = {"eager": [], "fused": []}
    with torch.inference_mode():
        expected = F.gelu(linear(x))
        same = torch.allclose(fused(x), expected, rtol=1e-4, atol=1e-4)
        for _ in range(reps):
            for name, fn in (("eager", lambda: F.gelu(linear(x))), ("fused", lambda: fused(x))):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    return {"eager_ms": round(1000 * min(times["eager"]), 3), "fused_ms": round(1000 * min(times["fused"]), 3),
            "allclose": bool(same)}


def faster_here() -> bool:
    """The cached verdict for this CPU, torch and thread count; measured (about 0.1 s) the first time."""
    key = f"{_cpu_name()}|torch {torch.__version__}|{torch.get_num_threads()} threads"
    path = _verdict_file()
    try:
        verdicts = json.loads(path.read_text())
        if not isinstance(verdicts, dict):
            verdicts = {}
    except (OSError, ValueError):
        verdicts = {}
    if key not in verdicts:
        try:
            with torch.random.fork_rng(devices=[]):  # nn.Linear's init draws: a run's random stream must not
                result = measure()                    # depend on whether the verdict was cached
        except (RuntimeError, TypeError):  # the op is missing or refuses: never fuse here
            result = {"error": True}
        result["fused"] = bool(result.get("allclose") and result["fused_ms"] < 0.97 * result["eager_ms"])
        verdicts[key] = result
        from vitcli.output import atomic_write

        try:
            atomic_write(path, json.dumps(verdicts, indent=1))
        except OSError:
            pass  # a read-only cache: measure again next time
    return bool(verdicts[key].get("fused"))
