"""What a run reports: results.csv and curves.png in every run folder (from the records of metrics.jsonl),
TensorBoard and W&B scalars with `--report-to`, a sweep's comparison plot."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import make_colour_tree
from vitcli.cli import app
from vitcli.train.report import reporting

runner = CliRunner()
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def colours(tmp_path_factory) -> Path:
    return make_colour_tree(tmp_path_factory.mktemp("colours"), {"train": 16, "val": 4, "test": 4})


def _finetune(tiny_vit_dir, colours, tmp_path, *extra):
    return runner.invoke(
        app,
        [
            "finetune",
            "--model",
            str(tiny_vit_dir),
            "--dataset",
            str(colours),
            "--recipe",
            "quick",
            "--steps",
            "6",
            "--batch-size",
            "8",
            "--eval-every",
            "3",
            "-j",
            "0",
            "--device",
            "cpu",
            "--project",
            str(tmp_path / "runs"),
            "--json",
            *extra,
        ],
    )


def _rows(run: Path) -> list[dict]:
    with open(run / "results.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_results_rows_a_row_per_logged_step_evaluation_and_test():
    records = [
        {"step": 0, "event": "probe", "cv_top1": 90.0, "l2": 0.01},
        {"step": 1, "epoch": 0.1, "loss": 2.0, "lr": 0.1, "img_s": 10.0, "grad_norm": 1.0, "seconds": 1.0},
        {"step": 2, "event": "nonfinite", "loss": float("nan")},
        {"step": 3, "epoch": 0.3, "loss": 1.5, "lr": 0.2, "img_s": 11.0, "grad_norm": 1.0, "seconds": 3.0},
        {"step": 3, "split": "minival", "top1": 50.0, "loss": 1.4, "n": 8, "seconds": 4.0},
        {"step": 6, "epoch": 0.6, "loss": 1.0, "lr": 0.0, "img_s": 12.0, "grad_norm": 1.0, "seconds": 7.0},
        {"step": 6, "split": "minival", "top1": 75.0, "loss": 0.9, "n": 8, "seconds": 8.0},
        {"step": 6, "split": "test", "top1": 70.0, "loss": 1.1, "n": 8},
    ]
    rows = reporting.results_rows(records)
    blank = dict.fromkeys(reporting.COLUMNS)
    assert rows == [
        {**blank, "step": 1, "epoch": 0.1, "train_loss": 2.0, "lr": 0.1, "img_s": 10.0, "seconds": 1.0},
        {
            **blank,
            "step": 3,
            "epoch": 0.3,
            "train_loss": 1.5,
            "lr": 0.2,
            "val_top1": 50.0,
            "val_loss": 1.4,
            "img_s": 11.0,
            "seconds": 4.0,
        },
        {
            **blank,
            "step": 6,
            "epoch": 0.6,
            "train_loss": 1.0,
            "lr": 0.0,
            "val_top1": 75.0,
            "val_loss": 0.9,
            "img_s": 12.0,
            "seconds": 8.0,
            "test_top1": 70.0,
            "test_loss": 1.1,
        },
    ]
    # the EMA's evaluation beside the model's: a row of its own at the same step
    ema = reporting.results_rows(
        records[:7] + [{"step": 6, "split": "minival", "top1": 80.0, "loss": 0.8, "weights": "ema"}]
    )
    assert [(r["step"], r["val_top1"]) for r in ema] == [(1, None), (3, 50.0), (6, 75.0), (6, 80.0)]
    assert reporting.scalars(records[1])["train/loss"] == 2.0 and reporting.scalars(records[2]) == {}
    assert reporting.scalars(records[6]) == {"val/top1": 75.0, "val/loss": 0.9}
    assert reporting.scalars(records[7]) == {"test/top1": 70.0, "test/loss": 1.1}
    assert reporting.scalars(records[0]) == {}  # the probe's record is for curves.png only
    assert reporting.backends("none") == [] and reporting.backends("tensorboard,wandb") == ["tensorboard", "wandb"]


def test_every_run_folder_has_results_csv_and_curves(tiny_vit_dir, colours, tmp_path):
    had = {m: m in sys.modules for m in ("wandb", "torch.utils.tensorboard")}
    result = _finetune(tiny_vit_dir, colours, tmp_path)
    assert result.exit_code == 0, result.output
    run = Path(json.loads(result.stdout)["run_dir"])
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if r.get("split") == "val"]
    train = {r["step"]: r for r in records if "split" not in r and "event" not in r}
    test = [r for r in records if r.get("split") == "test"]
    rows = _rows(run)
    assert list(rows[0]) == list(reporting.COLUMNS)
    # a row per logged training step (1, then every evaluation step here), per evaluation (step 0: the LP-FT
    # head, a linear probe, evaluated before any training step, a candidate too) and the final test
    assert [int(r["step"]) for r in rows] == [0, 1, 3, 6]
    assert [float(r["val_top1"]) for r in rows if r["val_top1"]] == [e["top1"] for e in evals]
    assert [int(r["step"]) for r in rows if r["val_top1"]] == [e["step"] for e in evals] == [0, 3, 6]
    assert rows[0]["train_loss"] == rows[0]["img_s"] == ""
    assert [float(r["train_loss"]) for r in rows[1:]] == [train[1]["loss"], train[3]["loss"], train[6]["loss"]]
    assert all(float(r["seconds"]) > 0 for r in rows) and all(float(r["img_s"]) > 0 for r in rows[1:])
    assert float(rows[-1]["test_top1"]) == test[0]["top1"] and all(r["test_top1"] == "" for r in rows[:-1])
    probe = [r for r in records if r.get("event") == "probe"]
    assert len(probe) == 1 and probe[0]["step"] == 0 and "l2" in probe[0]
    # the selected model on test: vit eval's per-class and confusion files
    per_class = list(csv.DictReader(open(run / "per_class.csv", newline="")))
    assert sum(int(r["support"]) for r in per_class) == test[0]["n"]
    assert sum(int(r["correct"]) for r in per_class) == round(test[0]["top1"] * test[0]["n"] / 100)
    assert (run / "confusion.png").read_bytes().startswith(PNG) and (run / "confusion_matrix.csv").is_file()
    assert (run / "curves.png").read_bytes().startswith(PNG)
    assert not list(run.glob("events.out.tfevents.*")) and not (run / "wandb").exists()
    for module, was_there in had.items():  # no backend package is imported unless asked for
        assert was_there or module not in sys.modules, module


def test_report_to_tensorboard_and_wandb(tiny_vit_dir, colours, tmp_path, monkeypatch):
    """A 6-step run: TensorBoard's EventAccumulator reads its loss and top-1 scalars; W&B (offline) logged
    the same names and the config."""
    pytest.importorskip("tensorboard")
    pytest.importorskip("wandb")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    result = _finetune(tiny_vit_dir, colours, tmp_path, "--report-to", "tensorboard,wandb")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)  # wandb wrote nothing to stdout
    run = Path(summary["run_dir"])
    assert list(run.glob("events.out.tfevents.*"))
    events = EventAccumulator(str(run))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/img_s", "val/top1", "val/loss", "test/top1"} <= tags
    assert [e.step for e in events.Scalars("val/top1")] == [0, 3, 6]  # 0: the LP-FT head
    assert [e.value for e in events.Scalars("val/top1")] == pytest.approx(
        [float(r["val_top1"]) for r in _rows(run) if r["val_top1"]]
    )
    assert [e.step for e in events.Scalars("train/loss")] == [1, 3, 6]
    assert events.Scalars("test/top1")[0].value == pytest.approx(summary["test_top1"])
    hparams = events.PluginTagToContent("hparams")
    assert any(b"lr" in content and b"report_to" in content for content in hparams.values())
    assert json.loads((run / "run.json").read_text())["config"]["report_to"] == "tensorboard,wandb"
    assert (run / "results.csv").is_file() and (run / "curves.png").read_bytes().startswith(PNG)

    logs = list((run / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(logs) == 1
    ident = json.loads((run / "run.json").read_text())["wandb_id"]
    assert logs[0].name == f"run-{ident}.wandb"
    data = logs[0].read_bytes()  # W&B's record log: the scalar names and the config are in it
    assert b"val/top1" in data and b"train/loss" in data and b"label_smoothing" in data


def test_report_to_without_its_package_is_one_line(tiny_vit_dir, colours, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed
    result = _finetune(tiny_vit_dir, colours, tmp_path, "--report-to", "wandb")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "error: --report-to wandb needs the wandb package" in result.stderr
    assert "pip install 'vitcli[wandb]'" in result.stderr
    assert not (tmp_path / "runs").exists()  # refused before any run folder was made
    bad = _finetune(tiny_vit_dir, colours, tmp_path, "--report-to", "tensorbored", "--dry-run")
    assert bad.exit_code == 2 and "is not a backend" in bad.stderr
    dry = _finetune(tiny_vit_dir, colours, tmp_path, "--report-to", "tensorboard", "--dry-run")
    assert dry.exit_code == 0 and json.loads(dry.stdout)["report_to"] == "tensorboard"
