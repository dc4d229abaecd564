"""`vit train|finetune --sweep ...`: the grid of vitcli.train.sweeps.sweep with the training core as its runner.

Each setting is the command's flags with the swept options changed, resolved like the flags themselves
(defaults <- recipe <- config file <- flags) and trained into `<sweep folder>/<setting>/` without its
test evaluation; the winner on minival is then tested once on the held-out split, by the same
evaluation a single run uses (vitcli.train.run.evaluation), so its number is that run's number.
"""

from __future__ import annotations

import json
import typing
from dataclasses import dataclass, fields
from pathlib import Path

from vitcli.errors import UsageError, VitError
from vitcli.train import files
from vitcli.train.sweeps.sweep import (
    STATE,
    Axis,
    Runner,
    SweepResult,
    Tester,
    folder_name,
    grid,
    label,
    load_state,
    parse,
    profile_run,
    run,
)

NOT_SWEEPABLE = {"name", "project", "command", "config", "resume"}


def is_sweep_dir(path) -> bool:
    return path is not None and (Path(path).expanduser() / STATE).is_file()


def convert(command: str, key: str, value: str):
    """A sweep value as the setting KEY of the command's config holds it (its type; ranges are checked
    when the setting's config is resolved, as for a flag)."""
    from vitcli.train.run.config import CONFIGS

    cls = CONFIGS[command]
    field_name = key.replace("-", "_")
    if field_name in NOT_SWEEPABLE or field_name not in {f.name for f in fields(cls) if f.init}:
        raise UsageError(
            f"--sweep {key}: not a {command} setting",
            "sweep an option of the command, e.g. lr, steps, token-mixer, img-size, model",
        )
    hint = typing.get_type_hints(cls)[field_name]
    kinds = typing.get_args(hint) or (hint,)
    if any(k is tuple or typing.get_origin(k) is tuple for k in kinds):
        raise UsageError(f"--sweep {key}: a pair of values cannot be swept", "set it in a --config file")
    if bool in kinds:
        lowered = value.lower()
        if lowered not in ("true", "false", "1", "0", "yes", "no"):
            raise UsageError(f"--sweep {key}={value}: expected true or false")
        return lowered in ("true", "1", "yes")
    try:
        if int in kinds:
            return int(value)
        if float in kinds:
            return float(value)
    except ValueError:
        raise UsageError(f"--sweep {key}={value}: not {'a whole number' if int in kinds else 'a number'}") from None
    return value


@dataclass
class SweepPlan:
    axes: list[Axis]
    settings: list[dict]
    configs: list  # the resolved RunConfig of each setting
    flags: dict  # the flags every setting starts from
    config_file: Path | None
    sweep_dir: Path | None  # None: a new sweep


def plan(command: str, flags: dict, specs: list[str] | None, *, config_file=None, resume=None) -> SweepPlan:
    """Every setting of the grid resolved (and so checked) before anything trains; a resumed sweep
    takes its axes, flags and config file from its sweep.json."""
    from vitcli.train.run import config as configs
    from vitcli.train.run.resume import RESUMABLE

    sweep_dir = None
    if resume is not None:
        if not is_sweep_dir(resume):
            raise UsageError(
                f"--resume {resume} is not a sweep folder (no {STATE})", "resume a single run without --sweep"
            )
        sweep_dir = Path(resume).expanduser()
        state = load_state(sweep_dir)
        meta = state.get("meta") or {}
        if meta.get("command") not in (None, command):
            raise UsageError(
                f"{sweep_dir} is a {meta.get('command')} sweep",
                f"continue it with `vit {meta.get('command')} --resume {sweep_dir}`",
            )
        saved = dict(meta.get("flags") or {})
        saved.update({k: v for k, v in flags.items() if k in RESUMABLE and v is not None})
        flags, config_file = saved, meta.get("config") and Path(meta["config"])
        axes = parse(specs) if specs else [Axis(k, tuple(v)) for k, v in (state.get("axes") or {}).items()]
    else:
        axes = parse(specs)
    if flags.get("name") is not None:  # the sweep folder's name: one folder under <project>/<command>/
        from vitcli.train.run.runs import check_name

        check_name(flags["name"])
    settings = grid(axes)
    resolved = []
    for setting in settings:
        changes = {k.replace("-", "_"): convert(command, k, v) for k, v in setting.items()}
        try:
            resolved.append(
                configs.with_minival(configs.resolve(command, {**flags, **changes, "name": None}, config_file))
            )
        except UsageError as e:
            raise UsageError(f"--sweep {label(setting)}: {e.message}", e.hint) from None
    return SweepPlan(axes, settings, resolved, flags, config_file, sweep_dir)


def run_plan(command: str, sweep: SweepPlan) -> SweepResult:
    """Train the grid of `sweep`, test the winner; VitError when no setting finished."""
    from vitcli import output as sink
    from vitcli.train.run import runs

    sweep_dir = sweep.sweep_dir
    if sweep_dir is None:
        base = sweep.configs[0]
        sweep_dir = runs.create(
            base.project, command, sweep.flags.get("name"), f"{runs.default_name(base.dataset)}-sweep"
        )
    else:
        runs.claim(sweep_dir)  # one process per sweep folder
    sink.info(f"sweep {sweep_dir}: {len(sweep.settings)} setting(s) of {', '.join(a.key for a in sweep.axes)}")
    by_folder = {folder_name(s): cfg for s, cfg in zip(sweep.settings, sweep.configs)}
    meta = {"command": command, "flags": sweep.flags, "config": str(sweep.config_file) if sweep.config_file else None}
    try:
        result = run(
            sweep.axes,
            sweep_dir,
            _core_runner(command, by_folder),
            tester=_tester(by_folder),
            profiler=profile_run,
            log=sink.info,
            is_finished=_finished,
            meta=meta,
            fatal=_fatal(),
        )
    finally:
        runs.release(sweep_dir)
    if result.winner is None:
        failed = [r for r in result.rows if r.status in ("failed", "diverged")]
        raise VitError(
            f"no setting of the sweep finished ({len(failed)} failed or diverged)",
            f"the reasons are in the table and in {sweep_dir / 'results.md'}",
        )
    return result


def _fatal() -> tuple:
    from vitcli.train.run.interrupts import Interrupted

    return (Interrupted,)


def _finished(run_dir: Path) -> bool:
    try:
        return json.loads((Path(run_dir) / files.RUN_JSON).read_text()).get("status") == "finished"
    except (OSError, ValueError):
        return False


def _core_runner(command: str, by_folder: dict) -> Runner:
    from vitcli.train.run import start as training

    core = training.finetune if command == "finetune" else training.train

    def runner(setting: dict, run_dir: Path, resume: bool) -> dict:
        from vitcli.train.run import resume as resume_point
        from vitcli.train.run import runs

        if resume:
            try:
                point = resume_point.locate(command, run_dir)
            except UsageError:  # killed before its first checkpoint: start that setting again, after
                runs.discard(run_dir)  # removing the files that run wrote (and only those)
            else:
                summary = core(resume_point.config(point, command), resume=point, test=False)
                return {**summary, "img_per_s": summary.get("img_s")}
        summary = core(by_folder[run_dir.name], run_dir=run_dir, test=False)
        return {**summary, "img_per_s": summary.get("img_s")}

    return runner


def _tester(by_folder: dict) -> Tester:
    """The winner on the held-out split: test, or val when minival chose (an ImageFolder with val/)."""

    def tester(run_dir: Path, summary: dict):
        from vitcli import output as sink
        from vitcli.train.run.evaluation import test_run

        tested = test_run(run_dir, by_folder[run_dir.name])
        if tested is None:
            sink.info("the dataset has no split held out from selection: the winner is not tested", style="dim")
            return None
        result, split = tested
        if split != "test":
            sink.info(f"no test split: the winner is tested on {split}/ (minival selected it)", style="dim")
        return result["top1"], split

    return tester
