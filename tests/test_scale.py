"""Past one device: --grad-checkpointing, --fsdp (FSDP2, one process and torchrun on gloo), distillation
(--teacher --distill logit|token), and the world layout --dry-run prints under torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import TINY_ARGS, make_colour_tree, save_hub_layout
from vitcli.cli import app
from vitcli.errors import UsageError
from vitcli.train.run.config import resolve

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def colour_ds(tmp_path_factory) -> Path:
    return make_colour_tree(tmp_path_factory.mktemp("colours"), {"train": 8, "test": 4})


def cfg_for(model, ds, tmp_path, **kw):
    base = dict(
        model=str(model),
        dataset=str(ds),
        recipe="quick",
        steps=4,
        batch_size=8,
        warmup=1,
        lr=0.01,
        project=str(tmp_path / "runs"),
        workers=0,
        device="cpu",
        head_init="zero",
        precision="fp32",
    )
    return resolve("finetune", {**base, **kw})


def weights(run) -> dict:
    from safetensors.torch import load_file

    return load_file(str(Path(run) / "model.safetensors"))


def _env():
    return dict(os.environ, VIT_PROGRESS="0", PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")


def test_grad_checkpointing_and_one_process_fsdp_train_the_same_model(tiny_vit_dir, colour_ds, tmp_path):
    from vitcli.models.resolver import load_model
    from vitcli.train.run.start import finetune

    plain = finetune(cfg_for(tiny_vit_dir, colour_ds, tmp_path, name="plain", accum=2))
    ckpt = finetune(cfg_for(tiny_vit_dir, colour_ds, tmp_path, name="ckpt", accum=2, grad_checkpointing=True))
    sharded = finetune(
        cfg_for(tiny_vit_dir, colour_ds, tmp_path, name="fsdp", accum=2, fsdp=True, grad_checkpointing=True)
    )
    wp, wc, wf = weights(plain["run_dir"]), weights(ckpt["run_dir"]), weights(sharded["run_dir"])
    assert set(wp) == set(wc) == set(wf)  # the same names: a normal run folder
    # recomputed activations are the same numbers; FSDP's reduce-scatter of one rank the same sums
    assert all((wp[k] - wc[k]).abs().max() < 1e-6 for k in wp)
    assert all((wp[k] - wf[k]).abs().max() < 1e-5 for k in wp)
    loaded = load_model(sharded["run_dir"])  # every command loads it
    assert loaded.label_names == ["c0", "c1", "c2"] and sharded["test_top1"] == plain["test_top1"]


def test_scale_settings_are_checked():
    base = dict(model="S/16", dataset="x", steps=1)
    with pytest.raises(UsageError, match="--model-ema"):
        resolve("train", {**base, "fsdp": True, "model_ema": True})
    with pytest.raises(UsageError, match="without --distill"):
        resolve("train", {**base, "teacher": "some-run"})
    with pytest.raises(UsageError, match="distilled architecture"):
        resolve("train", {**base, "model": "vit_small_patch16_224", "teacher": "some-run", "distill": "token"})
    with pytest.raises(UsageError, match="--distill-alpha"):
        resolve("train", {**base, "teacher": "t", "distill": "logit", "distill_alpha": 1.5})


def test_distillation_logit_trains_and_token_uses_both_heads(tiny_vit_dir, colour_ds, tmp_path):
    import timm
    import torch

    from vitcli.train.run.start import finetune

    teacher = finetune(cfg_for(tiny_vit_dir, colour_ds, tmp_path, name="teacher", steps=6))["run_dir"]
    plain = finetune(cfg_for(tiny_vit_dir, colour_ds, tmp_path, name="student"))
    soft = finetune(
        cfg_for(tiny_vit_dir, colour_ds, tmp_path, name="soft", teacher=teacher, distill="logit", distill_temp=2.0)
    )
    assert soft["test_top1"] is not None
    assert any(
        not torch.equal(a, b) for a, b in zip(weights(plain["run_dir"]).values(), weights(soft["run_dir"]).values())
    )
    lines = [json.loads(x) for x in (Path(soft["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in lines if "loss" in r)

    # DeiT's distillation token: a tiny deit_*_distilled student, trained on head and head_dist
    torch.manual_seed(0)
    deit = timm.create_model("deit_tiny_distilled_patch16_224", num_classes=10, **TINY_ARGS)
    student = save_hub_layout(deit, tmp_path / "deit_tiny_distilled", [f"class{i}" for i in range(10)])
    token = finetune(cfg_for(student, colour_ds, tmp_path, name="token", teacher=teacher, distill="token"))
    trained = timm.create_model("deit_tiny_distilled_patch16_224", num_classes=3, **TINY_ARGS)
    trained.load_state_dict(weights(token["run_dir"]))
    assert not torch.equal(trained.head_dist.weight, torch.zeros_like(trained.head_dist.weight))
    # evaluation averages the class and distillation heads, as DeiT does (timm's eval mode)
    x = torch.randn(2, 3, 32, 32)
    trained.eval()
    with torch.no_grad():
        tokens = trained.forward_features(x)
        mean = (trained.head(tokens[:, 0]) + trained.head_dist(tokens[:, 1])) / 2
        assert torch.allclose(trained(x), mean, atol=1e-6)


def test_torchrun_fsdp_grad_checkpointing_accum_stop_and_resume(tiny_vit_dir, colour_ds, tmp_path):
    torchrun = [
        str(Path(sys.executable).with_name("torchrun")),
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "vitcli",
        "finetune",
    ]
    run = tmp_path / "runs" / "finetune" / "fsdp"
    args = [
        "--model",
        str(tiny_vit_dir),
        "--dataset",
        str(colour_ds),
        "--steps",
        "4",
        "--batch-size",
        "8",
        "--accum",
        "2",
        "--fsdp",
        "--grad-checkpointing",
        "--recipe",
        "quick",
        "--head-init",
        "zero",
        "--precision",
        "fp32",
        "--project",
        str(tmp_path / "runs"),
        "--name",
        "fsdp",
        "--json",
    ]
    first = subprocess.run(
        torchrun + args + ["--stop-after", "2"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=240,
        cwd=tmp_path,
        check=False,
    )
    assert first.returncode == 0, first.stderr[-3000:]
    resumed = subprocess.run(
        torchrun + ["--resume", str(run), "--json"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=240,
        cwd=tmp_path,
        check=False,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads(next(x for x in resumed.stdout.splitlines() if x.startswith("{")))
    assert summary["world_size"] == 2 and summary["steps"] == 4 and summary["test_top1"] is not None
    result = CliRunner().invoke(
        app, ["eval", "--model", str(run), "--dataset", str(colour_ds), "--device", "cpu", "--json"]
    )
    assert result.exit_code == 0 and json.loads(result.stdout.splitlines()[-1])["top1"] == summary["test_top1"]


def test_dry_run_prints_the_world_layout_from_torchrun_env(monkeypatch):
    env = {
        "RANK": "3",
        "WORLD_SIZE": "4",
        "LOCAL_RANK": "1",
        "LOCAL_WORLD_SIZE": "2",
        "GROUP_RANK": "1",
        "MASTER_ADDR": "node0",
        "MASTER_PORT": "29500",
        "TORCHELASTIC_RUN_ID": "job7",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    result = CliRunner().invoke(app, ["train", "--dataset", "x", "--model", "S/16", "--steps", "1", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "rank 3 of 4" in result.stderr and "node 1 of 2" in result.stderr and "local rank 1" in result.stderr
    assert "rank 0 writes" in result.stderr and "node0:29500" in result.stderr
    assert result.stdout == ""  # the config once, from rank 0
    monkeypatch.setenv("RANK", "0")
    result = CliRunner().invoke(app, ["train", "--dataset", "x", "--model", "S/16", "--steps", "1", "--dry-run"])
    assert "rank 0 of 4" in result.stderr and json.loads(result.stdout)["model"] == "S/16"
