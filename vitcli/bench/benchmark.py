"""`vit benchmark`: how fast a model runs here, next to a plain timm loop and the machine's ceiling.

In one process, on synthetic input of the model's own size, it times
  - vitcli's path: the model as `vit predict` / `vit finetune` run it (inference mode, the runtime's
    autocast, `--compile` if asked; training: fused/foreach SGD, no host sync inside the loop), and
  - a plain timm eager loop with the same weights (a copy of the same module: `torch.no_grad()`, or
    for training timm's `create_optimizer_v2('sgd')`, `loss.item()` every step, as scripts do),
alternating the two in rounds so that a noisy machine slows both alike. It reports img/s, per-batch
latency percentiles, peak memory, FLOPs per image (counted by torch's FlopCounterMode, attention
included) and achieved GFLOP/s as a share of the matrix-multiply ceiling, measured here and now:
the model's own GEMM shapes (every nn.Linear and 1x1 convolution at this batch size) timed alone
with F.linear in the run's dtype and thread count, FLOP-weighted. On CUDA it adds MFU against the
GPU's published dense bf16/fp16 peak when the GPU is one we know.
"""

from __future__ import annotations

import copy
import math
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

# dense tensor-core peaks (TFLOP/s, bf16/fp16, no sparsity) from the vendors' data sheets
GPU_PEAK_TFLOPS = {"H200": 989.0, "H100 NVL": 835.0, "H100 PCIe": 756.0, "H100": 989.0,  # SXM / HBM3
                   "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10G": 70.0, "A10": 125.0, "RTX 4090": 165.0,
                   "RTX 3090": 71.0, "V100": 125.0, "T4": 65.0}


@dataclass
class Figures:
    """One side (vitcli or timm) of one phase (inference or training)."""

    img_s: float
    latency_ms: dict  # per batch: p50, p90, p99, mean
    peak_mem_mb: float | None
    gflop_s: float
    ceiling_pct: float | None


@dataclass
class BenchResult:
    model: str
    architecture: str
    batch_size: int
    img_size: int
    device: str
    precision: str
    threads: int
    compile: bool
    params_m: float
    gflop_per_img: float  # forward pass
    ceiling_gflop_s: float  # the model's GEMMs alone, FLOP-weighted
    ceiling_best_gflop_s: float  # the fastest single GEMM shape
    inference: Figures
    timm_inference: Figures
    train_gflop_per_img: float | None = None  # forward + backward
    train: Figures | None = None
    timm_train: Figures | None = None
    compile_s: float | None = None
    mfu_pct: float | None = None  # CUDA: achieved / published peak
    train_mfu_pct: float | None = None
    peak_tflops: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def speedup(self) -> float:
        return self.inference.img_s / self.timm_inference.img_s

    @property
    def train_speedup(self) -> float | None:
        if self.train is None or self.timm_train is None:
            return None
        return self.train.img_s / self.timm_train.img_s

    def to_json(self) -> dict:
        """Flat figures first (the ones scripts read), then the details."""
        out = {
            "model": self.model, "architecture": self.architecture, "batch_size": self.batch_size,
            "img_size": self.img_size, "device": self.device, "precision": self.precision,
            "threads": self.threads, "compile": self.compile, "params_m": _r(self.params_m),
            "img_s": _r(self.inference.img_s), "timm_img_s": _r(self.timm_inference.img_s),
            "speedup": _r(self.speedup, 3), "gflop_per_img": _r(self.gflop_per_img, 3),
            "gflop_s": _r(self.inference.gflop_s), "timm_gflop_s": _r(self.timm_inference.gflop_s),
            "ceiling_gflop_s": _r(self.ceiling_gflop_s), "ceiling_best_gflop_s": _r(self.ceiling_best_gflop_s),
            "ceiling_pct": _r(self.inference.ceiling_pct), "timm_ceiling_pct": _r(self.timm_inference.ceiling_pct),
            "latency_ms": self.inference.latency_ms, "timm_latency_ms": self.timm_inference.latency_ms,
            "peak_mem_mb": _r(self.inference.peak_mem_mb), "timm_peak_mem_mb": _r(self.timm_inference.peak_mem_mb),
        }
        if self.train is not None:
            out.update({
                "train_img_s": _r(self.train.img_s), "timm_train_img_s": _r(self.timm_train.img_s),
                "train_speedup": _r(self.train_speedup, 3), "train_gflop_per_img": _r(self.train_gflop_per_img, 3),
                "train_gflop_s": _r(self.train.gflop_s), "timm_train_gflop_s": _r(self.timm_train.gflop_s),
                "train_ceiling_pct": _r(self.train.ceiling_pct),
                "timm_train_ceiling_pct": _r(self.timm_train.ceiling_pct),
                "train_latency_ms": self.train.latency_ms, "timm_train_latency_ms": self.timm_train.latency_ms,
                "train_peak_mem_mb": _r(self.train.peak_mem_mb),
                "timm_train_peak_mem_mb": _r(self.timm_train.peak_mem_mb),
            })
        if self.compile_s is not None:
            out["compile_s"] = _r(self.compile_s)
        if self.peak_tflops is not None:
            out.update({"peak_tflops": self.peak_tflops, "mfu_pct": _r(self.mfu_pct),
                        "train_mfu_pct": _r(self.train_mfu_pct)})
        out["notes"] = self.notes
        return out


def _r(x, digits: int = 2):
    return None if x is None else round(float(x), digits)


# ----------------------------------------------------------------------------------------------
# FLOPs and the matrix-multiply ceiling


def _sdpa_cpu_mapping() -> dict:
    """FlopCounterMode knows the CUDA attention kernels but not the CPU flash kernel: add it."""
    import torch
    import torch.utils.flop_counter as fc

    aten = torch.ops.aten
    mapping = {}
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
        mapping[aten._scaled_dot_product_flash_attention_for_cpu] = \
            lambda q, k, v, *a, out_shape=None, **kw: fc.sdpa_flop_count(q, k, v)
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward"):
        mapping[aten._scaled_dot_product_flash_attention_for_cpu_backward] = \
            lambda g, q, k, v, *a, out_shape=None, **kw: fc.sdpa_backward_flop_count(g, q, k, v)
    return mapping


def count_flops(model, example, train: bool = False) -> float:
    """FLOPs of one forward (or forward + backward) pass on `example`, per image."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False, custom_mapping=_sdpa_cpu_mapping())
    was_training = model.training
    model.train(train)
    try:
        if train:
            with counter:
                model(example).float().sum().backward()
            model.zero_grad(set_to_none=True)
        else:
            with torch.no_grad(), counter:
                model(example)
    finally:
        model.train(was_training)
    return counter.get_total_flops() / example.shape[0]


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
        if isinstance(mod, nn.Linear) or (isinstance(mod, nn.Conv2d) and mod.kernel_size == (1, 1)
                                          and mod.stride == (1, 1) and mod.groups == 1):
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
    and oneDNN (what vitcli/kernels.py uses), chosen by timing both: the ceiling is what this machine's
    libraries can do, not what one of them does, so a share of it is never flattered by the choice."""

    def __init__(self, shapes: dict, device, dtype):
        import torch

        self.shapes = shapes or {(2048, 2048, 2048): 1}
        gen = torch.Generator().manual_seed(2)
        self.operands = [(torch.randn(m, k, generator=gen).to(device, dtype),
                          torch.randn(n, k, generator=gen).to(device, dtype), count)
                         for (m, k, n), count in self.shapes.items()]
        self.flops = sum(2.0 * m * k * n * count for (m, k, n), count in self.shapes.items())
        self.kernels = [self._fastest(x, w, device) for x, w, _ in self.operands]

    @staticmethod
    def _fastest(x, w, device):
        import torch
        import torch.nn.functional as F

        candidates = [F.linear]
        if device.type == "cpu" and x.dtype == torch.float32:
            from vitcli.inference import kernels

            if kernels.available():
                candidates.append(lambda a, b: torch.ops.mkldnn._linear_pointwise(a, b, None, "none", [], ""))
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
                _sync(device)
                reps, start = 0, time.perf_counter()
                while reps < 3 or time.perf_counter() - start < min_seconds:
                    fn(x, w)
                    reps += 1
                _sync(device)
                per_call = (time.perf_counter() - start) / reps
                best = max(best, 2.0 * x.shape[0] * x.shape[1] * w.shape[0] / per_call / 1e9)
        return best


def _timed(fn, x, w) -> float:
    start = time.perf_counter()
    fn(x, w)
    return time.perf_counter() - start


def _sync(device) -> None:
    if getattr(device, "type", "cpu") == "cuda":
        import torch

        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------------------------
# Memory


class _RssSampler:
    """Peak resident memory of this process while inside `track()`, sampled every few ms (CPU)."""

    def __init__(self):
        self.peak = 0
        self._on = False
        self._stop = threading.Event()
        self._thread = None
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

    def _rss(self) -> int:
        try:
            with open("/proc/self/statm") as fh:
                return int(fh.read().split()[1]) * self._page
        except (OSError, ValueError, IndexError):
            import resource

            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def _loop(self):
        while not self._stop.wait(0.005):
            if self._on:
                self.peak = max(self.peak, self._rss())

    @contextmanager
    def track(self):
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        self._on = True
        try:
            yield
        finally:
            self.peak = max(self.peak, self._rss())
            self._on = False

    def close(self):
        self._stop.set()


class _Side:
    """Timing and memory for one side of one phase."""

    def __init__(self, name: str, step, device, images_per_step: int, memory: bool = True):
        self.name = name
        self.step = step
        self.device = device
        self.n = images_per_step
        self.latencies: list[float] = []
        self.sampler = _RssSampler() if memory and device.type != "cuda" else None
        self.cuda_peak = 0

    def run(self, iters: int, record: bool = True):
        import torch

        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        track = self.sampler.track() if self.sampler else _null()
        with track:
            for _ in range(iters):
                start = time.perf_counter()
                self.step()
                _sync(self.device)
                if record:
                    self.latencies.append(time.perf_counter() - start)
        if cuda:
            self.cuda_peak = max(self.cuda_peak, torch.cuda.max_memory_allocated(self.device))

    def figures(self, flops_per_img: float, ceiling: float) -> Figures:
        total = sum(self.latencies)
        img_s = self.n * len(self.latencies) / total
        gflop_s = img_s * flops_per_img / 1e9
        lat = sorted(x * 1000 for x in self.latencies)
        latency = {"p50": _r(_pct(lat, 50)), "p90": _r(_pct(lat, 90)), "p99": _r(_pct(lat, 99)),
                   "mean": _r(sum(lat) / len(lat))}
        if self.sampler is not None:
            self.sampler.close()
            peak = self.sampler.peak / 2**20
        else:
            peak = self.cuda_peak / 2**20
        return Figures(img_s, latency, peak, gflop_s, 100.0 * gflop_s / ceiling if ceiling else None)


@contextmanager
def _null():
    yield


def _pct(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    pos = (len(sorted_values) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def _alternate(sides: list, iters: int, rounds: int) -> None:
    """Time the sides in alternating chunks (rotating who goes first) so drifting load hits all alike."""
    rounds = max(1, min(rounds, iters))
    chunks = [iters // rounds + (1 if i < iters % rounds else 0) for i in range(rounds)]
    for i, n in enumerate(chunks):
        order = sides[i % len(sides):] + sides[:i % len(sides)]
        for side in order:
            side.run(n)


def _ceiling(probe: _Side, gemm_flops: float) -> float:
    return gemm_flops * len(probe.latencies) / sum(probe.latencies) / 1e9


# ----------------------------------------------------------------------------------------------
# The benchmark


def run(spec: str, *, batch_size: int = 32, img_size: int | None = None, train: bool = False,
        device: str = "auto", precision: str = "auto", compile: bool = False, iters: int = 10,
        warmup: int = 2, random_init: bool = False, rounds: int = 4, log=lambda msg: None) -> BenchResult:
    """Benchmark `spec` (any vit model spec) against a plain timm eager loop in this process."""
    import torch

    from vitcli.devices import runtime
    from vitcli.errors import ModelError, UsageError
    from vitcli.models.resolver import load_model

    if iters < 1 or warmup < 0 or batch_size < 1:
        raise UsageError("--iters and --batch-size must be at least 1, --warmup at least 0")
    rt = runtime(device, precision)
    try:
        loaded = load_model(spec, pretrained=not random_init, device=rt.device,
                            **({"img_size": img_size} if img_size else {}))
    except ModelError as e:  # models that take any input size (CNNs, PoolFormer) have no img_size
        if not (img_size and "img_size" in str(e.__cause__ or "")):
            raise
        loaded = load_model(spec, pretrained=not random_init, device=rt.device)
    model = loaded.model.eval()
    _, h, w = loaded.data_config["input_size"]
    if img_size and (h, w) != (img_size, img_size):
        h = w = img_size
    notes: list[str] = []
    if rt.device.type == "cpu" and rt.precision in ("bf16", "fp16"):
        notes.append(f"{rt.precision} on CPU: fast only with AMX/avx512_bf16; the default stays fp32")
    dtype = rt.autocast_dtype or torch.float32
    threads = torch.get_num_threads()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, 3, h, w, generator=gen).to(rt.device)
    params_m = sum(p.numel() for p in model.parameters()) / 1e6

    log(f"counting FLOPs; {threads} threads, {_dtype_name(dtype)}")
    flops = count_flops(model, x[:1])
    with rt.autocast():
        probe = GemmProbe(gemm_shapes(model, x), rt.device, dtype)
    best = probe.best(rt.device)
    ceiling_side = _Side("gemm", probe.step, rt.device, batch_size, memory=False)

    baseline = copy.deepcopy(model)  # the plain timm loop: the same module and weights, nothing else
    if not compile:  # vit predict / eval's CPU kernels (inductor makes its own fusions when compiling)
        from vitcli.inference import kernels

        if kernels.for_inference(loaded, rt):
            log("vitcli side: oneDNN linear + GELU kernels (vitcli/kernels.py)")
    ours = torch.compile(model) if compile else model

    def ours_step():
        with torch.inference_mode(), rt.autocast():
            ours(x)

    def timm_step():
        with torch.no_grad(), _plain_autocast(rt):
            baseline(x)

    a = _Side("vitcli", ours_step, rt.device, batch_size)
    b = _Side("timm", timm_step, rt.device, batch_size)
    log(f"inference: {warmup} warm-up + {iters} timed batches of {batch_size} per side, alternating, "
        "with the GEMM ceiling probe")
    start = time.perf_counter()
    with _inductor_freezing(compile and rt.device.type == "cpu"):
        a.run(max(warmup, 1 if compile else 0), record=False)  # compiles on the first call
    compile_s = time.perf_counter() - start if compile else None
    b.run(warmup, record=False)
    ceiling_side.run(1, record=False)
    _alternate([a, b, ceiling_side], iters, rounds)

    train_sides = None
    if train:
        train_sides = _train_phase(model, baseline, x, rt, iters, warmup, rounds, compile, ceiling_side, log)
    ceiling = _ceiling(ceiling_side, probe.flops)
    if rt.device.type == "cpu" and rt.precision == "fp32":
        faster = _bf16_speedup(probe, rt.device, ceiling)
        if faster and faster >= 1.3:
            notes.append(f"bf16 matrix multiplies run {faster:.1f}x faster than fp32 on this CPU (AMX / "
                         "avx512_bf16): try --precision bf16")
    result = BenchResult(spec, loaded.architecture, batch_size, h, str(rt.device), rt.precision, threads,
                         compile, params_m, flops / 1e9, ceiling, max(best, ceiling), a.figures(flops, ceiling),
                         b.figures(flops, ceiling), compile_s=compile_s, notes=notes)
    if train_sides is not None:
        ta, tb, train_flops = train_sides
        result.train_gflop_per_img = train_flops / 1e9
        result.train = ta.figures(train_flops, ceiling)
        result.timm_train = tb.figures(train_flops, ceiling)
    if rt.device.type == "cuda":
        peak = _gpu_peak_tflops(rt.device)
        if peak:
            result.peak_tflops = peak
            result.mfu_pct = 100 * result.inference.gflop_s / (peak * 1e3)
            if result.train is not None:
                result.train_mfu_pct = 100 * result.train.gflop_s / (peak * 1e3)
    return result


def _train_phase(model, baseline, x, rt, iters, warmup, rounds, compile, ceiling_side, log):
    """Training steps for both loops (copies of the model, so inference figures stay untouched)."""
    import torch
    import torch.nn.functional as F

    from vitcli.devices import fused_optimizer_ok

    num_classes = getattr(model, "num_classes", 0) or 1000
    gen = torch.Generator().manual_seed(1)
    y = torch.randint(0, max(1, num_classes), (x.shape[0],), generator=gen).to(rt.device)
    ours_model = copy.deepcopy(baseline).train()
    timm_model = baseline.train()
    train_flops = count_flops(timm_model, x[:1], train=True)  # timm's layers: FlopCounterMode knows their ops
    if not compile:
        from vitcli.inference import kernels

        kernels.for_runtime(ours_model, rt)  # as vit finetune / train run it

    # vitcli: SGD (the fine-tuning recipe) fused where torch has it, foreach clipping, no .item() per step
    kwargs = {"fused": True} if fused_optimizer_ok(rt.device) else {"foreach": True}
    opt = torch.optim.SGD(ours_model.parameters(), lr=1e-4, momentum=0.9, **kwargs)
    scaler = torch.amp.GradScaler(rt.device.type) if rt.precision == "fp16" else None
    fwd = torch.compile(ours_model) if compile else ours_model

    def ours_step():
        with rt.autocast():
            loss = F.cross_entropy(fwd(x).float(), y)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
        else:
            loss.backward()
        torch.nn.utils.clip_grad_norm_(ours_model.parameters(), 1.0, foreach=True)
        if scaler is not None:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        opt.zero_grad(set_to_none=True)

    # the plain timm loop a user writes: timm's optimizer factory, clip, loss.item() for the log line
    from timm.optim import create_optimizer_v2

    timm_opt = create_optimizer_v2(timm_model, "sgd", lr=1e-4, momentum=0.9, weight_decay=0.0)
    timm_scaler = torch.amp.GradScaler(rt.device.type) if rt.precision == "fp16" else None

    def timm_step():
        with _plain_autocast(rt):
            loss = F.cross_entropy(timm_model(x), y)
        timm_opt.zero_grad()
        if timm_scaler is not None:
            timm_scaler.scale(loss).backward()
            timm_scaler.unscale_(timm_opt)
            torch.nn.utils.clip_grad_norm_(timm_model.parameters(), 1.0)
            timm_scaler.step(timm_opt)
            timm_scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(timm_model.parameters(), 1.0)
            timm_opt.step()
        loss.item()

    a = _Side("vitcli", ours_step, rt.device, x.shape[0])
    b = _Side("timm", timm_step, rt.device, x.shape[0])
    log(f"training: {warmup} warm-up + {iters} timed steps of {x.shape[0]} per side")
    a.run(max(warmup, 1 if compile else 0), record=False)
    b.run(warmup, record=False)
    _alternate([a, b, ceiling_side], iters, rounds)
    return a, b, train_flops


@contextmanager
def _inductor_freezing(on: bool):
    """Inference on CPU: let inductor treat weights as constants (prepacked oneDNN linear with the bias
    and GELU fused): measured ~8 % faster than plain torch.compile on ViT-S, 2-core CPU."""
    if not on:
        yield
        return
    import torch._inductor.config as inductor_config

    old = inductor_config.freezing
    inductor_config.freezing = True
    try:
        yield
    finally:
        inductor_config.freezing = old


def _bf16_speedup(probe: GemmProbe, device, fp32_gflop_s: float) -> float | None:
    """How much faster the same GEMMs run in bf16 here (None when bf16 matmul is unavailable)."""
    import torch

    try:
        bf16 = GemmProbe(probe.shapes, device, torch.bfloat16)
        side = _Side("bf16", bf16.step, device, 1, memory=False)
        side.run(1, record=False)
        side.run(2)
    except (RuntimeError, TypeError):
        return None
    return _ceiling(side, bf16.flops) / fp32_gflop_s


def _plain_autocast(rt):
    """The baseline runs in the same precision as vitcli (a script would use autocast for bf16 too)."""
    return rt.autocast()


def _gpu_peak_tflops(device) -> float | None:
    import torch

    name = torch.cuda.get_device_name(device)
    for key in sorted(GPU_PEAK_TFLOPS, key=len, reverse=True):  # "H100 SXM" before "H100"
        if key in name:
            return GPU_PEAK_TFLOPS[key]
    return None


def _dtype_name(dtype) -> str:
    return str(dtype).replace("torch.", "")
