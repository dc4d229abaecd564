"""`vit benchmark`: how fast a model runs here, next to a plain timm loop and the machine's ceiling.

In one process, on synthetic input of the model's own size, it times
  - vitcli's path: the model as `vit predict` / `vit finetune` run it (inference mode, the runtime's
    autocast, `--compile` if asked; training: fused/foreach SGD, no host sync inside the loop), and
  - a plain timm eager loop with the same weights (a copy of the same module: `torch.no_grad()`, or
    for training timm's `create_optimizer_v2('sgd')`, `loss.item()` every step, as scripts do),
alternating the two in rounds so that a noisy machine slows both alike; in bf16 / fp16 also the
plain timm fp32 loop a user runs by default (no autocast), so the gain of the precision is in the
same run (`timm_fp32_img_s`, `timm_fp32_train_img_s`). It reports img/s, per-batch
latency percentiles, peak memory, FLOPs per image (counted by torch's FlopCounterMode, attention
included) and achieved GFLOP/s as a share of the matrix-multiply ceiling, measured here and now:
the model's own GEMM shapes (every nn.Linear and 1x1 convolution at this batch size) timed alone
with F.linear in the run's dtype and thread count, FLOP-weighted. On CUDA it adds MFU against the
GPU's published dense bf16/fp16 peak when the GPU is one we know, and against the peak measured
here and now (one large square matmul in the run's dtype: `measured_peak_tflops`).

The training phase lives in vitcli.bench.training, the ceiling in vitcli.bench.ceiling, the timing of
each side in vitcli.bench.timing.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

from vitcli.bench.ceiling import GemmProbe, bf16_speedup, ceiling_gflop_s, gemm_shapes, matmul_peak_tflops
from vitcli.bench.timing import Figures, Side, alternate, r

# dense tensor-core peaks (TFLOP/s, bf16/fp16, no sparsity) from the vendors' data sheets
GPU_PEAK_TFLOPS = {
    "H200": 989.0,
    "H100 NVL": 835.0,
    "H100 PCIe": 756.0,
    "H100": 989.0,  # SXM / HBM3
    "A100": 312.0,
    "L40S": 362.0,
    "L4": 121.0,
    "A10G": 70.0,
    "A10": 125.0,
    "RTX 4090": 165.0,
    "RTX 3090": 71.0,
    "V100": 125.0,
    "T4": 65.0,
}


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
    timm_fp32_inference: Figures | None = None  # the plain fp32 loop, when the run's precision is not fp32
    timm_fp32_train: Figures | None = None
    compile_s: float | None = None
    mfu_pct: float | None = None  # CUDA: achieved / published peak
    train_mfu_pct: float | None = None
    peak_tflops: float | None = None
    measured_peak_tflops: float | None = None  # CUDA: a large matmul in the run's dtype, timed here
    notes: list[str] = field(default_factory=list)

    @property
    def speedup(self) -> float:
        return self.inference.img_s / self.timm_inference.img_s

    @property
    def timm_fp32(self) -> Figures:
        return self.timm_fp32_inference or self.timm_inference

    @property
    def train_speedup(self) -> float | None:
        if self.train is None or self.timm_train is None:
            return None
        return self.train.img_s / self.timm_train.img_s

    def to_json(self) -> dict:
        """Flat figures first (the ones scripts read), then the details."""
        out = {
            "model": self.model,
            "architecture": self.architecture,
            "batch_size": self.batch_size,
            "img_size": self.img_size,
            "device": self.device,
            "precision": self.precision,
            "threads": self.threads,
            "compile": self.compile,
            "params_m": r(self.params_m),
            "img_s": r(self.inference.img_s),
            "timm_img_s": r(self.timm_inference.img_s),
            "speedup": r(self.speedup, 3),
            "timm_fp32_img_s": r(self.timm_fp32.img_s),
            "speedup_vs_timm_fp32": r(self.inference.img_s / self.timm_fp32.img_s, 3),
            "gflop_per_img": r(self.gflop_per_img, 3),
            "gflop_s": r(self.inference.gflop_s),
            "timm_gflop_s": r(self.timm_inference.gflop_s),
            "ceiling_gflop_s": r(self.ceiling_gflop_s),
            "ceiling_best_gflop_s": r(self.ceiling_best_gflop_s),
            "ceiling_pct": r(self.inference.ceiling_pct),
            "timm_ceiling_pct": r(self.timm_inference.ceiling_pct),
            "latency_ms": self.inference.latency_ms,
            "timm_latency_ms": self.timm_inference.latency_ms,
            "peak_mem_mb": r(self.inference.peak_mem_mb),
            "timm_peak_mem_mb": r(self.timm_inference.peak_mem_mb),
        }
        if self.train is not None:
            timm_fp32_train = self.timm_fp32_train or self.timm_train
            out.update(
                {
                    "train_img_s": r(self.train.img_s),
                    "timm_train_img_s": r(self.timm_train.img_s),
                    "timm_fp32_train_img_s": r(timm_fp32_train.img_s),
                    "train_speedup_vs_timm_fp32": r(self.train.img_s / timm_fp32_train.img_s, 3),
                    "train_speedup": r(self.train_speedup, 3),
                    "train_gflop_per_img": r(self.train_gflop_per_img, 3),
                    "train_gflop_s": r(self.train.gflop_s),
                    "timm_train_gflop_s": r(self.timm_train.gflop_s),
                    "train_ceiling_pct": r(self.train.ceiling_pct),
                    "timm_train_ceiling_pct": r(self.timm_train.ceiling_pct),
                    "train_latency_ms": self.train.latency_ms,
                    "timm_train_latency_ms": self.timm_train.latency_ms,
                    "train_peak_mem_mb": r(self.train.peak_mem_mb),
                    "timm_train_peak_mem_mb": r(self.timm_train.peak_mem_mb),
                }
            )
        if self.compile_s is not None:
            out["compile_s"] = r(self.compile_s)
        if self.peak_tflops is not None:
            out.update(
                {"peak_tflops": self.peak_tflops, "mfu_pct": r(self.mfu_pct), "train_mfu_pct": r(self.train_mfu_pct)}
            )
        if self.measured_peak_tflops:
            peak = self.measured_peak_tflops * 1e3  # GFLOP/s
            out.update(
                {
                    "measured_peak_tflops": r(self.measured_peak_tflops),
                    "mfu_measured_pct": r(100 * self.inference.gflop_s / peak),
                    "train_mfu_measured_pct": r(100 * self.train.gflop_s / peak) if self.train else None,
                }
            )
        out["notes"] = self.notes
        return out


# ----------------------------------------------------------------------------------------------
# The benchmark


def run(
    spec: str,
    *,
    batch_size: int = 32,
    img_size: int | None = None,
    train: bool = False,
    device: str = "auto",
    precision: str = "auto",
    compile: bool = False,
    iters: int = 10,
    warmup_iters: int = 2,
    random_init: bool = False,
    rounds: int = 4,
    log=lambda msg: None,
) -> BenchResult:
    """Benchmark `spec` (any vit model spec) against a plain timm eager loop in this process."""
    import torch

    from vitcli.accel.precision import cpu_bf16_verdict
    from vitcli.accel.runtime import runtime
    from vitcli.accel.torch_private import inductor_freezing as freezing
    from vitcli.errors import UsageError
    from vitcli.models.meta import count_flops
    from vitcli.models.resolver import load_model

    if iters < 1 or warmup_iters < 0 or batch_size < 1:
        raise UsageError("--iters and --batch-size must be at least 1, --warmup-iters at least 0")
    warmup = warmup_iters
    from vitcli.export import onnx_model as onnx

    # an ONNX file runs in onnxruntime in fp32: `auto` means fp32 there
    from vitcli.models.resolver import file_kind

    rt = runtime(device, "fp32" if precision == "auto" and (onnx.is_onnx(spec) or file_kind(spec)) else precision)
    loaded = load_model(
        spec, pretrained=not random_init, device=rt.device, **({"img_size": img_size} if img_size else {})
    )
    model = loaded.model.eval()
    _, h, w = loaded.data_config["input_size"]
    if img_size and (h, w) != (img_size, img_size):
        h = w = img_size
    served = model  # what vitcli runs: the model, or an ONNX file's onnxruntime session
    if getattr(model, "onnx", None) is not None:
        if train or compile or rt.device.type != "cpu" or rt.precision != "fp32":
            raise UsageError(
                "an ONNX model is benchmarked for inference on the CPU in fp32 (onnxruntime)",
                "drop --train, --compile, --device and --precision",
            )
        # the plain timm loop: the same architecture (random weights: speed does not depend on them)
        args = {**model.onnx.model_args, "img_size": h, "num_classes": loaded.num_classes}
        model = load_model(loaded.architecture, pretrained=False, device=rt.device, **args).model.eval()
    notes: list[str] = []
    if rt.device.type == "cpu" and rt.precision in ("bf16", "fp16"):
        verdict = cpu_bf16_verdict()
        if rt.precision == "bf16" and verdict.get("bf16"):
            notes.append(
                f"bf16 autocast, the classifier in fp32 (this CPU has {', '.join(verdict['flags'])}; bf16 "
                f"matmuls measured {verdict['speedup']}x fp32): --precision fp32 for exact fp32"
            )
        else:
            notes.append(
                f"{rt.precision} on this CPU is not measured faster than fp32 (no native bf16, or too "
                "little gain): --precision auto uses fp32 here"
            )
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
    ceiling_side = Side("gemm", probe.step, rt.device, batch_size, memory=False)

    baseline = copy.deepcopy(model)  # the plain timm loop: the same module and weights, nothing else
    if not compile and served is model:  # vit predict / eval's speed choices (inductor makes its own fusions)
        from vitcli import accel

        log(f"vitcli side: {accel.prepare(model, rt, 'inference').describe()} (vitcli.accel.prepare)")
    if compile:
        from vitcli.accel.compiled import use_cache

        use_cache()  # inductor's artefacts in vitcli's cache: a second run compiles from them
    ours = torch.compile(served) if compile else served

    def ours_step():
        with torch.inference_mode(), rt.autocast():
            ours(x)

    def timm_step():
        with torch.no_grad(), rt.autocast():  # a script would autocast for bf16 too
            baseline(x)

    a = Side("vitcli", ours_step, rt.device, batch_size)
    b = Side("timm", timm_step, rt.device, batch_size)
    sides = [a, b, ceiling_side]
    if rt.precision != "fp32":  # the loop a user runs by default: timm, fp32, no autocast

        def timm_fp32_step():
            with torch.no_grad():
                baseline(x)

        sides.append(Side("timm fp32", timm_fp32_step, rt.device, batch_size))
    log(
        f"inference: {warmup} warm-up + {iters} timed batches of {batch_size} per side, alternating, "
        "with the GEMM ceiling probe" + (" and the plain fp32 loop" if len(sides) > 3 else "")
    )
    start = time.perf_counter()
    with freezing(compile and rt.device.type == "cpu"):  # weights as constants: prepacked, bias/GELU fused
        a.run(max(warmup, 1 if compile else 0), record=False)  # compiles on the first call
    compile_s = time.perf_counter() - start if compile else None
    for side in sides[1:]:
        side.run(warmup if side is not ceiling_side else 1, record=False)
    alternate(sides, iters, rounds)

    train_sides = None
    if train:
        from vitcli.bench.training import train_phase

        train_sides = train_phase(model, baseline, x, rt, iters, warmup, rounds, compile, ceiling_side, log)
    ceiling = ceiling_gflop_s(ceiling_side, probe.flops)
    if rt.device.type == "cpu" and rt.precision == "fp32":
        faster = bf16_speedup(probe, rt.device, ceiling)
        if faster and faster >= 1.3:
            notes.append(
                f"bf16 matrix multiplies run {faster:.1f}x faster than fp32 on this CPU: "
                + (
                    "--precision auto (the default) uses bf16 here"
                    if cpu_bf16_verdict().get("bf16")
                    else "try --precision bf16"
                )
            )
    ran = getattr(getattr(served, "onnx", None), "precision", None) or rt.precision  # an int8 / fp16 file: its own
    result = BenchResult(
        spec,
        loaded.architecture,
        batch_size,
        h,
        str(rt.device),
        ran,
        threads,
        compile,
        params_m,
        flops / 1e9,
        ceiling,
        max(best, ceiling),
        a.figures(flops, ceiling),
        b.figures(flops, ceiling),
        compile_s=compile_s,
        notes=notes,
    )
    if len(sides) > 3:
        result.timm_fp32_inference = sides[3].figures(flops, 0.0)  # no share: the ceiling is the run's dtype's
    if train_sides is not None:
        ta, tb, tfp32, train_flops = train_sides
        result.train_gflop_per_img = train_flops / 1e9
        result.train = ta.figures(train_flops, ceiling)
        result.timm_train = tb.figures(train_flops, ceiling)
        if tfp32 is not None:
            result.timm_fp32_train = tfp32.figures(train_flops, 0.0)
    if rt.device.type == "cuda":
        result.measured_peak_tflops = matmul_peak_tflops(rt.device, dtype)
        peak = _gpu_peak_tflops(rt.device)
        if peak:
            result.peak_tflops = peak
            result.mfu_pct = 100 * result.inference.gflop_s / (peak * 1e3)
            if result.train is not None:
                result.train_mfu_pct = 100 * result.train.gflop_s / (peak * 1e3)
    return result


def _gpu_peak_tflops(device) -> float | None:
    import torch

    name = torch.cuda.get_device_name(device)
    for key in sorted(GPU_PEAK_TFLOPS, key=len, reverse=True):  # "H100 SXM" before "H100"
        if key in name:
            return GPU_PEAK_TFLOPS[key]
    return None


def _dtype_name(dtype) -> str:
    return str(dtype).replace("torch.", "")
