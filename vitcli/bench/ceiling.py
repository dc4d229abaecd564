"""The matrix-multiply ceiling of `vit benchmark`: the model's own GEMM shapes, timed alone.

Every nn.Linear and 1x1 convolution of one forward pass, at the benchmark's batch size, run as a bare
x @ W.T in the run's dtype and thread count, in rounds between the model's own: the FLOP-weighted rate
is the ceiling the model's GFLOP/s are a share of.
"""

from __future__ import annotations

import time

from vitcli.bench.timing import Side, sync


def gemm_shapes(model, example) -> dict[tuple[int, int, int], int]:
    """(M, K, N) -> count for every nn.Linear and 1x1 stride-1 convolution in one forward pass."""
    import torch
    from torch import nn

    shapes: dict[tuple[int, int, int], int] = {}

    def hook(module, inputs, output):
        x = inputs[0]
        if isinstance(module, nn.Linear):
            k, n = module.in_features, module.out_features
            m = x.numel() // k
        else:
            k, n = module.in_channels, module.out_channels
            m = x.numel() // k
        shapes[(m, k, n)] = shapes.get((m, k, n), 0) + 1

    handles = []
    for mod in model.modules():
        if isinstance(mod, nn.Linear) or (
            isinstance(mod, nn.Conv2d) and mod.kernel_size == (1, 1) and mod.stride == (1, 1) and mod.groups == 1
        ):
            handles.append(mod.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    return shapes


class GemmProbe:
    """The model's GEMMs alone: one `step()` runs x @ W.T (no bias: the pure matrix multiply, in the
    weight layout the model uses) on every (M, K, N) shape, as many times as one forward pass does.
    Timed in rounds between the model's own, it gives the ceiling under the same load: ceiling GFLOP/s
    = GEMM FLOPs / GEMM time (a FLOP-weighted mean over the shapes).

    On CPU in fp32 each shape runs on the faster of the two GEMM libraries torch ships, MKL (F.linear)
    and oneDNN (what vitcli.accel.kernels uses), chosen by timing both: the ceiling is what this machine's
    libraries can do, not what one of them does, so a share of it is never flattered by the choice."""

    def __init__(self, shapes: dict, device, dtype):
        import torch

        self.shapes = shapes or {(2048, 2048, 2048): 1}
        gen = torch.Generator().manual_seed(2)
        self.operands = [
            (
                torch.randn(m, k, generator=gen).to(device, dtype),
                torch.randn(n, k, generator=gen).to(device, dtype),
                count,
            )
            for (m, k, n), count in self.shapes.items()
        ]
        self.flops = sum(2.0 * m * k * n * count for (m, k, n), count in self.shapes.items())
        self.kernels = [self._fastest(x, w, device) for x, w, _ in self.operands]

    @staticmethod
    def _fastest(x, w, device):
        import torch
        import torch.nn.functional as F

        candidates = [F.linear]
        if device.type == "cpu" and x.dtype == torch.float32:
            from vitcli.accel.torch_private import onednn_linear, onednn_linear_available

            if onednn_linear_available():
                candidates.append(lambda a, b: onednn_linear(a, b, None))
        if len(candidates) == 1:
            return candidates[0]
        best, best_s = candidates[0], float("inf")
        with torch.no_grad():
            for fn in candidates:
                fn(x, w)
                seconds = min(_timed(fn, x, w) for _ in range(3))
                if seconds < best_s:
                    best, best_s = fn, seconds
        return best

    def step(self) -> None:
        import torch

        with torch.no_grad():
            for (x, w, count), fn in zip(self.operands, self.kernels):
                for _ in range(count):
                    fn(x, w)  # x @ w.T

    def best(self, device, min_seconds: float = 0.1) -> float:
        """GFLOP/s of the fastest single shape."""
        import torch

        best = 0.0
        with torch.no_grad():
            for (x, w, _), fn in zip(self.operands, self.kernels):
                fn(x, w)
                sync(device)
                reps, start = 0, time.perf_counter()
                while reps < 3 or time.perf_counter() - start < min_seconds:
                    fn(x, w)
                    reps += 1
                sync(device)
                per_call = (time.perf_counter() - start) / reps
                best = max(best, 2.0 * x.shape[0] * x.shape[1] * w.shape[0] / per_call / 1e9)
        return best


def _timed(fn, x, w) -> float:
    start = time.perf_counter()
    fn(x, w)
    return time.perf_counter() - start


def ceiling_gflop_s(probe_side: Side, gemm_flops: float) -> float:
    return gemm_flops * len(probe_side.latencies) / sum(probe_side.latencies) / 1e9


def bf16_speedup(probe: GemmProbe, device, fp32_gflop_s: float) -> float | None:
    """How much faster the same GEMMs run in bf16 here (None when bf16 matmul is unavailable)."""
    import torch

    try:
        bf16 = GemmProbe(probe.shapes, device, torch.bfloat16)
        side = Side("bf16", bf16.step, device, 1, memory=False)
        side.run(1, record=False)
        side.run(2)
    except (RuntimeError, TypeError):
        return None
    return ceiling_gflop_s(side, bf16.flops) / fp32_gflop_s


def matmul_peak_tflops(device, dtype, n: int = 8192, min_seconds: float = 0.5) -> float | None:
    """TFLOP/s of one n x n x n matmul in `dtype` on `device`, timed for at least `min_seconds`: the
    device's measured peak, which MFU is also given against (the data sheet's can be out of reach)."""
    import torch

    try:
        gen = torch.Generator().manual_seed(3)
        a = torch.randn(n, n, generator=gen).to(device, dtype)
        b = torch.randn(n, n, generator=gen).to(device, dtype)
        a @ b
        sync(device)
        reps, start = 0, time.perf_counter()
        while reps < 3 or time.perf_counter() - start < min_seconds:
            a @ b
            reps += 1
        sync(device)
    except (RuntimeError, TypeError):  # out of memory, or no matmul in this dtype
        return None
    return 2.0 * n**3 * reps / (time.perf_counter() - start) / 1e12
