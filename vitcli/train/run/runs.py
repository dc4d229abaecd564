"""Run folders: `runs/<command>/<name>`, what a training run leaves behind (the file names, and what each
holds: vitcli.train.files): created and claimed, written, found again by `--resume`.

Only the process of rank 0 writes here.
"""

from __future__ import annotations

import errno
import json
import os
import platform
import re
import shutil
import sys
import time
from pathlib import Path

from vitcli.errors import UsageError, VitError
from vitcli.output import TMP_MARK, atomic_write, dumps
from vitcli.train.files import CONFIG, METRICS, OLD_STATE, OWN_FILES, RUN_JSON, STATE, WEIGHTS


def default_name(dataset: str) -> str:
    base = Path(dataset.rstrip("/")).name or "run"
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", base).strip("-") or "run"


def check_name(name, origin: str = "--name") -> str:
    """A run name is one folder name under `<project>/<command>/`: never a path (`../x`, `/tmp/x`, `a/b`),
    so a run (and the cleanup of an abandoned one) never reaches outside the project."""
    if (
        not isinstance(name, str)
        or name in ("", ".", "..")
        or any(c in name for c in "/\\\0")
        or len(name.encode("utf-8", "surrogateescape")) > 200
    ):
        raise UsageError(
            f"{origin} {name!r}: a run name must be one folder name (no '/', not '..', not empty)",
            "use letters, digits, '-', '_' or '.'; --project chooses where runs go",
        )
    return name


def create(project: str | Path, command: str, name: str | None, dataset: str) -> Path:
    """A new, empty run folder, claimed by this process: `--name` as given, else `<dataset>-<n>` with the
    first free n."""
    parent = Path(project).expanduser() / command
    parent.mkdir(parents=True, exist_ok=True)
    if name is not None:
        return create_at(parent / check_name(name))
    base = default_name(dataset)
    n = 1
    while True:
        folder = parent / f"{base}-{n}"
        try:
            folder.mkdir()
        except FileExistsError:
            n += 1
            continue
        claim(folder)
        return folder


def create_at(folder: Path) -> Path:
    """Exactly this run folder (`--name`, a sweep's runs), claimed by this process: new, empty, or left by
    a run that was stopped before it saved anything (no training state, no model: it starts again there,
    after the files vitcli wrote are removed; nothing else is ever deleted). A folder another live process
    holds is refused (`claim`)."""
    folder = Path(folder).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    claim(folder)
    try:
        entries = {p.name for p in folder.iterdir()}
        if entries:
            last = folder / STATE.parent
            left = entries - set(OWN_FILES) - {STATE.parent.name}
            in_last = [p for p in last.iterdir() if TMP_MARK not in p.name] if last.is_dir() else []
            if left or in_last or not (folder / RUN_JSON).is_file():
                raise UsageError(
                    f"run folder {folder} already exists", f"continue it with --resume {folder}, or pick another --name"
                )
            # the run never reached a checkpoint: remove what it wrote, and only that
            for p in [*(last.iterdir() if last.is_dir() else []), *(folder / n for n in OWN_FILES)]:
                p.unlink(missing_ok=True)
            if last.is_dir():
                last.rmdir()
    except BaseException:
        release(folder)
        raise
    return folder


def discard(folder: Path) -> None:
    """Remove the files a run writes (its records, model and training state, temporaries) from `folder`,
    and the folder once empty; anything else stays (and `create_at` then refuses the folder)."""
    folder = Path(folder)
    for name in (*OWN_FILES, WEIGHTS, CONFIG, str(STATE)):
        (folder / name).unlink(missing_ok=True)
    for tmp in [*folder.glob(f".*{TMP_MARK}*"), *folder.glob(f"{STATE.parent.name}/.*{TMP_MARK}*")]:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
    for empty in (folder / STATE.parent, folder):
        try:
            empty.rmdir()
        except OSError:
            pass


_CLAIMS: dict[str, int] = {}


def claim(folder: Path) -> None:
    """Hold `folder` for this process: an exclusive, non-blocking lock on the folder itself (flock), which
    the kernel drops when the process ends however it ends. A second run of the same name while the first
    is alive is refused (exit 1), never given the same folder. `release` lets go."""
    key = os.path.realpath(folder)
    if key in _CLAIMS:
        return
    try:
        import fcntl
    except ImportError:  # Windows: no flock; folders are still created exclusively
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise VitError(
            f"run folder {folder} is in use by another vit process", "wait for that run to end, or pick another --name"
        ) from None
    _CLAIMS[key] = fd


def release(folder: Path | None) -> None:
    fd = _CLAIMS.pop(os.path.realpath(folder), None) if folder is not None else None
    if fd is not None:
        os.close(fd)


def find_state(run: str | Path) -> Path:
    """The training state of a run folder given to --resume."""
    run = Path(run).expanduser()
    for candidate in (run / STATE, run / OLD_STATE, run):
        if candidate.is_file():
            return candidate
    if not run.exists():
        raise UsageError(f"--resume {run}: no such run folder")
    raise UsageError(
        f"--resume {run}: the run has no saved training state ({STATE})",
        "it stopped before its first checkpoint: start it again with the same --name (the folder is reused)",
    )


def versions() -> dict:
    import timm
    import torch

    out = {
        "vitcli": __import__("vitcli").__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
    }
    try:
        import torchvision

        out["torchvision"] = torchvision.__version__
    except ImportError:
        pass
    return out


def environment(runtime, world_size: int) -> dict:
    import torch

    env = {
        "platform": platform.platform(),
        "backend": "torch",
        "device": str(runtime.device),
        "precision": runtime.precision,
        "world_size": world_size,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "argv": sys.argv,
    }
    if runtime.device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(runtime.device)
    return env


def write_run_json(folder: Path, **fields) -> None:
    """Merge `fields` into run.json (written atomically)."""
    path = Path(folder) / RUN_JSON
    data = {}
    if path.is_file():
        try:
            data = json.loads(path.read_text())
        except ValueError:
            data = {}
    data.update(fields)
    text = dumps(data, indent=2, default=str)
    try:
        atomic_write(path, text)
    except OSError as e:
        compact = dumps(data, default=str).encode("utf-8")
        if e.errno not in (errno.ENOSPC, errno.EDQUOT) or not path.is_file() or len(compact) > path.stat().st_size:
            raise
        with open(path, "r+b") as fh:  # a full disk: into the blocks run.json already has (never longer)
            fh.write(compact)
            fh.truncate()


def read_run_json(folder: Path) -> dict:
    try:
        return json.loads((Path(folder) / RUN_JSON).read_text())
    except (OSError, ValueError):
        return {}


def save_model(folder: Path, model, label_names: list[str], vitcli_block: dict) -> None:
    """The model in Hub layout at the root of the run folder: timm writes it into a staging folder, then
    the weights and config.json are moved into place whole (weights first), so a reader never sees a
    half-written file."""
    from timm.models import save_for_hf

    folder = Path(folder)
    staging = folder / f".model{TMP_MARK}{os.getpid()}"
    staging.mkdir(parents=True, exist_ok=True)
    try:
        multi = {"multi_label": True} if (vitcli_block.get("config") or {}).get("multi_label") else {}
        save_for_hf(
            model,
            str(staging),
            model_config={"label_names": list(label_names), **multi, "vitcli": vitcli_block},
            safe_serialization=True,
        )
        umask = os.umask(0)
        os.umask(umask)
        for name in (WEIGHTS, CONFIG):
            os.chmod(staging / name, 0o666 & ~umask)  # safetensors writes 0600; a model is meant to be shared
            atomic_write(folder / name, lambda tmp: os.replace(staging / name, tmp))
    finally:  # a full disk or a kill: the previous model stays whole, the staging folder goes
        shutil.rmtree(staging, ignore_errors=True)


class Metrics:
    """metrics.jsonl: appended and flushed line by line; a resumed run first drops the lines written
    after its checkpoint, so its file reads like the uninterrupted run's."""

    def __init__(self, folder: Path, resume_step: int | None = None, enabled: bool = True):
        self.path = Path(folder) / METRICS
        self.enabled = enabled
        self.fh = None
        if not enabled:
            return
        if resume_step is not None and self.path.is_file():
            kept = []
            for line in self.path.read_text().splitlines():
                try:
                    if json.loads(line).get("step", 0) <= resume_step:
                        kept.append(line)
                except ValueError:
                    continue  # a line cut by the kill
            text = "".join(k + "\n" for k in kept)
            atomic_write(self.path, text)
        self.fh = open(self.path, "a", encoding="utf-8")

    def log(self, record: dict) -> None:
        if self.fh is None:
            return
        record = {"time": round(time.time(), 3), **record}
        self.fh.write(dumps(record, default=float) + "\n")
        self.fh.flush()

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()
            self.fh = None


LATEST = ("last", "latest")  # `--resume` without a folder (the command line's bare --resume means `last`)


def latest_unfinished(project: str | Path, command: str) -> Path:
    """The run folder under `<project>/<command>/` whose training state was saved last, among the runs that
    did not finish (stopped, interrupted, failed, or killed while running): what a bare `--resume` continues."""
    parent = Path(project).expanduser() / command
    found = []
    for state in parent.glob(f"*/{STATE.as_posix()}"):
        folder = state.parent.parent
        if read_run_json(folder).get("status") == "finished":
            continue
        try:
            found.append((state.stat().st_mtime, folder))
        except OSError:
            continue
    if not found:
        raise UsageError(
            f"--resume: no unfinished {command} run with a saved training state in {parent}",
            "give the run folder: --resume runs/" + command + "/NAME, or --project where the runs are",
        )
    return max(found)[1]
