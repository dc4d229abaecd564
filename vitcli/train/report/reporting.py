"""What a training run reports, from one stream of records: metrics.jsonl, results.csv, curves.png and,
with `--report-to`, the scalars of TensorBoard or Weights & Biases.

The loop hands every record to one `Reporter` (`log`), as it used to hand them to metrics.jsonl:

    {"step": 40, "epoch": 1.3, "loss": 0.61, "lr": 0.002, "grad_norm": 0.8, "img_s": 21.0, ...}   a log step
    {"step": 40, "split": "minival", "top1": 91.7, "loss": 0.33, "n": 36, "seconds": 12.5, ...}   an evaluation
    {"step": 40, "event": "nonfinite", ...}                                                          a skipped update

`runs.Metrics` appends each to metrics.jsonl; results.csv (a row per logged step: every `log_every` steps,
every evaluation and the final test) and curves.png are derived from that file, so they are the same
numbers, also after a resume. The
backends get the same records as scalars: train/loss, train/lr, train/img_s, train/grad_norm and
val/top1, val/loss (the selection split, minival or val), test/top1, test/loss; the resolved config goes
to TensorBoard's hparams and W&B's config. A backend's package is imported only when it is asked for;
`require` says which extra to install when it is missing.

    runs/finetune/pets-3/
      results.csv                     step, epoch, train_loss, lr, val_top1, val_loss, img_s, seconds,
                                      test_top1, test_loss (a row per logged step, evaluation, test)
      curves.png                      loss, top-1 and learning rate against step
      confusion.png, per_class.csv    the selected model on test (vitcli.train.report.reporting)
      events.out.tfevents.*           --report-to tensorboard (tensorboard --logdir runs/finetune)
      wandb/                          --report-to wandb (WANDB_MODE=offline: `wandb sync` it later)
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from vitcli.errors import UsageError, VitError
from vitcli.output import atomic_write
from vitcli.train.files import CONFIG, CURVES, METRICS, RESULTS, SWEEP_PLOT
from vitcli.train.run import runs

BACKENDS = {"tensorboard": ("tensorboard", "tensorboard"), "wandb": ("wandb", "wandb")}  # name: (module, extra)
COLUMNS = ("step", "epoch", "train_loss", "lr", "val_top1", "val_loss", "img_s", "seconds", "test_top1", "test_loss")
TRAIN_SCALARS = ("loss", "lr", "img_s", "grad_norm", "epoch")


# ---------------------------------------------------------------------------------------- choices
def backends(report_to: str | None) -> list[str]:
    """`--report-to`: none, tensorboard, wandb, or several joined by commas (all: both)."""
    names = [n.strip().lower() for n in str(report_to or "none").split(",") if n.strip()]
    if names == ["all"]:
        return list(BACKENDS)
    if names == ["none"] or not names:
        return []
    unknown = [n for n in names if n not in BACKENDS]
    if unknown:
        raise UsageError(
            f"--report-to {unknown[0]!r} is not a backend", "use tensorboard, wandb, both (tensorboard,wandb) or none"
        )
    return list(dict.fromkeys(names))


def require(name: str):
    """The backend's package, imported; a one-line error naming the extra when it is not installed."""
    import importlib

    module, extra = BACKENDS[name]
    try:
        return importlib.import_module(module)
    except ImportError:
        raise VitError(
            f"--report-to {name} needs the {module} package, which is not installed", f"pip install 'vitcli[{extra}]'"
        ) from None


def check(report_to: str | None) -> None:
    """Before a run starts: every backend asked for can be imported."""
    for name in backends(report_to):
        require(name)


# ---------------------------------------------------------------------------------------- records
def read_records(run_dir: Path) -> list[dict]:
    """metrics.jsonl of a run folder (a line cut by a kill is left out)."""
    path = Path(run_dir) / METRICS
    records = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def is_train(record: dict) -> bool:
    return "split" not in record and "event" not in record and "loss" in record


def is_selection(record: dict) -> bool:
    return record.get("split") in ("minival", "val") and "top1" in record


def is_test(record: dict) -> bool:
    return record.get("split") == "test" and "top1" in record


def results_rows(records: list[dict]) -> list[dict]:
    """A row per step with a training record (every `log_every` steps), an evaluation of the selection
    split or the final test, in step order; what one step logged shares its row. The EMA's evaluation
    beside the model's (the same step) gets a row of its own."""
    rows: list[dict] = []
    by_step: dict[int, dict] = {}

    def row(step: int, fresh: bool = False) -> dict:
        if fresh or step not in by_step:
            by_step[step] = dict.fromkeys(COLUMNS)
            by_step[step]["step"] = step
            rows.append(by_step[step])
        return by_step[step]

    for record in records:
        step = record.get("step")
        if step is None:
            continue
        if is_train(record):
            r = row(step)
            r.update(
                epoch=record.get("epoch"), train_loss=record.get("loss"), lr=record.get("lr"), img_s=record.get("img_s")
            )
            if record.get("seconds") is not None:
                r["seconds"] = record["seconds"]
        elif is_selection(record):
            r = row(step, fresh=step in by_step and by_step[step]["val_top1"] is not None)
            r.update(val_top1=record.get("top1"), val_loss=record.get("loss"))
            if record.get("seconds") is not None:
                r["seconds"] = record["seconds"]
        elif is_test(record):
            row(step).update(test_top1=record.get("top1"), test_loss=record.get("loss"))
    return sorted(rows, key=lambda r: r["step"])  # stable: the EMA's row stays after the model's


def write_results(run_dir: Path, records: list[dict] | None = None) -> Path:
    records = read_records(run_dir) if records is None else records
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in results_rows(records):
        writer.writerow(["" if row[c] is None else row[c] for c in COLUMNS])
    return atomic_write(Path(run_dir) / RESULTS, buffer.getvalue())


def write_curves(run_dir: Path, records: list[dict] | None = None) -> Path:
    from vitcli.train.report.curves import run_curves

    records = read_records(run_dir) if records is None else records
    probe = next((r for r in records if r.get("event") == "probe"), None)
    return run_curves(
        [r for r in records if is_train(r)],
        [r for r in records if is_selection(r)],
        [r for r in records if is_test(r)],
        Path(run_dir) / CURVES,
        title=Path(run_dir).name,
        probe=probe,
    )


def write_confusion(run_dir: Path, confusion, split: str) -> list[Path]:
    """per_class.csv, confusion_matrix.csv and confusion.png of the run's kept model (its class names are
    the label names saved with it, config.json)."""
    from vitcli.eval.reports import write_confusion as write

    names = json.loads((Path(run_dir) / CONFIG).read_text()).get("label_names")
    names = names if names and len(names) == len(confusion) else [str(i) for i in range(len(confusion))]
    return write(confusion, names, run_dir, title=f"{Path(run_dir).name}: {split}")


def log_probe(run_dir: Path, probe: dict) -> None:
    """The LP-FT probe's fit as metrics.jsonl's first record (step 0; curves.png draws its cross-validated
    top-1), without its speed, so that runs that differ only in a feature cache log the same lines."""
    metrics = runs.Metrics(Path(run_dir))
    metrics.log({"step": 0, "event": "probe", **{k: v for k, v in probe.items() if not k.endswith("img_s")}})
    metrics.close()


def write_sweep_plot(result, labels: list[str]) -> Path:
    """results.png of a sweep (a vitcli.train.sweeps.sweep.SweepResult, its settings' labels): each run's
    selection-split curve from its own metrics.jsonl, and its best top-1."""
    from vitcli.train.report.curves import sweep_plot

    settings = [
        {
            "label": text,
            "curve": [r for r in read_records(result.sweep_dir / row.folder) if is_selection(r)],
            "best": row.val_top1,
            "failed": row.status == "failed",
            "winner": row is result.winner,
            "test": row.test_top1,
        }
        for row, text in zip(result.rows, labels)
    ]
    return sweep_plot(settings, result.selection_split, result.sweep_dir / SWEEP_PLOT)


def scalars(record: dict) -> dict[str, float]:
    """The backend scalars of one record (none for a skipped update)."""
    if is_train(record):
        return {f"train/{k}": float(record[k]) for k in TRAIN_SCALARS if record.get(k) is not None}
    split = record.get("split")
    if split is None or "top1" not in record:
        return {}
    prefix = "test" if split == "test" else "val"
    return {f"{prefix}/{k}": float(record[k]) for k in ("top1", "loss") if record.get(k) is not None}


# ---------------------------------------------------------------------------------------- backends
def _hparam(value):
    if isinstance(value, (bool, int, float, str)):
        return value
    return "none" if value is None else json.dumps(value)


class TensorBoard:
    """Event files in the run folder itself, so `tensorboard --logdir runs/finetune` names each run by its
    folder; a resumed run drops the events written after its checkpoint (purge_step)."""

    def __init__(self, run_dir: Path, cfg, resume_step: int | None):
        require("tensorboard")
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        self.writer = SummaryWriter(log_dir=str(run_dir), purge_step=None if resume_step is None else resume_step + 1)
        values = {k: _hparam(v) for k, v in {"command": cfg.command, **cfg.to_dict()}.items()}
        self.summaries = hparams(values, {"val/top1": 0.0, "val/loss": 0.0, "test/top1": 0.0})
        self.writer.file_writer.add_summary(self.summaries[0])  # the experiment: hparam and metric names
        self.writer.file_writer.add_summary(self.summaries[1])  # this run's values

    def log(self, step: int, values: dict) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def close(self) -> None:
        self.writer.file_writer.add_summary(self.summaries[2])  # session end
        self.writer.close()


class WandB:
    """A W&B run whose files are in the run folder (wandb/); a resumed run continues the same W&B run.
    WANDB_MODE (offline, disabled) and WANDB_PROJECT are wandb's own; --offline means offline here too."""

    def __init__(self, run_dir: Path, cfg, resume_step: int | None):
        import uuid

        from vitcli import env

        wandb = require("wandb")
        ident = runs.read_run_json(run_dir).get("wandb_id") or uuid.uuid4().hex[:12]
        runs.write_run_json(run_dir, wandb_id=ident)
        self.run = wandb.init(
            dir=str(run_dir),
            name=Path(run_dir).name,
            id=ident,
            resume="allow",
            job_type=cfg.command,
            config={"command": cfg.command, **cfg.to_dict()},
            mode="offline" if env.offline() else None,
        )

    def log(self, step: int, values: dict) -> None:
        self.run.log(values, step=step)

    def close(self) -> None:
        self.run.finish()


SINKS = {"tensorboard": TensorBoard, "wandb": WandB}


# ---------------------------------------------------------------------------------------- reporter
class Reporter:
    """The one place a run's records go (rank 0 only; `enabled=False` on the other ranks)."""

    def __init__(self, run_dir: Path, cfg, *, resume_step: int | None = None, enabled: bool = True):
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.metrics = runs.Metrics(self.run_dir, resume_step=resume_step, enabled=enabled)
        self.sinks = []
        if enabled:
            try:
                self.sinks = [SINKS[name](self.run_dir, cfg, resume_step) for name in backends(cfg.report_to)]
            except BaseException:
                self.close()
                raise

    def __enter__(self) -> Reporter:
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        if "confusion" in record:  # the kept model on test: vit eval's per-class and confusion files
            record = dict(record)
            write_confusion(self.run_dir, record.pop("confusion"), record.get("split", "test"))
        self.metrics.log(record)
        values = scalars(record)
        if values:
            for sink in self.sinks:
                sink.log(int(record["step"]), values)
        if is_train(record) or is_selection(record) or is_test(record):
            write_results(self.run_dir)  # up to date after every record, even if the run is killed later

    def close(self) -> None:
        """Close metrics.jsonl and the backends; write results.csv and curves.png."""
        if not self.enabled:
            return
        self.enabled = False
        self.metrics.close()
        try:
            records = read_records(self.run_dir)
            write_results(self.run_dir, records)
            if records:
                write_curves(self.run_dir, records)
        finally:
            for sink in self.sinks:
                sink.close()
