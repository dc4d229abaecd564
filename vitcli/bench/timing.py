"""Timing for `vit benchmark`: one side (vitcli's loop, timm's, the GEMM probe) timed batch by batch,
with its peak memory, and sides alternated in rounds so that a noisy machine slows all of them alike."""

from __future__ import annotations

import math
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass
class Figures:
    """One side (vitcli or timm) of one phase (inference or training)."""

    img_s: float
    latency_ms: dict  # per batch: p50, p90, p99, mean
    peak_mem_mb: float | None
    gflop_s: float
    ceiling_pct: float | None


def r(x, digits: int = 2):
    return None if x is None else round(float(x), digits)


def sync(device) -> None:
    if getattr(device, "type", "cpu") == "cuda":
        import torch

        torch.cuda.synchronize(device)


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


class Side:
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
                sync(self.device)
                if record:
                    self.latencies.append(time.perf_counter() - start)
        if cuda:
            self.cuda_peak = max(self.cuda_peak, torch.cuda.max_memory_allocated(self.device))

    def figures(self, flops_per_img: float, ceiling: float) -> Figures:
        total = sum(self.latencies)
        img_s = self.n * len(self.latencies) / total
        gflop_s = img_s * flops_per_img / 1e9
        lat = sorted(x * 1000 for x in self.latencies)
        latency = {
            "p50": r(_pct(lat, 50)),
            "p90": r(_pct(lat, 90)),
            "p99": r(_pct(lat, 99)),
            "mean": r(sum(lat) / len(lat)),
        }
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


def alternate(sides: list, iters: int, rounds: int) -> None:
    """Time the sides in alternating chunks (rotating who goes first) so drifting load hits all alike."""
    rounds = max(1, min(rounds, iters))
    chunks = [iters // rounds + (1 if i < iters % rounds else 0) for i in range(rounds)]
    for i, n in enumerate(chunks):
        order = sides[i % len(sides) :] + sides[: i % len(sides)]
        for side in order:
            side.run(n)
