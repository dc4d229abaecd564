"""Activation checkpointing on CPU: peak memory and step time of a small ViT, with and without.

Each setting runs in its own process (so one setting's freed memory never hides the other's peak):
build the model (timm, random weights), take WARMUP training steps (forward, backward, AdamW), then
STEPS timed ones; the peak is the process's peak resident set (ru_maxrss) minus its resident set just
before the first step, i.e. what the steps add: activations kept for backward, gradients, optimizer state.

    python benchmarks/grad_checkpointing.py                       # vit_small_patch16_224, 224 px, batch 32
    python benchmarks/grad_checkpointing.py --model vit_base_patch16_224 --batch 16
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys


def one(model_name: str, img: int, batch: int, steps: int, warmup: int, checkpointing: bool) -> dict:
    import resource
    import time

    import timm
    import torch

    torch.manual_seed(0)
    model = timm.create_model(model_name, pretrained=False, img_size=img, num_classes=100).train()
    model.set_grad_checkpointing(checkpointing)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x, y = torch.randn(batch, 3, img, img), torch.randint(0, 100, (batch,))

    def rss_mb() -> float:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * resource.getpagesize() / 2**20

    before = rss_mb()
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB on Linux
    return {
        "model": model_name,
        "img_size": img,
        "batch": batch,
        "grad_checkpointing": checkpointing,
        "threads": torch.get_num_threads(),
        "step_s": round(sorted(times)[len(times) // 2], 3),
        "img_s": round(batch / sorted(times)[len(times) // 2], 2),
        "peak_rss_mb": round(peak, 1),
        "added_by_steps_mb": round(peak - before, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="vit_small_patch16_224")
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--one", choices=("on", "off"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.one:
        print(json.dumps(one(a.model, a.img_size, a.batch, a.steps, a.warmup, a.one == "on")))
        return
    rows = []
    for setting in ("off", "on"):
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--model",
                a.model,
                "--img-size",
                str(a.img_size),
                "--batch",
                str(a.batch),
                "--steps",
                str(a.steps),
                "--warmup",
                str(a.warmup),
                "--one",
                setting,
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]))
    off, on = rows
    print(
        f"grad checkpointing: memory added by the steps {off['added_by_steps_mb']} -> {on['added_by_steps_mb']} MiB "
        f"({100 * (1 - on['added_by_steps_mb'] / off['added_by_steps_mb']):.0f} % less), step "
        f"{off['step_s']} -> {on['step_s']} s ({100 * (on['step_s'] / off['step_s'] - 1):+.0f} % time)"
    )


if __name__ == "__main__":
    main()
