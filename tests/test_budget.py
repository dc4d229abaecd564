"""Issue 25: a default fine-tune that stops when the LP-FT probe leaves nothing to gain, a dry run that
says how long a run is, run folders with the rows and figures of a run, and what a run folder already
knows reused (`vit eval --model RUN`, `--resume` without a folder).

A ViT under 1 M parameters at 32 px on synthetic colour-coded images (3 classes): the probe separates
them, so the auto budget is cut to its floor and a default run takes a few seconds.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import make_colour_tree
from vitcli.cli import app
from vitcli.cli.app import bare_resume
from vitcli.train.recipe import budget
from vitcli.train.run.config import resolve

runner = CliRunner()
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def colours(tmp_path_factory) -> Path:
    """train 16 + test 4 images per class: no val/, and too few for a minival (the last model is kept)."""
    return make_colour_tree(tmp_path_factory.mktemp("colours"), {"train": 16, "test": 4})


def _default_finetune(model, data, project, *extra):
    """`vit finetune` with the quick recipe's defaults: only the model, data and batch size (the set has 48
    images) are given; no --steps, so the auto budget and the probe decide."""
    return runner.invoke(
        app,
        [
            "finetune",
            "--model",
            str(model),
            "--dataset",
            str(data),
            "--recipe",
            "quick",
            "--batch-size",
            "8",
            "-j",
            "0",
            "--device",
            "cpu",
            "--project",
            str(project),
            "--json",
            *extra,
        ],
    )


# ------------------------------------------------------------------------------------------ the rule
def test_probed_budget_is_proportional_to_the_cross_validated_error():
    assert budget.probed_steps(160, None) == 160  # no cross-validation: the whole auto budget
    assert budget.probed_steps(160, 95.0) == budget.probed_steps(160, 60.0) == 160  # FULL_AT or worse: all
    assert budget.probed_steps(160, 97.5) == 80
    assert budget.probed_steps(160, 99.72) == 9  # flowers12: 0.28 % left to gain
    assert budget.probed_steps(160, 100.0) == budget.MIN_STEPS  # nothing left: the floor
    assert budget.probed_steps(5, 100.0) == 5  # never above the cap
    cfg = resolve("finetune", {"dataset": "x", "recipe": "quick"})
    assert budget.is_auto(cfg) and budget.warmup_for(cfg, 9) == 1 and budget.warmup_for(cfg, 160) == cfg.warmup


def test_only_the_auto_budget_is_cut(colours):
    from vitcli.train.run.build import open_run_dataset

    source = open_run_dataset(resolve("finetune", {"dataset": str(colours), "recipe": "quick"}))
    auto = resolve("finetune", {"dataset": str(colours), "recipe": "quick", "batch_size": 8})
    cut = budget.after_probe(auto, {"cv_top1": 100.0}, source)
    assert (cut.steps, cut.warmup) == (budget.MIN_STEPS, 1) and cut.budget == "auto"
    given = resolve("finetune", {"dataset": str(colours), "recipe": "quick", "steps": 50})
    assert budget.after_probe(given, {"cv_top1": 100.0}, source) == given  # a duration given is the duration
    assert budget.after_probe(auto, {"l2": 0.01}, source) == auto  # no cross-validation (too few per class)


# ------------------------------------------------------------------------------------------ a default run
def test_default_finetune_cut_by_the_probe_with_a_full_run_folder(tiny_vit_dir, colours, tmp_path):
    result = _default_finetune(tiny_vit_dir, colours, tmp_path / "runs")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    probe = summary["probe"]
    cap = budget.cap_steps(resolve("finetune", {"dataset": str(colours), "recipe": "quick", "batch_size": 8}), 48, 3)
    assert summary["steps"] == budget.probed_steps(cap, probe["cv_top1"]) < cap
    assert "budget:" in result.stderr and "probe: features" not in result.stdout
    run = Path(summary["run_dir"])
    saved = json.loads((run / "run.json").read_text())["config"]
    assert saved["steps"] == summary["steps"] and saved["budget"] == "auto"  # --config RUN reruns these steps

    with open(run / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) >= 5  # every logged step (1, the evaluation points, the last), not only evaluations
    assert all(r["train_loss"] and r["lr"] and r["img_s"] for r in rows)
    assert rows[-1]["test_top1"] and float(rows[-1]["test_top1"]) == summary["test_top1"]
    assert (run / "curves.png").read_bytes().startswith(PNG)
    assert (run / "confusion.png").read_bytes().startswith(PNG)
    with open(run / "per_class.csv", newline="") as fh:
        per_class = list(csv.DictReader(fh))
    assert [r["name"] for r in per_class] == ["c0", "c1", "c2"] and sum(int(r["support"]) for r in per_class) == 12

    # vit eval --model RUN: the run's dataset and its test split, no data flag
    evaluated = runner.invoke(app, ["eval", "--model", str(run), "--device", "cpu", "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    ev = json.loads(evaluated.stdout)
    assert ev["split"] == "test" and ev["num_images"] == 12 and ev["top1"] == pytest.approx(summary["test_top1"])

    # --dry-run: the budget's range, and now that this machine ran it, an estimated time
    dry = _default_finetune(tiny_vit_dir, colours, tmp_path / "runs", "--dry-run")
    assert dry.exit_code == 0, dry.output
    plan = json.loads(dry.stdout)["plan"]
    assert (plan["steps"], plan["steps_min"]) == (cap, budget.MIN_STEPS) and plan["train_images"] == 48
    assert len(plan["estimated_seconds"]) == 2 and plan["estimated_seconds"][0] <= plan["estimated_seconds"][1]


def test_dry_run_resolves_the_steps_and_says_when_it_cannot_estimate(tiny_vit_dir, colours, tmp_path):
    result = runner.invoke(
        app,
        [
            "finetune",
            "--model",
            str(tiny_vit_dir),
            "--dataset",
            str(colours),
            "--recipe",
            "quick",
            "--epochs",
            "2",
            "--batch-size",
            "8",
            "--dry-run",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed["plan"]["steps"] == 12 and "steps_min" not in printed["plan"]  # 2 x 48 / 8
    assert printed["plan"]["estimated_seconds"] is None if "estimated_seconds" in printed["plan"] else True
    assert "no run of this model" in printed["plan"]["estimate_note"]
    config = tmp_path / "dry.json"
    config.write_text(result.stdout)  # the printed JSON is a config file (its plan is ignored)
    again = runner.invoke(app, ["finetune", "--config", str(config), "--dry-run", "--json"])
    assert again.exit_code == 0, again.output
    human = runner.invoke(
        app,
        [
            "finetune",
            "--model",
            str(tiny_vit_dir),
            "--dataset",
            str(colours),
            "--recipe",
            "quick",
            "--batch-size",
            "8",
            "--dry-run",
        ],
    )
    assert human.exit_code == 0 and '"steps": null' in human.stdout and "plan: 8-" in human.stderr
    missing = runner.invoke(app, ["finetune", "--dataset", "pets", "--dry-run", "--json", "--offline"])
    assert missing.exit_code == 0, missing.output
    assert "not here yet" in json.loads(missing.stdout)["plan"]["note"]


# ------------------------------------------------------------------------------------------ reuse
def test_bare_resume_means_the_latest_unfinished_run(tiny_vit_dir, colours, tmp_path):
    assert bare_resume(["finetune", "--resume"]) == ["finetune", "--resume", "last"]
    assert bare_resume(["finetune", "--resume", "--steps", "3"]) == ["finetune", "--resume", "last", "--steps", "3"]
    assert bare_resume(["finetune", "--resume", "runs/x"]) == ["finetune", "--resume", "runs/x"]
    project = tmp_path / "runs"
    none = runner.invoke(app, ["finetune", "--resume", "last", "--project", str(project)])
    assert none.exit_code == 2 and "no unfinished finetune run" in none.stderr
    done = _default_finetune(tiny_vit_dir, colours, project, "--steps", "2")
    stopped = _default_finetune(tiny_vit_dir, colours, project, "--steps", "4", "--stop-after", "2")
    assert done.exit_code == stopped.exit_code == 0, stopped.output
    run = json.loads(stopped.stdout)["run_dir"]
    resumed = runner.invoke(app, ["finetune", "--resume", "last", "--project", str(project), "-j", "0", "--json"])
    assert resumed.exit_code == 0, resumed.output
    assert json.loads(resumed.stdout)["run_dir"] == run and f"unfinished finetune run: {run}" in resumed.stderr
    assert json.loads((Path(run) / "run.json").read_text())["status"] == "finished"


def test_eval_of_a_run_folder_keeps_an_explicit_dataset(tmp_path):
    from tests.conftest import make_tiny_vit, save_hub_layout

    other = make_colour_tree(tmp_path / "other", {"train": 2, "test": 2})
    run = save_hub_layout(make_tiny_vit(3), tmp_path / "run", ["c0", "c1", "c2"])
    (run / "run.json").write_text(json.dumps({"config": {"dataset": str(tmp_path / "gone")}}))
    result = runner.invoke(app, ["eval", "--model", str(run), "--dataset", str(other), "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["num_images"] == 6
    gone = runner.invoke(app, ["eval", "--model", str(run), "--device", "cpu", "--json"])
    assert gone.exit_code != 0 and "Traceback" not in gone.output and "gone" in gone.stderr


def test_dry_run_refuses_a_model_or_teacher_the_run_would_refuse(tiny_vit_dir, colours, tmp_path):
    base = ["finetune", "--dataset", str(colours), "--dry-run", "--project", str(tmp_path / "runs")]
    typo = runner.invoke(app, [*base, "--model", "vit_tiny_patch16_22"])
    assert typo.exit_code == 1 and "unknown model 'vit_tiny_patch16_22'" in typo.stderr
    assert "did you mean vit_tiny_patch16_224" in typo.stderr
    teacher = runner.invoke(
        app, [*base, "--model", str(tiny_vit_dir), "--teacher", str(tmp_path / "no"), "--distill", "logit"]
    )
    assert teacher.exit_code == 1 and "is not a model folder" in teacher.stderr
    assert runner.invoke(app, [*base, "--model", str(tiny_vit_dir)]).exit_code == 0
    assert not (tmp_path / "runs").exists()  # a dry run writes nothing
