"""`vit finetune` / `vit train`: run folders, recipes, exact resume, and nothing lost.

A ViT under 1 M parameters at 32 px on synthetic colour-coded images (3 classes), so a few steps
learn something. Subprocess tests (SIGINT, kill, torchrun) are few: each one imports torch + timm.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import make_colour_tree
from vitcli.cli import app
from vitcli.errors import UsageError
from vitcli.train.run import checkpoint
from vitcli.train.run.config import FinetuneConfig, TrainConfig, resolve

REPO = Path(__file__).resolve().parents[1]
COLOURS = [(200, 40, 40), (40, 40, 200), (40, 200, 40)]


@pytest.fixture(scope="module")
def colour_ds(tmp_path_factory) -> Path:
    """train/val/test folders of noisy red, blue and green 36 px images."""
    return make_colour_tree(tmp_path_factory.mktemp("colours"), {"train": 16, "val": 4, "test": 4}, COLOURS)


def cfg_for(tiny_vit_dir, ds, tmp_path, **kw) -> FinetuneConfig:
    base = dict(
        model=str(tiny_vit_dir),
        dataset=str(ds),
        recipe="quick",
        steps=6,
        batch_size=8,
        warmup=1,
        lr=0.01,
        eval_every=3,
        project=str(tmp_path / "runs"),
        workers=0,
        device="cpu",
    )
    return resolve("finetune", {**base, **kw})


def weights(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


def metrics(run: Path) -> list[dict]:
    return [
        {k: v for k, v in json.loads(line).items() if k not in ("time", "img_s", "seconds")}
        for line in (run / "metrics.jsonl").read_text().splitlines()
    ]


def results(run: Path) -> list[dict]:
    import csv

    with open(run / "results.csv", newline="") as fh:
        return [{k: v for k, v in row.items() if k not in ("img_s", "seconds")} for row in csv.DictReader(fh)]


# ------------------------------------------------------------------------------------------ recipes
def test_recipe_layers_defaults_recipe_file_flags(tmp_path):
    cfg = resolve("finetune", {"dataset": "pets", "recipe": "paper"})
    assert (cfg.steps, cfg.warmup, cfg.lr, cfg.batch_size, cfg.img_size) == (500, 100, 0.003, 512, 384)
    assert (cfg.optimizer, cfg.momentum, cfg.weight_decay, cfg.clip_grad, cfg.schedule) == (
        "sgd",
        0.9,
        0.0,
        1.0,
        "cosine",
    )
    cifar = resolve("finetune", {"dataset": "cifar10", "recipe": "paper"})
    assert (cifar.steps, cifar.warmup, cifar.lr) == (10_000, 500, 0.01)
    file = tmp_path / "c.toml"
    file.write_text('recipe = "paper"\ndataset = "pets"\nlr = 0.01\nepochs = 2\n')
    cfg = resolve("finetune", {"lr": 0.03}, file)
    assert cfg.lr == 0.03 and cfg.epochs == 2 and cfg.steps is None  # flags beat the file; epochs replace steps
    scratch = resolve("train", {"dataset": "x", "recipe": "paper"})
    assert (scratch.optimizer, scratch.betas, scratch.weight_decay, scratch.schedule) == (
        "adamw",
        (0.9, 0.999),
        0.1,
        "linear",
    )
    with pytest.raises(UsageError, match="unknown setting 'lrr'"):
        resolve("finetune", {"dataset": "pets", "lrr": 1.0})
    with pytest.raises(UsageError, match="both given"):
        resolve("finetune", {"dataset": "pets", "steps": 1, "epochs": 1})


def test_dry_run_prints_the_resolved_config():
    result = CliRunner().invoke(
        app,
        [
            "train",
            "--dataset",
            "cifar10",
            "--model",
            "S/16",
            "--img-size",
            "32",
            "--patch-size",
            "4",
            "--pos-embed",
            "sincos",
            "--pool",
            "avg",
            "--recipe",
            "quick",
            "--steps",
            "7",
            "--dry-run",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    cfg = json.loads(result.stdout)
    assert cfg["command"] == "train" and cfg["model"] == "S/16" and cfg["steps"] == 7 and cfg["epochs"] is None
    assert (cfg["img_size"], cfg["patch_size"], cfg["pos_embed"], cfg["pool"]) == (32, 4, "sincos", "avg")


# ------------------------------------------------------------------------------------------ models
def test_finetune_model_zero_head_and_2d_resampled_pos_embed(tiny_vit_dir, capsys):
    import timm
    import torch
    from timm.layers import resample_abs_pos_embed

    from vitcli.train.run.build import build_finetune_model

    cfg = FinetuneConfig(model=str(tiny_vit_dir), dataset="x", img_size=48, freeze=True)
    loaded, model = build_finetune_model(cfg, 3, torch.device("cpu"))
    assert "pos-embed 8x8 -> 12x12" in capsys.readouterr().err
    assert model.head.out_features == 3 and not model.head.weight.any() and not model.head.bias.any()
    original = weights(tiny_vit_dir / "model.safetensors")
    expected = resample_abs_pos_embed(original["pos_embed"], (12, 12), num_prefix_tokens=1)  # bicubic
    assert torch.allclose(model.pos_embed, expected)
    assert torch.equal(model.blocks[0].attn.qkv.weight, original["blocks.0.attn.qkv.weight"])
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["head.weight", "head.bias"]
    assert model.pretrained_cfg["input_size"] == (3, 48, 48)
    assert timm.is_model("vit_tiny_patch16_224")


def test_scratch_model_ablations():
    import torch
    from timm.layers import build_sincos2d_pos_embed

    from vitcli.train.run.build import build_scratch_model

    base = dict(model="Ti/16", dataset="x", img_size=32, patch_size=8)
    _, model = build_scratch_model(TrainConfig(**base, pos_embed="sincos", pool="avg"), 5, torch.device("cpu"))
    assert model.global_pool == "avg" and model.head.out_features == 5
    assert not model.pos_embed.requires_grad
    assert torch.equal(model.pos_embed[0, 1:], build_sincos2d_pos_embed([4, 4], dim=192))
    assert not model.pos_embed[0, 0].any()  # the class token's slot
    _, model = build_scratch_model(TrainConfig(**base, pos_embed="none"), 5, torch.device("cpu"))
    assert model.pos_embed is None
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 5)


# ------------------------------------------------------------------------------------------ end to end
def test_finetune_cli_run_folder_then_predict(tiny_vit_dir, colour_ds, tmp_path):
    import timm

    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "finetune",
            "--model",
            str(tiny_vit_dir),
            "--dataset",
            str(colour_ds),
            "--recipe",
            "quick",
            "--steps",
            "2",
            "--batch-size",
            "8",
            "--workers",
            "0",
            "--project",
            str(tmp_path / "runs"),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    run = Path(summary["run_dir"])
    assert run == tmp_path / "runs" / "finetune" / f"{colour_ds.name}-1"
    assert summary["steps"] == 2 and summary["val_top1"] is not None and summary["test_top1"] is not None
    assert summary["selection_split"] == "val" and summary["params"] < 1_000_000
    for name in ("config.json", "model.safetensors", "run.json", "metrics.jsonl", "last/state.pt"):
        assert (run / name).is_file(), name
    config = json.loads((run / "config.json").read_text())
    assert config["label_names"] == ["c0", "c1", "c2"] and config["num_classes"] == 3
    assert config["vitcli"]["command"] == "finetune" and config["vitcli"]["config"]["steps"] == 2
    assert "torch" in config["vitcli"]["versions"]
    rerun = resolve("finetune", {}, run)  # the run folder is enough to rerun
    assert rerun.steps == 2 and rerun.dataset == str(colour_ds)
    assert any(m.get("split") == "val" for m in metrics(run)) and any(m.get("split") == "test" for m in metrics(run))
    model = timm.create_model(f"local-dir:{run}", pretrained=True)
    assert model.num_classes == 3

    image = colour_ds / "test" / "c2" / "0.png"
    result = runner.invoke(app, ["predict", "--model", str(run), str(image), "--json", "-k", "3"])
    assert result.exit_code == 0, result.output
    labels = [p["label"] for p in json.loads(result.stdout)["predictions"]]
    assert sorted(labels) == ["c0", "c1", "c2"]
    # a second run is numbered, --name is honoured, an existing --name is refused
    result = runner.invoke(
        app,
        [
            "finetune",
            "--model",
            str(tiny_vit_dir),
            "--dataset",
            str(colour_ds),
            "--steps",
            "1",
            "--batch-size",
            "8",
            "--project",
            str(tmp_path / "runs"),
            "--name",
            f"{colour_ds.name}-1",
            "--json",
        ],
    )
    assert result.exit_code == 2 and "already exists" in result.stderr


def test_resume_equals_uninterrupted_bit_for_bit(tiny_vit_dir, colour_ds, tmp_path):
    from vitcli.train.run.start import finetune, resume_config

    a = finetune(cfg_for(tiny_vit_dir, colour_ds, tmp_path, name="a", accum=2, steps=7))
    stopped = finetune(cfg_for(tiny_vit_dir, colour_ds, tmp_path, name="b", accum=2, steps=7), stop_after=4)
    assert stopped["stopped_at"] == 4
    run_b = Path(stopped["run_dir"])
    (run_b / "metrics.jsonl").open("a").write('{"step": 5, "loss": 9}\n{"step": 6, "lo')  # written after the save
    # resumed with DataLoader workers this time: the result must not depend on them
    b = finetune(resume_config("finetune", run_b, {"workers": 1}), resume=run_b)
    assert (a["val_top1"], a["test_top1"], a["best_step"]) == (b["val_top1"], b["test_top1"], b["best_step"])
    run_a = Path(a["run_dir"])
    sa, sb = checkpoint.load(run_a / "last/state.pt"), checkpoint.load(run_b / "last/state.pt")
    assert sa["step"] == sb["step"] == 7
    for key in sa["model"]:
        assert sa["model"][key].equal(sb["model"][key]), key
    wa, wb = weights(run_a / "model.safetensors"), weights(run_b / "model.safetensors")
    assert all(wa[k].equal(wb[k]) for k in wa)
    assert metrics(run_a) == metrics(run_b)
    assert (
        results(run_a) == results(run_b) and len(results(run_a)) == 5
    )  # results.csv: the same rows (0: LP-FT head; 1, 3, 6, 7)
    with pytest.raises(UsageError, match="cannot change lr"):
        resume_config("finetune", run_b, {"lr": 0.5})


def test_bf16_training_runs_timm_math_attention_and_a_resume_keeps_it(tiny_vit_dir, colour_ds, tmp_path, monkeypatch):
    from vitcli.train.run.start import finetune, resume_config

    monkeypatch.setenv("VIT_KERNELS", "1")  # the math attention without measuring (as where it is faster)
    a = finetune(cfg_for(tiny_vit_dir, colour_ds, tmp_path, name="a", steps=5, precision="bf16"))
    stopped = finetune(cfg_for(tiny_vit_dir, colour_ds, tmp_path, name="b", steps=5, precision="bf16"), stop_after=2)
    run_a, run_b = Path(a["run_dir"]), Path(stopped["run_dir"])
    assert checkpoint.load(run_b / "last/state.pt")["kernels"] == "math-attention"
    monkeypatch.setenv("VIT_KERNELS", "0")  # the recorded kernels win: the resumed run stays the same run
    b = finetune(resume_config("finetune", run_b, {}), resume=run_b)
    assert (a["val_top1"], a["best_step"]) == (b["val_top1"], b["best_step"])
    wa, wb = weights(run_a / "model.safetensors"), weights(run_b / "model.safetensors")
    assert all(wa[k].equal(wb[k]) for k in wa)


def test_corrupt_image_is_skipped_and_counted(tiny_vit_dir, colour_ds, tmp_path, capsys):
    import shutil

    from vitcli.train.run.start import finetune

    ds = tmp_path / "ds"
    shutil.copytree(colour_ds, ds)
    (ds / "train" / "c0" / "3.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    summary = finetune(cfg_for(tiny_vit_dir, ds, tmp_path, steps=12, name="bad"))  # 2 epochs: seen twice
    assert summary["skipped_images"] == 1
    err = capsys.readouterr().err
    assert err.count("3.png") == 1 and "skipping unreadable image" in err
    assert summary["images_seen"] == 12 * 8 - 2  # dropped from its batch, never replaced by another sample
    assert metrics(Path(summary["run_dir"]))[-2]["skipped_images"] == 1


def _poison(monkeypatch, calls: int):
    """Make the first `calls` training images contain an inf pixel (the measured failure mode)."""
    import vitcli.data.transforms as transforms

    real = transforms.train_transform
    count = {"n": 0}

    def poisoned(data_config, **kwargs):
        tf = real(data_config, **kwargs)

        def apply(image):
            x = tf(image)
            count["n"] += 1
            if count["n"] <= calls:
                x[0, 0, 0] = float("inf")
            return x

        return apply

    monkeypatch.setattr(transforms, "train_transform", poisoned)


def test_nan_guard_skips_a_bad_step(tiny_vit_dir, colour_ds, tmp_path, monkeypatch):
    from vitcli.train.run.start import finetune

    _poison(monkeypatch, calls=8)  # the whole first batch
    summary = finetune(cfg_for(tiny_vit_dir, colour_ds, tmp_path, steps=4, name="nan1"))
    run = Path(summary["run_dir"])
    steps = [m for m in metrics(run) if "split" not in m and m.get("event") != "probe"]  # (the probe first)
    assert steps[0]["event"] == "nonfinite" and steps[0]["step"] == 1
    state = checkpoint.load(run / "last/state.pt")
    assert all(bool(v.isfinite().all()) for v in state["model"].values())


def test_nan_guard_stops_the_run_keeping_the_last_good_checkpoint(tiny_vit_dir, colour_ds, tmp_path, monkeypatch):
    from vitcli.train.run.interrupts import Diverged
    from vitcli.train.run.start import finetune, resume_config

    first = finetune(cfg_for(tiny_vit_dir, colour_ds, tmp_path, steps=8, name="nan2", max_bad_steps=2), stop_after=2)
    run = Path(first["run_dir"])
    good = checkpoint.load(run / "last/state.pt")
    _poison(monkeypatch, calls=10**6)
    with pytest.raises(Diverged, match="2 steps in a row") as info:
        finetune(resume_config("finetune", run), resume=run)
    assert info.value.exit_code == 1 and "last good checkpoint" in info.value.hint
    kept = checkpoint.load(run / "last/state.pt")
    assert kept["step"] == 2 and all(kept["model"][k].equal(good["model"][k]) for k in good["model"])
    assert json.loads((run / "run.json").read_text())["status"] == "diverged"


# ------------------------------------------------------------------------------------------ processes
def _env():
    env = dict(os.environ, VIT_PROGRESS="0", PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return env


def test_checkpoint_killed_mid_write_leaves_a_loadable_checkpoint(tmp_path):
    import torch

    path = tmp_path / "state.pt"
    checkpoint.save({"step": 1, "w": torch.zeros(3)}, path)
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, torch\nfrom vitcli.train.run import checkpoint\n"
            "big = {'step': 2, 'w': torch.randn(8_000_000)}\nprint('ready', flush=True)\n"
            "while True:\n    checkpoint.save(big, sys.argv[1])\n",
            str(path),
        ],
        stdout=subprocess.PIPE,
        env=_env(),
    )
    assert writer.stdout.readline().strip() == b"ready"
    deadline = time.time() + 20
    while not list(tmp_path.glob(".state.pt.tmp-*")) and time.time() < deadline:
        time.sleep(0.001)
    writer.kill()  # SIGKILL while a temporary file is being written
    writer.wait()
    state = checkpoint.load(path)
    assert state["step"] in (1, 2) and state["w"].isfinite().all()
    checkpoint.clean_stale(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]


def test_sigint_finishes_the_step_saves_and_exits_130(tiny_vit_dir, colour_ds, tmp_path):
    run = tmp_path / "runs" / "finetune" / "sig"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vitcli",
            "finetune",
            "--model",
            str(tiny_vit_dir),
            "--dataset",
            str(colour_ds),
            "--steps",
            "100000",
            "--batch-size",
            "8",
            "--workers",
            "1",
            "--eval-every",
            "100000",
            "--project",
            str(tmp_path / "runs"),
            "--name",
            "sig",
            "--recipe",
            "quick",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(),
        start_new_session=True,
    )
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        if (run / "metrics.jsonl").is_file() and '"loss"' in (run / "metrics.jsonl").read_text():
            break  # a training step was logged (the probe's step-0 record comes before the loop's handler)
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGINT)  # like Ctrl-C in a terminal: the DataLoader worker gets it too
    _, err = proc.communicate(timeout=60)
    err = err.decode()
    assert proc.returncode == 130, err
    assert f"--resume {run}" in err and "Traceback" not in err
    state = checkpoint.load(run / "last/state.pt")
    assert 1 <= state["step"] < 100000 and state["pos"] > 0
    assert json.loads((run / "run.json").read_text())["status"] == "interrupted"


def test_torchrun_two_processes_on_cpu(tiny_vit_dir, colour_ds, tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    proc = subprocess.run(
        [
            str(torchrun),
            "--standalone",
            "--nproc-per-node",
            "2",
            "-m",
            "vitcli",
            "finetune",
            "--model",
            str(tiny_vit_dir),
            "--dataset",
            str(colour_ds),
            "--steps",
            "3",
            "--batch-size",
            "8",
            "--accum",
            "2",
            "--recipe",
            "quick",
            "--project",
            str(tmp_path / "runs"),
            "--json",
        ],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=180,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1  # rank 0 speaks for all
    summary = json.loads(lines[0])
    assert summary["world_size"] == 2 and summary["images_seen"] == 3 * 8 and summary["test_top1"] is not None
    assert [p.name for p in (tmp_path / "runs" / "finetune").iterdir()] == [f"{colour_ds.name}-1"]
    state = checkpoint.load(tmp_path / "runs" / "finetune" / f"{colour_ds.name}-1" / "last/state.pt")
    assert state["micro"] == 2 and len(state["rng"]) == 2


def test_interrupt_before_the_first_step_says_there_is_nothing_to_resume(tmp_path, monkeypatch, capsys):
    from types import SimpleNamespace

    from vitcli.train.run import start as run_module

    def interrupted(job):
        raise KeyboardInterrupt

    monkeypatch.setattr(run_module, "_fit_with_memory_retry", interrupted)
    job = SimpleNamespace(run_dir=tmp_path, dist=SimpleNamespace(main=True), cfg=SimpleNamespace(multi_label=False))
    with pytest.raises(KeyboardInterrupt):
        run_module._record(job)
    assert "nothing to --resume" in capsys.readouterr().err
    assert json.loads((tmp_path / "run.json").read_text())["status"] == "interrupted"
