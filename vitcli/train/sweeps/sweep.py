"""Grid sweeps that pick for you: one run folder per setting, the winner chosen on minival.

`--sweep KEY=v1,v2,...` (repeatable) names a train/finetune option and its values; the grid is the
product of all of them, in the order given. Each setting trains into its own run folder under one
sweep folder; the best minival accuracy wins (ties: the earlier setting), and only the winner is
evaluated on the test split (the paper's protocol: the test set never chooses). A failed run is
recorded as failed and the sweep goes on. `sweep.json` is rewritten after every run, so a killed sweep
resumes where it stopped: settings whose run finished are skipped, an interrupted one is resumed.

The training itself is injected (`runner`), so this module knows nothing of datasets or optimisers.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import re
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vitcli import env
from vitcli.errors import UsageError, VitError
from vitcli.output import atomic_write, dumps
from vitcli.train import files

STATE = files.SWEEP_STATE


@dataclass(frozen=True)
class Axis:
    key: str  # as the user typed it, e.g. "token-mixer"
    values: tuple[str, ...]


def parse(specs: list[str] | None) -> list[Axis]:
    """['lr=0.001,0.003', 'token-mixer=pooling,attention'] -> axes; UsageError on a bad spec."""
    axes: list[Axis] = []
    for spec in specs or []:
        key, sep, values = spec.partition("=")
        key = key.strip().lstrip("-")
        vals = tuple(v.strip() for v in values.split(",") if v.strip())
        if not sep or not key or not vals:
            raise UsageError(f"--sweep {spec!r}: expected KEY=v1,v2,...", "e.g. --sweep lr=0.001,0.003,0.01")
        if any(a.key.replace("_", "-") == key.replace("_", "-") for a in axes):
            raise UsageError(f"--sweep {key} is given twice", "list all its values in one --sweep KEY=v1,v2")
        if len(set(vals)) != len(vals):
            raise UsageError(f"--sweep {spec!r}: a value is repeated")
        axes.append(Axis(key, vals))
    return axes


def grid(axes: list[Axis]) -> list[dict[str, str]]:
    """Every combination of the axes' values, first axis slowest."""
    return [dict(zip((a.key for a in axes), combo)) for combo in itertools.product(*(a.values for a in axes))]


def label(setting: dict[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in setting.items())


def folder_name(setting: dict[str, str]) -> str:
    """A file-system-safe run folder name for a setting, e.g. `lr=0.003_token-mixer=pooling`."""
    name = "_".join(f"{k}={v}" for k, v in setting.items())
    return re.sub(r"[^A-Za-z0-9=.,+_-]", "-", name)[:200]


@dataclass
class Row:
    setting: dict[str, str]
    folder: str
    status: str = "pending"  # pending | running | ok | failed
    val_top1: float | None = None  # minival accuracy (%), selects the winner
    test_top1: float | None = None  # only for the winner
    params: int | None = None
    gflops: float | None = None
    img_per_s: float | None = None
    seconds: float | None = None
    error: str | None = None
    summary: dict = field(default_factory=dict)


@dataclass
class SweepResult:
    sweep_dir: Path
    axes: list[Axis]
    rows: list[Row]
    winner: Row | None
    table_files: list[Path]
    skipped: int = 0  # settings finished by an earlier (killed) invocation
    selection_split: str = "minival"  # what chose the winner
    test_split: str = "test"  # where the winner was tested (val/ when minival was carved from train/)

    def to_json(self) -> dict:
        return {
            "sweep_dir": str(self.sweep_dir),
            "axes": {a.key: list(a.values) for a in self.axes},
            "winner": None
            if self.winner is None
            else {
                **self.winner.setting,
                "run_dir": str(self.sweep_dir / self.winner.folder),
                "val_top1": self.winner.val_top1,
                "test_top1": self.winner.test_top1,
            },
            "selection_split": self.selection_split,
            "test_split": self.test_split,
            "runs": [_row_json(r, self.sweep_dir) for r in self.rows],
        }


def _row_json(r: Row, sweep_dir: Path) -> dict:
    d = {k: v for k, v in asdict(r).items() if k != "summary"}
    d["run_dir"] = str(sweep_dir / r.folder)
    return d


# A runner trains one setting: runner(setting, run_dir, resume) -> summary dict with at least
# val_top1 (minival, %), and when known seconds, img_per_s, params, gflops. It raises on failure.
Runner = Callable[[dict, Path, bool], dict]
# A tester gives the test top-1 (%) of a finished run's selected model, or None without a held-out split;
# or (top-1, split name) when the held-out split is not called "test".
Tester = Callable[[Path, dict], "float | tuple | None"]
# A profiler gives {"params": int, "gflops": float} for a finished run folder.
Profiler = Callable[[Path], dict]


def load_state(sweep_dir: Path) -> dict:
    """sweep.json of a sweep folder ({} when there is none, or it cannot be read)."""
    try:
        return json.loads((Path(sweep_dir) / STATE).read_text())
    except (OSError, ValueError):
        return {}


def run(
    axes: list[Axis],
    sweep_dir: Path,
    runner: Runner,
    *,
    tester: Tester | None = None,
    profiler: Profiler | None = None,
    meta: dict | None = None,
    log: Callable[[str], None] = lambda m: None,
    is_finished: Callable[[Path], bool] | None = None,
    fatal: tuple = (),
) -> SweepResult:
    """Train every setting of the grid into `sweep_dir/<setting>/`, pick the winner, test it, save tables.

    `meta` (e.g. the command and its base options) is stored in sweep.json; resuming requires the same axes.
    Exceptions of a `fatal` type (and KeyboardInterrupt) stop the sweep, leaving the setting to resume.
    """
    if not axes:
        raise UsageError("a sweep needs at least one --sweep KEY=v1,v2")
    sweep_dir = Path(sweep_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    settings = grid(axes)
    state = load_state(sweep_dir)
    axes_json = {a.key: list(a.values) for a in axes}
    if state and state.get("axes") != axes_json:
        raise UsageError(
            f"{sweep_dir} holds a different sweep ({state.get('axes')})",
            "resume it with the same --sweep values, or choose a new --name",
        )
    old_rows = {r["folder"]: r for r in state.get("rows", [])}
    rows = [Row(s, folder_name(s)) for s in settings]
    skipped = 0
    for row in rows:
        old = old_rows.get(row.folder)
        if old and old.get("status") == "ok" and (is_finished is None or is_finished(sweep_dir / row.folder)):
            for k in ("status", "val_top1", "params", "gflops", "img_per_s", "seconds", "summary"):
                setattr(row, k, old.get(k))
            skipped += 1

    def save(winner=None):
        atomic_write(
            sweep_dir / STATE,
            dumps(
                {
                    "axes": axes_json,
                    "meta": meta or {},
                    "winner": None if winner is None else winner.folder,
                    "rows": [asdict(r) for r in rows],
                },
                indent=1,
                default=str,
            ),
        )

    save()
    if skipped:
        log(f"resuming {sweep_dir}: {skipped} of {len(rows)} settings already finished")
    for i, row in enumerate(rows, 1):
        if row.status == "ok":
            continue
        run_dir = sweep_dir / row.folder
        resume = run_dir.exists() and any(run_dir.iterdir())
        log(f"[{i}/{len(rows)}] {label(row.setting)}" + (" (resuming)" if resume else ""))
        row.status, row.error = "running", None
        save()
        t0 = time.time()
        try:
            summary = dict(runner(row.setting, run_dir, resume) or {})
        except (KeyboardInterrupt, *fatal) as e:
            row.status = "pending"
            save()
            if isinstance(e, VitError):
                e.hint = f"continue the sweep with --resume {sweep_dir}"
            raise
        except Exception as e:  # noqa: BLE001 - a failed setting is a row in the table, the sweep goes on
            row.status = "diverged" if type(e).__name__ == "Diverged" else "failed"  # never a winner
            row.seconds = round(time.time() - t0, 1)
            row.error = _reason(e)
            log(f"[{i}/{len(rows)}] {label(row.setting)} failed: {row.error}")
            save()
            continue
        row.summary = summary
        row.val_top1 = _num(summary.get("val_top1"))
        if row.val_top1 is None:
            row.status, row.error = "failed", "the run reported no minival accuracy"
        else:
            row.status = "ok"
        row.seconds = _num(summary.get("seconds")) or round(time.time() - t0, 1)
        row.img_per_s = _num(summary.get("img_per_s"))
        row.params, row.gflops = summary.get("params"), _num(summary.get("gflops"))
        if profiler is not None and (row.params is None or row.gflops is None):
            try:
                prof = profiler(run_dir)
                row.params = row.params if row.params is not None else prof.get("params")
                row.gflops = row.gflops if row.gflops is not None else prof.get("gflops")
            except Exception:  # noqa: BLE001 - counts are informative only
                pass
        save()

    ok = [r for r in rows if r.status == "ok"]
    winner = max(ok, key=lambda r: r.val_top1) if ok else None  # max keeps the first of equals
    selection = next((r.summary.get("selection_split") for r in ok if r.summary.get("selection_split")), "minival")
    test_split = "test"
    if winner is not None and tester is not None:
        log(f"winner on {selection}: {label(winner.setting)} ({winner.val_top1:.2f} %); testing it")
        try:
            tested = tester(sweep_dir / winner.folder, winner.summary)
            if isinstance(tested, tuple):
                tested, test_split = tested
            winner.test_top1 = _num(tested)
        except Exception as e:  # noqa: BLE001
            log(f"test evaluation of the winner failed: {_reason(e)}")
    save(winner)
    result = SweepResult(sweep_dir, axes, rows, winner, [], skipped, selection, test_split)
    result.table_files = write_tables(result)
    return result


def _num(v):
    try:
        return None if v is None or not math.isfinite(float(v)) else float(v)  # NaN never compares, never wins
    except (TypeError, ValueError):
        return None


def _reason(e: BaseException) -> str:
    if isinstance(e, VitError):
        return e.message
    text = str(e).strip().splitlines()
    if env.debug():
        traceback.print_exception(type(e), e, e.__traceback__)
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


# ---------------------------------------------------------------------------------------------
# The comparison table (shared by the terminal, results.md and results.csv).

COLUMNS = ("setting", "minival", "test", "params (M)", "GFLOPs", "img/s", "time (s)", "status")


def columns(result: SweepResult) -> list[str]:
    """COLUMNS with the selection and held-out splits named as they were (e.g. val instead of test)."""
    names = {"minival": result.selection_split, "test": result.test_split}
    if result.test_split == result.selection_split:
        names["test"] = f"{result.test_split} (test)"
    return [names.get(c, c) for c in COLUMNS]


def table_rows(result: SweepResult, reasons: bool = True) -> list[list[str]]:
    out = []
    for r in result.rows:
        win = r is result.winner
        out.append(
            [
                label(r.setting) + (" *" if win else ""),
                f"{r.val_top1:.2f}" if r.val_top1 is not None else "-",
                f"{r.test_top1:.2f}" if r.test_top1 is not None else "-",
                f"{r.params / 1e6:.2f}" if r.params is not None else "-",
                f"{r.gflops:.3f}" if r.gflops is not None else "-",
                f"{r.img_per_s:.0f}" if r.img_per_s is not None else "-",
                f"{r.seconds:.0f}" if r.seconds is not None else "-",
                f"{r.status}: {r.error}" if r.status in ("failed", "diverged") and reasons else r.status,
            ]
        )
    return out


def write_tables(result: SweepResult) -> list[Path]:
    rows = table_rows(result)
    md = result.sweep_dir / files.SWEEP_TABLE
    lines = ["| " + " | ".join(columns(result)) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in rows]
    if result.winner is not None:
        lines += ["", f"\\* winner on {result.selection_split}: {label(result.winner.setting)}"]
    atomic_write(md, "\n".join(lines) + "\n")
    buffer = io.StringIO()
    w = csv.writer(buffer)
    w.writerow(
        [
            "setting",
            *result.rows[0].setting.keys(),
            "val_top1",
            "test_top1",
            "params",
            "gflops",
            "img_per_s",
            "seconds",
            "status",
            "error",
            "winner",
            "run_dir",
        ]
        if result.rows
        else []
    )
    for r in result.rows:
        w.writerow(
            [
                label(r.setting),
                *r.setting.values(),
                r.val_top1,
                r.test_top1,
                r.params,
                r.gflops,
                r.img_per_s,
                r.seconds,
                r.status,
                r.error or "",
                r is result.winner,
                str(result.sweep_dir / r.folder),
            ]
        )
    from vitcli.train.report.reporting import write_sweep_plot

    return [
        md,
        atomic_write(result.sweep_dir / files.RESULTS, buffer.getvalue()),
        write_sweep_plot(result, [label(r.setting) for r in result.rows]),
    ]


# ---------------------------------------------------------------------------------------------
# Helpers for runners


def profile_run(run_dir: Path) -> dict:
    """Params and GFLOPs of a run folder's model, counted on the meta device from its config.json."""
    from vitcli.models import zoo
    from vitcli.models.folder import model_folder

    folder = model_folder(Path(run_dir))
    if folder is None:
        return {}
    cfg = json.loads((folder / files.CONFIG).read_text())
    args = dict(cfg.get("model_args") or {})
    args.setdefault("num_classes", cfg.get("num_classes"))
    entry = zoo.profile(cfg["architecture"], **{k: v for k, v in args.items() if v is not None})
    return {"params": entry.params, "gflops": entry.gflops}
