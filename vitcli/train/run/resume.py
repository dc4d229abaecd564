"""Resuming a run: the one path from `--resume FOLDER` to the run's config and its training state.

    point = locate("finetune", "runs/finetune/pets-1")   # the folder, its state file, what the run was
    cfg = config(point, "finetune", {"steps": 2000})       # its saved config, with what a resume may change
    state = load_state(point, "finetune")                  # the checkpoint, read once, when the run starts

`locate` reads run.json (command and resolved config), not the checkpoint; only a run folder without them
(an old one) has its checkpoint read there, and then `load_state` reuses that read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vitcli.errors import UsageError
from vitcli.train import files
from vitcli.train.run import runs
from vitcli.train.run.config import RunConfig, from_dict

# settings a resumed run may change; everything else is the run's recipe
RESUMABLE = (
    "steps",
    "epochs",
    "workers",
    "device",
    "precision",
    "eval_every",
    "save_every",
    "log_every",
    "max_bad_steps",
    "report_to",
)


@dataclass(frozen=True)
class ResumePoint:
    """A run folder given to --resume: where it is, its state file, the config it ran."""

    given: str  # the folder as the user gave it, for messages
    run_dir: Path
    state_path: Path
    config: dict
    state: dict | None = None  # the checkpoint, when run.json lacked the config and it had to be read


def locate(command: str, run: str | Path) -> ResumePoint:
    """The run folder `run` of `command` with its saved state (a UsageError when there is none, or when it
    is another command's run)."""
    state_path = runs.find_state(run)
    run_dir = state_path.parent.parent if state_path.parent.name == files.STATE.parent.name else state_path.parent
    record = runs.read_run_json(run_dir)
    saved, made_by, state = record.get("config"), record.get("command"), None
    if saved is None:
        state = _read(state_path)
        saved, made_by = state["config"], state.get("command")
    _check_command(made_by, command, run)
    return ResumePoint(str(run), run_dir, state_path, saved, state)


def config(point: ResumePoint, command: str, changes: dict | None = None) -> RunConfig:
    """The run's saved config with the settings a resumed run may change (`changes`: flags, None = not given)."""
    cfg = from_dict(command, point.config)
    changes = {k: v for k, v in (changes or {}).items() if v is not None}
    fixed = sorted(k for k, v in changes.items() if k not in RESUMABLE and _differs(getattr(cfg, k, None), v))
    if fixed:
        raise UsageError(
            f"--resume keeps the run's recipe; cannot change {', '.join(fixed)}",
            f"a resumed run may change only {', '.join(RESUMABLE)}; start a new run otherwise",
        )
    changes = {k: v for k, v in changes.items() if k in RESUMABLE}
    if changes.get("steps") is not None:
        changes["epochs"] = None
    elif changes.get("epochs") is not None:
        changes["steps"] = None
    return cfg.replace(**changes)


def load_state(point: ResumePoint, command: str) -> dict:
    """The training state the run continues from (model, optimizer, step, RNG states, ...)."""
    state = point.state if point.state is not None else _read(point.state_path)
    _check_command(state.get("command"), command, point.given)
    return state


def _read(path: Path) -> dict:
    from vitcli.train.run import checkpoint

    return checkpoint.load_training_state(path)


def _check_command(made_by: str | None, command: str, run) -> None:
    if made_by not in (None, command):
        raise UsageError(
            f"--resume {run} is a {made_by} run, not a {command} run",
            f"continue it with `vit {made_by} --resume {run}`",
        )


def _differs(a, b) -> bool:
    return (list(a) if isinstance(a, tuple) else a) != (list(b) if isinstance(b, tuple) else b)
