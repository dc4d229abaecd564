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

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:  # closed whatever happens: a full disk gets its blocks back when the
            torch.save(obj, fh)  # temporary file is removed

    atomic_write(path, write)


def load(path: Path) -> dict:
    """A training state saved by `save`; UsageError when the file is anything else (damaged, cut short,
    pickled objects, not a checkpoint at all): nothing is ever unpickled beyond tensors and numbers."""
    import torch

    from vitcli.errors import UsageError
    from vitcli.output import display

    hint = "it is damaged or not a vit training state: resume from a good copy, or start the run again"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - UnpicklingError, RuntimeError (zip), EOFError, ValueError
        if isinstance(e, OSError) and e.errno is not None:
            raise
        reason = (
            "it holds pickled objects"
            if "weights_only" in str(e)
            else (str(e).strip().splitlines() or [type(e).__name__])[0][:120]
        )
        raise UsageError(f"cannot read the training state {display(path)}: {reason}", hint) from None
    return state


def load_training_state(path: Path) -> dict:
    """`load`, checked to be what `vit finetune|train --resume` continues from."""
    from vitcli.errors import UsageError
    from vitcli.output import display

    state = load(path)
    if not isinstance(state, dict) or not {"model", "optimizer", "step", "config"} <= set(state):
        raise UsageError(
            f"{display(path)} is not a vit training state", "give --resume a run folder (or its last/state.pt)"
        )
    return state


def load_model_state(model, state: dict, name: str) -> None:
    """Load a resumed state's weights into `model`, after checking that every tensor is there with its
    shape: a state saved by a run of another architecture is one line, not a size-mismatch traceback."""
    from vitcli.errors import ModelError

    own = model.state_dict()
    missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(getattr(state[k], "shape", ()))]
    if missing or extra or shapes:
        first = (
            (f"{shapes[0]} is {list(state[shapes[0]].shape)} in the state, {list(own[shapes[0]].shape)} in the model")
            if shapes
            else f"{len(missing)} tensor(s) missing, {len(extra)} unexpected"
        )
        raise ModelError(
            f"the training state does not fit the model {name} ({first}): it was saved by a run "
            "of another architecture",
            "resume the run that saved it, or start a new run",
        )
    model.load_state_dict(state)


def clean_stale(folder: Path) -> list[Path]:
    """Remove the temporary files and staging folders a killed writer left behind (any process id)."""
    import shutil

    removed = []
    folder = Path(folder)
    if folder.is_dir():
        for p in sorted(folder.rglob(f".*{TMP_MARK}*")):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
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
        "python": {"version": int(version), "state": torch.tensor(py_state, dtype=torch.int64), "gauss": gauss},
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
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
    np.random.set_state(
        (npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"], npy["cached"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        states = state["cuda"][: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(states)


def gather_rng_states(dist) -> list:
    """Every rank's `rng_state()`, in rank order (all ranks take part)."""
    state = rng_state()
    if not dist.enabled:
        return [state]
    import torch.distributed as td

    out = [None] * dist.world
    td.all_gather_object(out, state)
    return out


def outputs_finite(module, images, runtime) -> bool:
    """The module's outputs on `images` (a few training images) are finite: finite weights can still be
    too large to give a number (a run at --lr 1e9), and such a model is never saved as the run's."""
    import torch

    if images is None:
        return True
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad(), runtime.autocast():
            return bool(module(images).float().isfinite().all())
    finally:
        module.train(was_training)


def all_finite(model, optimizer) -> bool:
    """Every parameter, buffer and optimizer state is finite."""
    import torch

    tensors = [t for t in model.state_dict().values() if t.is_floating_point()]
    tensors += [
        v for s in optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor) and v.is_floating_point()
    ]
    return bool(torch.stack([t.isfinite().all() for t in tensors]).all()) if tensors else True


def pack(trainer, model_state: dict, optimizer_state: dict, rng) -> dict:
    """The training state of a vitcli.train.run.loop.Trainer that a resume reads back (Trainer.restore), format 1;
    `model_state` and `optimizer_state` as gathered on every rank (FSDP), `rng` every rank's generators."""
    import time

    t = trainer.tally
    return {
        "format": 1,
        "command": trainer.cfg.command,
        "config": trainer.cfg.to_dict(),
        "step": t.step,
        "epoch": trainer.batches.epoch,
        "pos": trainer.batches.pos,
        "accum": trainer.accum,
        "micro": trainer.micro,
        "total": trainer.total,
        "model": model_state,
        "optimizer": optimizer_state,
        "scheduler": trainer.scheduler.state_dict(),
        "scaler": trainer.scaler.state_dict() if trainer.scaler else None,
        "rng": rng,
        "best": {
            "top1": t.best_top1,
            "step": t.best_step,
            "loss": t.best_loss,
            "weights": t.best_weights,
            "stale": t.stale,
        },
        "bad_steps": t.bad_steps,
        "ema": trainer.ema.module.state_dict() if trainer.ema is not None else None,
        "images_seen": t.images_seen,
        "train_seconds": t.train_seconds,
        "elapsed": t.elapsed + time.time() - trainer.started,
        "unreadable": dict(trainer.job.source.unreadable),
        "kernels": trainer.kernels,
    }
