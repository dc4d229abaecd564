"""What `vit finetune` and `vit train` do with their flags: a new run, a resumed run, or a sweep.

`configs()` resolves what would run (for --dry-run), `launch()` runs it. Flags whose value is None were
not given; their values come from the config file, else the recipe (vitcli.train.run.config.resolve).
"""

from __future__ import annotations

from pathlib import Path

from vitcli import env
from vitcli.errors import UsageError

LATEST = ("last", "latest")  # --resume last: vitcli.train.run.runs.latest_unfinished


def _flags(flags: dict) -> dict:
    from vitcli.accel.runtime import canonical

    flags = dict(flags)
    if flags.get("device") is not None:
        flags["device"] = canonical(flags["device"])  # `--device 0` is cuda:0 in the run's config
    for key in ("device", "precision"):  # "auto" is the recipe's default, not a choice of the user's
        if flags.get(key) == "auto":
            flags[key] = None
    for key in ("project", "data_dir"):
        if flags.get(key) is not None:
            flags[key] = str(flags[key])
    if env.offline():
        flags["download"] = False
    return flags


def _resume_folder(command: str, flags: dict, resume):
    """`--resume last` (or a bare --resume): the latest unfinished run of this command in --project."""
    if resume is None or str(resume) not in LATEST or Path(resume).exists():
        return resume
    from vitcli import output
    from vitcli.train.run.runs import latest_unfinished

    folder = latest_unfinished(flags.get("project") or "runs", command)
    output.info(f"resuming the latest unfinished {command} run: {folder}")
    return folder


def _is_sweep(sweep, resume) -> bool:
    from vitcli.train.sweeps.sweep_run import is_sweep_dir

    return bool(sweep) or is_sweep_dir(resume)


def configs(
    command: str,
    flags: dict,
    *,
    config_file: Path | None = None,
    resume: Path | None = None,
    sweep: list[str] | None = None,
) -> list[tuple[dict | None, object]]:
    """(setting, resolved config) of every run the flags describe; setting is None for a single run."""
    flags = _flags(flags)
    resume = _resume_folder(command, flags, resume)
    if _is_sweep(sweep, resume):
        from vitcli.train.sweeps import sweep_run

        grid = sweep_run.plan(command, flags, sweep, config_file=config_file, resume=resume)
        planned = list(zip(grid.settings, grid.configs))
    else:
        planned = [(None, _single(command, flags, config_file, resume)[0])]
    from vitcli.train.run.build import check_models

    for _, cfg in planned:  # an unknown --model or --teacher fails the dry run as it would fail the run
        check_models(cfg)
    return planned


def _single(command: str, flags: dict, config_file, resume):
    """(the resolved config, the resume point or None) of a single run."""
    from vitcli.train.run import config as configs_
    from vitcli.train.run import resume as resume_point

    if resume is None:
        return configs_.resolve(command, flags, config_file), None
    if config_file is not None:
        raise UsageError("--resume and --config both given", "a resumed run keeps its own config")
    point = resume_point.locate(command, resume)  # run.json read here, the checkpoint once when the run starts
    return resume_point.config(point, command, flags), point


def launch(
    command: str,
    flags: dict,
    *,
    config_file: Path | None = None,
    resume: Path | None = None,
    sweep: list[str] | None = None,
    stop_after: int | None = None,
):
    """Run what the flags describe: the summary dict of one run, or a vitcli.train.sweeps.sweep.SweepResult.
    stop_after: a single run saves and stops after this step, as if interrupted."""
    flags = _flags(flags)
    resume = _resume_folder(command, flags, resume)
    if _is_sweep(sweep, resume):
        if stop_after is not None:
            raise UsageError(
                "--stop-after applies to a single run, not to a sweep",
                "a sweep resumes setting by setting: interrupt it, then --resume the sweep folder",
            )
        from vitcli.train.sweeps import sweep_run

        return sweep_run.run_plan(
            command, sweep_run.plan(command, flags, sweep, config_file=config_file, resume=resume)
        )
    from vitcli.train.run import start as training

    cfg, point = _single(command, flags, config_file, resume)
    core = training.finetune if command == "finetune" else training.train
    return core(cfg, resume=point, stop_after=stop_after)
