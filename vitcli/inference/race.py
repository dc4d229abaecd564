"""Which serves a long `vit predict` with `--precision auto`: the fast-start ONNX copy or the torch model.

The ONNX copy (onnxruntime, fp32, no torch import) always wins a short job: it skips importing torch
and timm. Over many images the torch model in the precision `auto` picks (bf16 autocast on a CPU with
native bf16, with vitcli's CPU kernels) can be faster per image, or not: that depends on the CPU, the
model and onnxruntime's kernels. So when `vit download` / `vit export` make the copy (already a
10-40 s step), `measure` races the two on a batch of the model's input size, and times what a cold
start of the torch path costs (importing torch and timm in a fresh interpreter). The verdict is kept
in the copy's meta.json; `torch_pays` then decides, per job, by the number of images:

    torch when  n / onnx_img_s  >  n / torch_img_s + torch_start_s

Measured on the user's machine, once per copy; nothing here is a number of ours.
"""

from __future__ import annotations

import subprocess
import sys
import time


def measure(loaded, onnx_path, batch: int = 8, reps: int = 3) -> dict:
    """{"onnx_img_s", "torch_img_s", "torch_precision", "torch_start_s"}, or {} when it cannot be measured
    (then the copy serves every job, as it would without a race)."""
    try:
        return _measure(loaded, onnx_path, batch, reps)
    except Exception:  # noqa: BLE001 - a measurement must never cost the user the copy
        from vitcli import env

        if env.debug():
            raise
        return {}


def _measure(loaded, onnx_path, batch: int, reps: int) -> dict:
    import copy

    import torch

    from vitcli.devices import best_ms, runtime
    from vitcli.inference import kernels
    from vitcli.models.onnx import OnnxModel

    rt = runtime("cpu", "auto")
    model = copy.deepcopy(loaded.model).eval().cpu().float()
    kernels.for_inference(model, rt)
    session = OnnxModel(onnx_path)
    _, h, w = loaded.data_config["input_size"]
    x = torch.randn(batch, 3, h, w, generator=torch.Generator().manual_seed(0))
    x_np = x.numpy()

    def torch_step():
        with torch.inference_mode(), rt.autocast():
            model(x)

    steps = {"onnx": lambda: session(x_np), "torch": torch_step}
    for step in steps.values():  # warm-up: first-call allocations, oneDNN's primitive caches
        step()
    best = {name: ms / 1000 for name, ms in best_ms(steps, reps).items()}  # alternating: the same load
    return {"onnx_img_s": round(batch / best["onnx"], 2), "torch_img_s": round(batch / best["torch"], 2),
            "torch_precision": rt.precision, "torch_start_s": round(_torch_start_s(), 2)}


def _torch_start_s() -> float:
    """Seconds a fresh interpreter takes to import torch and timm (what the torch path adds to a start)."""
    start = time.perf_counter()
    try:
        subprocess.run([sys.executable, "-c", "import torch, timm"], check=True, timeout=120,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return float("inf")
    return time.perf_counter() - start


def torch_pays(verdict: dict | None, n_images: int) -> bool:
    """Whether the torch path finishes `n_images` sooner than the ONNX copy, by the recorded race."""
    try:
        onnx_s, torch_s = 1 / float(verdict["onnx_img_s"]), 1 / float(verdict["torch_img_s"])
        return n_images * (onnx_s - torch_s) > float(verdict["torch_start_s"])
    except (TypeError, KeyError, ValueError, ZeroDivisionError):
        return False
