"""CPU inference kernels: every nn.Linear as one oneDNN matmul, with the bias and timm's Mlp GELU fused.

On a CPU in fp32, PyTorch runs `nn.Linear` as MKL's sgemm after copying the bias into the output
(aten::addmm), then GELU as another pass over the (B, N, 4C) hidden activations. oneDNN's matmul takes
the bias and the GELU as post-ops and, on AVX-512 CPUs, also multiplies faster than MKL; the logits
differ from the eager model's by rounding only. (Measured figures, dated: docs/info.md.)

`fuse(model)` swaps the modules in place (the parameters are the same tensors under the same names, so
state_dict and hooks on other modules are unchanged). With gradients enabled (training on CPU) a
FusedLinear runs an autograd Function: oneDNN for the forward matmul and for the input gradient,
torch's mm for the weight gradient, GELU as its own op (its backward needs the pre-activation).

Under reduced-precision autocast (bf16, fp16), inference keeps the classifier in fp32
(`keep_head_fp32`): bf16 logits have 8 bits of mantissa, so near-equal classes tie or swap.

Used only where measured faster on this machine: `faster_here()` times one ViT-shaped fc1 both ways
once per (CPU, torch version, thread count) and records the verdict (vitcli.accel.cache, shown by `vit
info`). VIT_KERNELS=0 turns this off, VIT_KERNELS=1 skips the measurement. Which kernels a model gets
is decided in one place, vitcli.accel.prepare.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from vitcli.accel.cache import best_ms
from vitcli.accel.torch_private import onednn_linear, onednn_linear_available


class FusedLinear(nn.Module):
    """y = act(x @ W.T + b) in one oneDNN call (inference); the same parameters as the nn.Linear it replaces.

    `dtype=torch.bfloat16` (inference under bf16 autocast): the weights are also kept cast to bf16, once
    (buffers that are not saved), and the input is cast as autocast would; oneDNN applies the bias and
    GELU to its fp32 accumulator before the one rounding to bf16 (autocast rounds the matmul to bf16,
    then runs GELU on that). With gradients on, a bf16 FusedLinear is autocast's plain linear + GELU."""

    def __init__(self, linear: nn.Linear, activation: str = "none", dtype: torch.dtype = torch.float32):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = linear.weight
        self.bias = linear.bias
        self.activation = activation
        self.dtype = dtype
        if dtype != torch.float32:
            self.register_buffer("weight_lp", linear.weight.detach().to(dtype), persistent=False)
            self.register_buffer(
                "bias_lp", None if linear.bias is None else linear.bias.detach().to(dtype), persistent=False
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x2 = x.reshape(-1, self.in_features)  # (..., in) -> (rows, in)
        weight, bias = self.weight, self.bias
        if self.dtype != torch.float32:
            x2, weight, bias = x2.to(self.dtype), self.weight_lp, self.bias_lp
        if torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in self._params())):
            if self.dtype != torch.float32:  # the copies do not follow updates: autocast's own linear
                y = F.linear(x.reshape(-1, self.in_features), self.weight, self.bias)
            else:
                y = _TrainableLinear.apply(x2, weight, bias)  # training: GELU stays a separate op
            if self.activation == "gelu":
                y = F.gelu(y)
        else:
            y = onednn_linear(x2, weight, bias, self.activation)
        return y.view(*x.shape[:-1], self.out_features)  # (rows, out) -> (..., out)

    def _params(self):
        return (self.weight,) if self.bias is None else (self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, activation={self.activation}" + (
            f", {str(self.dtype).replace('torch.', '')}" if self.dtype != torch.float32 else ""
        )


class _TrainableLinear(torch.autograd.Function):
    """x @ W.T + b with oneDNN forward and oneDNN grad-input; grad-weight stays torch's mm (MKL), which
    reads the transposed activations in place where oneDNN would need copies of them."""

    @staticmethod
    def forward(ctx, x, weight, bias):  # (rows, in), (out, in), (out,) -> (rows, out)
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return onednn_linear(x, weight, bias)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y):  # (rows, out)
        x, weight = ctx.saved_tensors
        grad_y = grad_y.contiguous()
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:  # grad_y @ W = linear(grad_y, W.T)
            grad_x = onednn_linear(grad_y, weight.t().contiguous(), None)
        if ctx.needs_input_grad[1]:
            grad_w = grad_y.t().mm(x)  # (out, in)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad_y.sum(0)
        return grad_x, grad_w, grad_b


def _is_exact_gelu(module: nn.Module) -> bool:
    if isinstance(module, nn.GELU):
        return module.approximate == "none"
    return type(module).__name__ == "GELU" and type(module).__module__.startswith("timm.")  # F.gelu, exact


def fuse(model: nn.Module, dtype: torch.dtype = torch.float32) -> int:
    """Swap every fp32 CPU nn.Linear of `model` for a FusedLinear computing in `dtype`, folding a
    following exact GELU of timm's Mlp (fc1 -> act) into fc1. Returns how many linears were swapped."""
    swapped = 0
    for parent in list(model.modules()):
        fold_act = (
            type(parent).__name__ == "Mlp"
            and type(getattr(parent, "fc1", None)) is nn.Linear
            and _is_exact_gelu(getattr(parent, "act", None) or nn.Identity())
        )
        for name, child in list(parent.named_children()):
            if type(child) is not nn.Linear or child.weight.dtype != torch.float32 or child.weight.device.type != "cpu":
                continue
            activation = "gelu" if fold_act and name == "fc1" else "none"
            setattr(parent, name, FusedLinear(child, activation, dtype))
            if activation == "gelu":
                parent.act = nn.Identity()
            swapped += 1
    return swapped


def is_fused(model: nn.Module) -> bool:
    return any(isinstance(m, FusedLinear) for m in model.modules())


def available() -> bool:
    return onednn_linear_available()


@functools.cache
def works_here(precision: str) -> bool:
    """Does this CPU's oneDNN run the fused linear in `precision`? (bf16 needs avx512_bf16 / AMX, or at
    least AVX-512: on an AVX2-only CPU oneDNN has no bf16 inner product and refuses.)"""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    try:
        onednn_linear(torch.zeros(2, 8, dtype=dtype), torch.zeros(4, 8, dtype=dtype), torch.zeros(4, dtype=dtype))
    except (RuntimeError, TypeError):
        return False
    return True


def enabled_here(precision: str = "fp32") -> bool:
    """For CPU fp32 (or bf16 inference): oneDNN present and able to run it here, not switched off
    (VIT_KERNELS), and measured faster here in that precision (VIT_KERNELS=1: without measuring)."""
    from vitcli import env

    setting = env.kernels()
    if setting == "off" or not available() or precision not in ("fp32", "bf16") or not works_here(precision):
        return False
    return setting == "on" or faster_here(precision)


class FullPrecisionLinear(nn.Module):
    """An nn.Linear run in fp32 inside autocast (the same parameters, under the same names)."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = linear.weight
        self.bias = linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return F.linear(x.float(), self.weight.float(), None if self.bias is None else self.bias.float())

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, fp32 under autocast"


def keep_head_fp32(model: nn.Module) -> bool:
    """Swap the classifier (timm's `get_classifier()`, an nn.Linear) for a FullPrecisionLinear."""
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    if type(head) is not nn.Linear:
        return False
    for parent in model.modules():
        for name, child in parent.named_children():
            if child is head:
                setattr(parent, name, FullPrecisionLinear(head))
                return True
    return False


# ----------------------------------------------------------------------------------------------
# The one-time measurement


def measure(rows: int = 8 * 197, dim: int = 384, reps: int = 5, dtype: torch.dtype = torch.float32) -> dict:
    """Time a ViT-S fc1 (+ GELU), batch 8, both ways, alternating; best of `reps` each. In bf16 the eager
    way is autocast's (the weight cast per call, GELU on the rounded product)."""
    import contextlib

    gen = torch.Generator().manual_seed(0)
    linear = nn.Linear(dim, 4 * dim)
    x = torch.randn(rows, dim, generator=gen)
    fused = FusedLinear(linear, "gelu", dtype)
    low = dtype != torch.float32
    autocast = torch.autocast("cpu", dtype=dtype) if low else contextlib.nullcontext()
    with torch.inference_mode(), autocast:
        expected = F.gelu(linear(x))
        tol = 5e-2 if low else 1e-4
        same = torch.allclose(fused(x).float(), expected.float(), rtol=tol, atol=tol)
        best = best_ms({"eager": lambda: F.gelu(linear(x)), "fused": lambda: fused(x)}, reps)
    return {"eager_ms": round(best["eager"], 3), "fused_ms": round(best["fused"], 3), "allclose": bool(same)}


def faster_here(precision: str = "fp32") -> bool:
    """The recorded verdict for this CPU, torch and thread count (vitcli.accel.cache), per precision;
    measured (about 0.1 s) the first time."""
    from vitcli.accel.cache import measured

    def verdict() -> dict:
        try:
            with torch.random.fork_rng(devices=[]):  # nn.Linear's init draws: a run's random stream must not
                # depend on whether the verdict was cached
                result = measure(dtype=torch.bfloat16 if precision == "bf16" else torch.float32)
        except (RuntimeError, TypeError):  # the op is missing or refuses: never fuse here
            result = {"error": True}
        result["fused"] = bool(result.get("allclose") and result["fused_ms"] < 0.97 * result["eager_ms"])
        return result

    return bool(measured(f"onednn-linear-{precision}", verdict, lambda v: "fused" in v).get("fused"))
