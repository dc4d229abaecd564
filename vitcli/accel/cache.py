"""The one cache of vitcli's machine measurements: what was timed, on which machine, when, and what it chose.

A speed choice that cannot be known from the CPU's flags alone (is oneDNN's fp32 GEMM faster than MKL's
here? is bf16 worth it on this CPU? is channels_last faster for this model?) is measured once, in a
fraction of a second, and kept here, so that every later run of every command makes the same choice and
gives the same answers: the first run and the hundredth agree. `vit info` prints the entries with their
dates; `vit info --clear-cache` empties the file (the next run measures again).

File: `<VIT_CACHE>/measurements.json`, {key: {"name", "machine", "measured", "verdict"}}, one entry per
(measurement name, machine key, detail). The machine key names what a CPU timing depends on: the CPU,
the torch version and the thread count.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

FILENAME = "measurements.json"


def path() -> Path:
    from vitcli import env

    return Path(env.vit_cache_dir()) / FILENAME


def cpuinfo() -> tuple[str, set]:
    """(model name, flags) from /proc/cpuinfo; ('', set()) where there is none."""
    name, flags = "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip().lower()
            if key == "model name" and not name:
                name = value.strip()
            elif key in ("flags", "features") and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return name, flags


def cpu_name() -> str:
    import platform

    return cpuinfo()[0] or platform.processor() or platform.machine()


def machine_key() -> str:
    """What a CPU measurement depends on: the CPU, the torch version and the thread count."""
    import torch

    return f"{cpu_name()}|torch {torch.__version__}|{torch.get_num_threads()} threads"


def best_ms(fns: dict, reps: int) -> dict[str, float]:
    """Each function of `fns` (name -> no-argument callable) timed `reps` times, alternating so that a
    drifting load hits all alike; the best time of each, in ms. Warm-ups are the caller's."""
    times = {name: float("inf") for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name] = min(times[name], time.perf_counter() - start)
    return {name: 1000 * t for name, t in times.items()}


def entries() -> dict:
    """Every recorded measurement (key -> entry); {} when the file is absent or unreadable."""
    try:
        data = json.loads(path().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def record(name: str, detail: str, verdict: dict) -> None:
    """Add or replace one measurement (a read-only cache is not an error: it is measured again next time)."""
    from vitcli.output import atomic_write

    data = entries()
    data[f"{name}|{machine_key()}{detail}"] = {
        "name": name,
        "machine": machine_key(),
        "detail": detail.lstrip("|"),
        "measured": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "verdict": verdict,
    }
    try:
        atomic_write(path(), json.dumps(data, indent=1))
    except OSError:
        pass


def lookup(name: str, detail: str = "") -> dict | None:
    """The recorded verdict of measurement `name` (+ `detail`) on this machine, or None."""
    entry = entries().get(f"{name}|{machine_key()}{detail}")
    verdict = entry.get("verdict") if isinstance(entry, dict) else None
    return verdict if isinstance(verdict, dict) else None


def measured(name: str, measure: Callable[[], dict], valid: Callable[[dict], bool], detail: str = "") -> dict:
    """The verdict of measurement `name` (+ `detail`) on this machine: read from the cache, or measured
    once by `measure()` and recorded."""
    verdict = lookup(name, detail)
    if verdict is None or not valid(verdict):
        verdict = measure()
        record(name, detail, verdict)
    return verdict


def clear() -> int:
    """Remove every recorded measurement; how many there were."""
    n = len(entries())
    path().unlink(missing_ok=True)
    return n
