"""Sweeps: the grid, one run folder per setting, the winner on minival, failures, resume after a kill."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from vitcli.errors import UsageError
from vitcli.train.sweeps import sweep


def test_parse_and_grid():
    axes = sweep.parse(["lr=0.001,0.003", "--token-mixer=pooling, attention"])
    assert axes == [sweep.Axis("lr", ("0.001", "0.003")), sweep.Axis("token-mixer", ("pooling", "attention"))]
    settings = sweep.grid(axes)
    assert settings == [
        {"lr": "0.001", "token-mixer": "pooling"},
        {"lr": "0.001", "token-mixer": "attention"},
        {"lr": "0.003", "token-mixer": "pooling"},
        {"lr": "0.003", "token-mixer": "attention"},
    ]
    assert sweep.folder_name(settings[0]) == "lr=0.001_token-mixer=pooling"
    assert sweep.folder_name({"model": "hf-hub:org/m"}) == "model=hf-hub-org-m"
    for bad in (["lr"], ["lr="], ["=1,2"], ["lr=1,1"], ["lr=1", "lr=2"], ["token_mixer=a", "token-mixer=b"]):
        with pytest.raises(UsageError):
            sweep.parse(bad)


class FakeRunner:
    """Writes a run folder with a summary; minival accuracy is a function of the setting."""

    def __init__(self, fail=(), interrupt_at=None):
        self.calls = []
        self.fail = set(fail)
        self.interrupt_at = interrupt_at

    def __call__(self, setting, run_dir, resume):
        self.calls.append((sweep.label(setting), resume))
        run_dir.mkdir(parents=True, exist_ok=True)
        if len(self.calls) == self.interrupt_at:
            (run_dir / "last.pt").write_text("partial")
            raise KeyboardInterrupt
        if sweep.label(setting) in self.fail:
            raise RuntimeError("loss is NaN\nmore detail")
        acc = {"0.001": 60.0, "0.003": 80.0, "0.01": 70.0}[setting["lr"]] + (5 if setting["mix"] == "b" else 0)
        summary = {"val_top1": acc, "seconds": 1.5, "img_per_s": 100.0, "params": 1000, "gflops": 0.5}
        (run_dir / "summary.json").write_text(json.dumps(summary))
        return summary


def test_sweep_runs_each_setting_picks_the_winner_and_saves_tables(tmp_path):
    axes = sweep.parse(["lr=0.001,0.003,0.01", "mix=a,b"])
    runner = FakeRunner(fail={"lr=0.01 mix=b"})
    tested = []

    def tester(run_dir, summary):
        tested.append(run_dir.name)
        return 77.5

    result = sweep.run(axes, tmp_path / "sw", runner, tester=tester)
    assert len(runner.calls) == 6
    assert sorted(p.name for p in (tmp_path / "sw").iterdir() if p.is_dir()) == sorted(
        sweep.folder_name(s) for s in sweep.grid(axes)
    )
    assert result.winner.setting == {"lr": "0.003", "mix": "b"} and result.winner.val_top1 == 85.0
    assert tested == ["lr=0.003_mix=b"]  # only the winner sees the test split
    assert result.winner.test_top1 == 77.5
    assert all(r.test_top1 is None for r in result.rows if r is not result.winner)
    failed = [r for r in result.rows if r.status == "failed"]
    assert [sweep.label(r.setting) for r in failed] == ["lr=0.01 mix=b"]
    assert failed[0].error == "RuntimeError: loss is NaN"
    md = (tmp_path / "sw" / "results.md").read_text()
    assert "| lr=0.003 mix=b * | 85.00 | 77.50 |" in md
    assert "failed: RuntimeError: loss is NaN" in md
    state = json.loads((tmp_path / "sw" / "sweep.json").read_text())
    assert state["winner"] == "lr=0.003_mix=b"
    csv_text = (tmp_path / "sw" / "results.csv").read_text()
    assert csv_text.splitlines()[0].startswith("setting,lr,mix,val_top1,test_top1")
    assert [p.name for p in result.table_files] == ["results.md", "results.csv", "results.png"]
    assert result.to_json()["winner"]["val_top1"] == 85.0


def test_killed_sweep_resumes_where_it_stopped(tmp_path):
    axes = sweep.parse(["lr=0.001,0.003", "mix=a,b"])
    first = FakeRunner(interrupt_at=3)
    with pytest.raises(KeyboardInterrupt):
        sweep.run(axes, tmp_path / "sw", first)
    assert [c[0] for c in first.calls] == ["lr=0.001 mix=a", "lr=0.001 mix=b", "lr=0.003 mix=a"]
    state = json.loads((tmp_path / "sw" / "sweep.json").read_text())
    assert [r["status"] for r in state["rows"]] == ["ok", "ok", "pending", "pending"]

    second = FakeRunner()
    finished = lambda run_dir: (run_dir / "summary.json").is_file()  # noqa: E731
    result = sweep.run(axes, tmp_path / "sw", second, is_finished=finished)
    assert second.calls == [("lr=0.003 mix=a", True), ("lr=0.003 mix=b", False)]  # the killed run resumes
    assert result.skipped == 2
    assert [r.status for r in result.rows] == ["ok"] * 4
    assert result.winner.setting == {"lr": "0.003", "mix": "b"}

    # a finished setting whose run folder lost its summary is trained again
    (tmp_path / "sw" / "lr=0.001_mix=a" / "summary.json").unlink()
    third = FakeRunner()
    sweep.run(axes, tmp_path / "sw", third, is_finished=finished)
    assert [c[0] for c in third.calls] == ["lr=0.001 mix=a"]

    with pytest.raises(UsageError, match="different sweep"):
        sweep.run(sweep.parse(["lr=0.1,0.2"]), tmp_path / "sw", third)


def test_all_failed_has_no_winner(tmp_path):
    axes = sweep.parse(["lr=0.001,0.003", "mix=a"])
    runner = FakeRunner(fail={"lr=0.001 mix=a", "lr=0.003 mix=a"})
    result = sweep.run(axes, tmp_path / "sw", runner, tester=lambda *a: pytest.fail("no winner to test"))
    assert result.winner is None
    assert all(r.status == "failed" for r in result.rows)
    assert "winner" not in (tmp_path / "sw" / "results.md").read_text()


# ------------------------------------------------------------------------- through the training core
@pytest.fixture(scope="module")
def colours(tmp_path_factory):
    """train/ and test/ folders of noisy red, green and blue 36 px images (minival is carved from train)."""
    from tests.conftest import make_colour_tree

    return make_colour_tree(
        tmp_path_factory.mktemp("colours"),
        {"train": 10, "test": 3},
        colours=((200, 40, 40), (40, 200, 40), (40, 40, 200)),
    )


def _base(command, tiny_vit_dir, colours, tmp_path):
    return [
        command,
        "--model",
        str(tiny_vit_dir),
        "--dataset",
        str(colours),
        "--steps",
        "1",
        "--batch-size",
        "6",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--project",
        str(tmp_path / "runs"),
    ]


def test_a_2x2_sweep_of_1_step_runs(tiny_vit_dir, colours, tmp_path):
    from typer.testing import CliRunner

    from vitcli.cli import app
    from vitcli.models.resolver import load_model

    args = _base("train", tiny_vit_dir, colours, tmp_path) + [
        "--sweep",
        "token-mixer=attention,pooling",
        "--sweep",
        "lr=0.001,0.01",
        "--name",
        "mixers",
    ]
    result = CliRunner().invoke(app, args + ["--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    sweep_dir = tmp_path / "runs" / "train" / "mixers"
    assert out["sweep_dir"] == str(sweep_dir)
    folders = sorted(p.name for p in sweep_dir.iterdir() if p.is_dir())
    assert folders == [
        "token-mixer=attention_lr=0.001",
        "token-mixer=attention_lr=0.01",
        "token-mixer=pooling_lr=0.001",
        "token-mixer=pooling_lr=0.01",
    ]
    for folder in folders:
        run = json.loads((sweep_dir / folder / "run.json").read_text())
        assert run["status"] == "finished" and run["summary"]["steps"] == 1
        assert "test_top1" not in run["summary"]  # only the winner sees the test split
    assert [r["status"] for r in out["runs"]] == ["ok"] * 4
    best = max(r["val_top1"] for r in out["runs"])
    winner = out["winner"]
    assert winner["val_top1"] == best and winner["test_top1"] is not None
    assert next(r for r in out["runs"] if r["run_dir"] == winner["run_dir"])["test_top1"] == winner["test_top1"]
    pooling = next(r for r in out["runs"] if r["setting"] == {"token-mixer": "pooling", "lr": "0.001"})
    attention = next(r for r in out["runs"] if r["setting"] == {"token-mixer": "attention", "lr": "0.001"})
    assert pooling["params"] < attention["params"] and pooling["gflops"] < attention["gflops"]
    assert load_model(pooling["run_dir"]).model.token_mixers == ("pooling",)  # a run folder is a model

    # the table, for people: one row per setting, the winner marked; resuming a finished sweep trains nothing
    result = CliRunner().invoke(app, ["train", "--resume", str(sweep_dir)])
    assert result.exit_code == 0, result.output
    rows = [line for line in result.stdout.splitlines() if line.startswith("token-mixer=")]
    assert len(rows) == 4 and sum("*" in r for r in rows) == 1
    assert "4 of 4 settings already finished" in result.stderr
    assert "| minival |" in (sweep_dir / "results.md").read_text()
    assert (sweep_dir / "results.png").read_bytes().startswith(b"\x89PNG")  # the comparison plot
    assert all((sweep_dir / f / "results.csv").is_file() and (sweep_dir / f / "curves.png").is_file() for f in folders)

    # a run killed before its first checkpoint (no training state) is trained again from the start
    state = json.loads((sweep_dir / "sweep.json").read_text())
    state["rows"][1]["status"] = "running"
    (sweep_dir / "sweep.json").write_text(json.dumps(state))
    killed = sweep_dir / state["rows"][1]["folder"]
    shutil.rmtree(killed / "last")
    (killed / "run.json").unlink()
    result = CliRunner().invoke(app, ["train", "--resume", str(sweep_dir), "--json"])
    assert result.exit_code == 0, result.output
    assert "3 of 4 settings already finished" in result.stderr
    assert json.loads((killed / "run.json").read_text())["status"] == "finished"


def test_a_failed_setting_is_shown_and_the_sweep_goes_on(tiny_vit_dir, colours, tmp_path):
    from typer.testing import CliRunner

    from vitcli.cli import app

    # pre-trained attention weights cannot fine-tune with a pooling mixer: that run fails, the other wins
    args = _base("finetune", tiny_vit_dir, colours, tmp_path) + ["--sweep", "token-mixer=pooling,attention"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert next(line for line in lines if line.startswith("token-mixer=pooling")).split()[-1] == "failed"
    assert "failed: token-mixer=pooling: could not build" in result.stderr
    assert "trained from scratch" in result.stderr
    assert "*" in next(line for line in lines if line.startswith("token-mixer=attention"))
    assert "1 of 2 settings failed" in result.stderr


def test_sweep_keys_and_values_are_checked_before_training(tiny_vit_dir, colours, tmp_path):
    from typer.testing import CliRunner

    from vitcli.cli import app

    base = _base("train", tiny_vit_dir, colours, tmp_path)
    result = CliRunner().invoke(app, base + ["--sweep", "colour=red,blue"])
    assert result.exit_code == 2 and "not a train setting" in result.stderr
    result = CliRunner().invoke(app, base + ["--sweep", "steps=1,0"])
    assert result.exit_code == 2 and "--sweep steps=0" in result.stderr and "at least 1" in result.stderr
    result = CliRunner().invoke(app, base + ["--sweep", "lr=0.1,fast"])
    assert result.exit_code == 2
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("run.json"))


def test_a_sweep_winner_is_tested_as_a_single_run_is(tiny_vit_dir, colours, tmp_path):
    """One evaluation path: the winner's test number is the number a single run with its settings
    reports, and the sweep's test of a run folder reproduces that run's own test loss to the bit."""
    from typer.testing import CliRunner

    from vitcli.cli import app
    from vitcli.train.run.config import resolve
    from vitcli.train.run.evaluation import test_run

    base = _base("train", tiny_vit_dir, colours, tmp_path)
    base[base.index("--steps") + 1] = "3"
    result = CliRunner().invoke(app, base + ["--sweep", "lr=0.0001,0.003", "--name", "lrs", "--json"])
    assert result.exit_code == 0, result.output
    winner = json.loads(result.stdout)["winner"]
    # a sweep selects on minival, so it carves one whatever its size; a single run on so few images would
    # not (vitcli.data.source.MIN_MINIVAL): asked for, the same minival
    single = CliRunner().invoke(app, base + ["--lr", winner["lr"], "--val-split", "0.1", "--name", "single", "--json"])
    assert single.exit_code == 0, single.output
    summary = json.loads(single.stdout)
    assert summary["test_top1"] == winner["test_top1"]
    assert summary["val_top1"] == winner["val_top1"]

    run_dir = Path(summary["run_dir"])
    logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    own = next(r for r in logged if r.get("split") == "test")
    cfg = resolve(
        "train",
        {
            "model": str(tiny_vit_dir),
            "dataset": str(colours),
            "steps": 3,
            "batch_size": 6,
            "workers": 0,
            "device": "cpu",
            "lr": float(winner["lr"]),
            "val_split": 0.1,
        },
    )
    tested, split = test_run(run_dir, cfg)
    assert split == "test" and (tested["top1"], tested["loss"], tested["n"]) == (own["top1"], own["loss"], own["n"])
