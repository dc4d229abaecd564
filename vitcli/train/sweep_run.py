"""`vit train|finetune --sweep ...`: the grid of vitcli.sweep with the training core as its runner.

Each setting is the command's flags with the swept options changed, resolved like the flags themselves
(defaults <- recipe <- config file <- flags) and trained into `<sweep folder>/<setting>/` without its
test evaluation; the winner on minival is then evaluated once on the held-out split.
"""

from __future__ import annotations

import json
from pathlib import Path

from vitcli.errors import UsageError
from vitcli.train.sweep import (STATE, Axis, Runner, SweepResult, Tester, _load_state, folder_name, grid, label,
                          parse, profile_run, render, run)

NOT_SWEEPABLE = {"name", "project", "command", "config", "resume"}


def is_sweep_dir(path) -> bool:
    return path is not None and (Path(path).expanduser() / STATE).is_file()


def _convert(command: str, key: str, value: str):
    """A sweep value as the option KEY would parse it (same type and checks as the flag)."""
    import dataclasses
    import typing

    from vitcli.train.config import CONFIGS

    cls = CONFIGS[command]
    field_name = key.replace("-", "_")
    if field_name in NOT_SWEEPABLE or field_name not in {f.name for f in dataclasses.fields(cls) if f.init}:
        raise UsageError(f"--sweep {key}: not a {command} setting",
                         "sweep an option of the command, e.g. lr, steps, token-mixer, img-size, model")
    try:  # the command-line option of that name: its own type and range checks
        import click

        ctx = click.get_current_context(silent=True)
        for param in (ctx.command.params if ctx else []):
            if param.name == field_name and isinstance(param, click.Option):
                if param.is_flag:
                    lowered = value.lower()
                    if lowered not in ("true", "false", "1", "0", "yes", "no"):
                        raise UsageError(f"--sweep {key}={value}: expected true or false")
                    return lowered in ("true", "1", "yes")
                return param.type_cast_value(ctx, value)
    except click.BadParameter as e:
        raise UsageError(f"--sweep {key}={value}: {e.message}") from None
    hint = typing.get_type_hints(cls).get(field_name)
    kinds = typing.get_args(hint) or (hint,)
    try:
        if bool in kinds:
            return value.lower() in ("true", "1", "yes")
        if int in kinds:
            return int(value)
        if float in kinds:
            return float(value)
    except ValueError:
        raise UsageError(f"--sweep {key}={value}: not a number") from None
    if any(getattr(k, "__origin__", None) is tuple or k is tuple for k in kinds):
        raise UsageError(f"--sweep {key}: a pair of values cannot be swept", "set it in a --config file")
    return value


def run_command(command: str, flags: dict, specs: list[str] | None, *, config=None, resume=None,
                dry_run: bool = False, json_out: bool = False, offline: bool = False) -> SweepResult | None:
    """The `--sweep` branch of `vit train` / `vit finetune`: resolve, run the grid, render the table."""
    from vitcli import env as hub_env
    from vitcli import output as sink
    from vitcli.train import config as recipes

    hub_env.set_offline(offline)
    flags = {k: (str(v) if k in ("project", "data_dir") and v is not None else v) for k, v in flags.items()}
    if offline:
        flags["download"] = False
    sweep_dir = None
    if resume is not None:
        if not is_sweep_dir(resume):
            raise UsageError(f"--resume {resume} is not a sweep folder (no {STATE})",
                             "resume a single run without --sweep")
        sweep_dir = Path(resume).expanduser()
        state = _load_state(sweep_dir)
        meta = state.get("meta") or {}
        if meta.get("command") not in (None, command):
            raise UsageError(f"{sweep_dir} is a {meta.get('command')} sweep",
                             f"continue it with `vit {meta.get('command')} --resume {sweep_dir}`")
        saved = dict(meta.get("flags") or {})
        from vitcli.train.run import RESUMABLE

        saved.update({k: v for k, v in flags.items() if k in RESUMABLE and v is not None})
        flags, config = saved, meta.get("config") and Path(meta["config"])
        axes = parse(specs) if specs else [Axis(k, tuple(v)) for k, v in (state.get("axes") or {}).items()]
    else:
        axes = parse(specs)
    settings = grid(axes)
    resolved = []  # validate every setting before anything trains
    for setting in settings:
        changes = {k.replace("-", "_"): _convert(command, k, v) for k, v in setting.items()}
        try:
            resolved.append(recipes.resolve(command, {**flags, **changes, "name": None}, config))
        except UsageError as e:
            raise UsageError(f"--sweep {label(setting)}: {e.message}", e.hint) from None
    if dry_run:
        for setting, cfg in zip(settings, resolved):
            sink.emit_json({"setting": setting, "config": cfg.to_dict()})
        return None

    if sweep_dir is None:
        from vitcli.train import runs

        base = resolved[0]
        sweep_dir = runs.create(base.project, command, flags.get("name"), f"{runs.default_name(base.dataset)}-sweep")
    sink.info(f"sweep {sweep_dir}: {len(settings)} setting(s) of {', '.join(a.key for a in axes)}")
    by_folder = {folder_name(s): cfg for s, cfg in zip(settings, resolved)}
    result = run(axes, sweep_dir, _core_runner(command, by_folder), tester=_tester(command, by_folder),
                 profiler=profile_run, log=sink.info, is_finished=_finished,
                 meta={"command": command, "flags": flags, "config": str(config) if config else None},
                 fatal=_fatal())
    if json_out:
        sink.emit_json(result.to_json())
    else:
        render(result)
    failed = [r for r in result.rows if r.status == "failed"]
    if result.winner is None:
        from vitcli.errors import VitError

        raise VitError(f"no setting of the sweep finished ({len(failed)} failed)",
                       f"the reasons are in the table and in {sweep_dir / 'results.md'}")
    if failed:
        sink.warn(f"{len(failed)} of {len(result.rows)} settings failed (shown in the table); the winner is "
                  "the best of the others")
    return result


def _fatal() -> tuple:
    from vitcli.train.loop import Interrupted

    return (Interrupted,)


def _finished(run_dir: Path) -> bool:
    try:
        return json.loads((Path(run_dir) / "run.json").read_text()).get("status") == "finished"
    except (OSError, ValueError):
        return False


def _core_runner(command: str, by_folder: dict) -> Runner:
    import shutil

    from vitcli.train import run as training

    core = training.finetune if command == "finetune" else training.train

    def runner(setting: dict, run_dir: Path, resume: bool) -> dict:
        if resume:
            try:
                from vitcli.train import runs

                runs.find_state(run_dir)
                summary = core(training.resume_config(command, run_dir, {}), resume=run_dir, test=False)
                return {**summary, "img_per_s": summary.get("img_s")}
            except UsageError:  # killed before its first checkpoint: start that setting again
                shutil.rmtree(run_dir)
        summary = core(by_folder[run_dir.name], run_dir=run_dir, test=False)
        return {**summary, "img_per_s": summary.get("img_s")}

    return runner


def _tester(command: str, by_folder: dict) -> Tester:
    """The winner on the held-out split: test, or val when minival chose (an ImageFolder with val/)."""

    def tester(run_dir: Path, summary: dict):
        from vitcli.data import datasets as data
        from vitcli.eval import evaluate
        from vitcli import output as sink
        from vitcli.devices import runtime
        from vitcli.models.resolver import load_model

        cfg = by_folder[run_dir.name]
        source = data.open_dataset(cfg.dataset, data_dir=cfg.data_dir and Path(cfg.data_dir),
                                   val_split=cfg.val_split, download=False)
        held = "test" if "test" in source.splits else (
            "val" if source.selection_split == "minival" and "val" in source.splits else None)
        if held is None:
            sink.info(f"[dim]{source.name} has no split held out from selection: the winner is not tested[/]")
            return None
        rt = runtime(None if cfg.device == "auto" else cfg.device, None if cfg.precision == "auto" else cfg.precision)
        loaded = load_model(str(run_dir), device=rt.device)
        result = evaluate.run(loaded, rt, evaluate.dataset_split(source, held), batch_size=min(cfg.batch_size, 256),
                              workers=cfg.workers or 0)
        if held != "test":
            sink.info(f"[dim]no test split: the winner is tested on {held}/ (minival selected it)[/]")
        return result.summary["top1"], held

    return tester
