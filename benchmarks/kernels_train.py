"""Side by side: training steps with and without vitcli's oneDNN training linears (vitcli.accel.kernels).

The same model twice (deep copies, same weights), fused SGD on both, alternating in rounds so that a
noisy machine slows both alike; the median step time of each. vitcli keeps the training half of the
kernels only where this shows >= 1.1x (issue "One house"); the verdict vitcli uses at run time is its own
one-time measurement on the user's machine (kernels.faster_here), not this file.

    python benchmarks/kernels_train.py > benchmarks/kernels_train.txt
"""

from __future__ import annotations

import copy
import platform
import time

import timm
import torch
import torch.nn.functional as F

from vitcli.accel import kernels


def cpu_name() -> str:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main() -> None:
    print(f"{cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}, timm {timm.__version__}")
    torch.manual_seed(0)
    for name, bs in (("vit_tiny_patch16_224", 32), ("vit_small_patch16_224", 16)):
        base = timm.create_model(name, num_classes=37)
        models = {"eager": copy.deepcopy(base).train(), "vitcli": copy.deepcopy(base).train()}
        kernels.fuse(models["vitcli"])
        opts = {k: torch.optim.SGD(m.parameters(), lr=1e-4, momentum=0.9, fused=True) for k, m in models.items()}
        x, y = torch.randn(bs, 3, 224, 224), torch.randint(0, 37, (bs,))

        def step(k):
            loss = F.cross_entropy(models[k](x), y)
            loss.backward()
            opts[k].step()
            opts[k].zero_grad(set_to_none=True)

        for k in models:
            step(k)
        times = {k: [] for k in models}
        for r in range(6):
            for k in ("eager", "vitcli") if r % 2 == 0 else ("vitcli", "eager"):
                start = time.perf_counter()
                step(k)
                step(k)
                times[k].append((time.perf_counter() - start) / 2)
        med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
        print(
            f"{name} batch {bs}: eager {bs / med['eager']:.2f} img/s, vitcli kernels {bs / med['vitcli']:.2f} "
            f"img/s, ratio {med['eager'] / med['vitcli']:.2f}x",
            flush=True,
        )


if __name__ == "__main__":
    main()
