"""Checkpoints that survive a kill, and the random state that makes a resumed run exact.

`torch.save` straight onto the old checkpoint, killed mid-write, leaves neither the old nor the new
one (measured). So a checkpoint goes through `vitcli.output.atomic_write` (a temporary file in the same
folder, fsynced, `os.replace`d over the old one); temporary files left by a killed writer are removed
on the next start. Everything saved loads with `weights_only=True`:
random states are stored as tensors and plain numbers, never as pickled numpy objects.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from vitcli.output import TMP_MARK, atomic_write


def save(obj, path: Path) -> None:
    import torch

    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def load(path: Path) -> dict:
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


def clean_stale(folder: Path) -> list[Path]:
    """Remove temporary files a killed writer left behind (any process id)."""
    removed = []
    folder = Path(folder)
    if folder.is_dir():
        for p in folder.rglob(f".*{TMP_MARK}*"):
            if p.is_file():
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed


# ------------------------------------------------------------------------------------ random states
def rng_state() -> dict:
    """Python, numpy, torch (CPU and every CUDA device) generator states as tensors and numbers."""
    import torch

    version, py_state, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": {"version": int(version), "state": torch.tensor(py_state, dtype=torch.int64),
                   "gauss": gauss},
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    import torch

    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state((npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        states = state["cuda"][:torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(states)
