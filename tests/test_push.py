"""`vit push RUN REPO_ID` against the writable local Hub (tests/hubserver.py), then loading what was
pushed with an empty cache: `vit predict --model hf-hub:REPO_ID` and timm.create_model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import make_colour_tree
from tests.hubserver import LocalHub
from vitcli.cli import app

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run_dir(tiny_vit_dir, tmp_path_factory) -> Path:
    """A finished 3-step fine-tuning run of the tiny ViT on 3 colours."""
    from vitcli.train.run.config import resolve
    from vitcli.train.run.start import finetune

    tmp = tmp_path_factory.mktemp("push")
    colours = make_colour_tree(tmp / "colours", {"train": 8, "val": 2, "test": 2})
    cfg = resolve(
        "finetune",
        dict(
            model=str(tiny_vit_dir),
            dataset=str(colours),
            recipe="quick",
            steps=3,
            batch_size=8,
            workers=0,
            device="cpu",
            project=str(tmp / "runs"),
            name="colours",
        ),
    )
    return Path(finetune(cfg)["run_dir"])


@pytest.fixture
def hub(monkeypatch, tmp_path):
    import huggingface_hub

    with LocalHub(writable=True, storage=tmp_path / "hub") as server:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        # timm's own download takes huggingface_hub's endpoint as read at import (HF_ENDPOINT then)
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", server.endpoint)
        monkeypatch.setattr(
            huggingface_hub.constants,
            "HUGGINGFACE_CO_URL_TEMPLATE",
            server.endpoint + "/{repo_id}/resolve/{revision}/{filename}",
        )
        yield server


def _predict(model: str, image: Path) -> dict:
    result = runner.invoke(app, ["predict", "--model", model, str(image), "--json", "-k", "1"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["predictions"][0]


def test_push_then_predict_and_timm_from_the_hub(hub, run_dir, tmp_path, monkeypatch):
    import timm
    import torch

    result = runner.invoke(app, ["push", str(run_dir), "acme/colours-vit", "--private", "--json"])
    assert result.exit_code == 0, result.output
    pushed = json.loads(result.stdout)
    assert pushed["url"] == f"{hub.endpoint}/acme/colours-vit" and len(pushed["commit"]) == 40
    assert hub.created["acme/colours-vit"]["visibility"] == "private"
    files = set(hub.refs["acme/colours-vit"]["main"].files)
    assert {
        "README.md",
        "config.json",
        "model.safetensors",
        "run.json",
        "metrics.jsonl",
        "results.csv",
        "curves.png",
    } <= files
    assert not any(f.startswith(("last/", "wandb/")) for f in files)  # no training state
    card = (hub.storage / "acme/colours-vit/main/README.md").read_text()
    assert "library_name: timm" in card and "pipeline_tag: image-classification" in card
    assert "| val (selects the model" in card and "## Recipe" in card and "| lr | `0.01` |" in card
    assert (run_dir / "README.md").read_text() == card  # the card is also in the run folder

    image = next((run_dir.parent.parent.parent / "colours" / "test" / "c1").iterdir())
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("VIT_EXPORT", "0")
    local, remote = _predict(str(run_dir), image), _predict("hf-hub:acme/colours-vit", image)
    assert (remote["label"], remote["score"]) == (local["label"], local["score"])
    assert any("model.safetensors" in p for p in hub.downloads())  # it came from the Hub, not a cache

    model = timm.create_model("hf-hub:acme/colours-vit", pretrained=True, cache_dir=str(tmp_path / "timm-cache")).eval()
    assert model.num_classes == 3 and model.pretrained_cfg["label_names"] == ["c0", "c1", "c2"]
    reference = timm.create_model(f"local-dir:{run_dir}", pretrained=True).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))


def test_push_to_a_branch_and_a_users_own_card(hub, run_dir, tmp_path, monkeypatch):
    result = runner.invoke(app, ["push", str(run_dir), "acme/branchy", "--revision", "v1"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"{hub.endpoint}/acme/branchy/tree/v1"
    assert "model.safetensors" in hub.refs["acme/branchy"]["v1"].files
    assert "model.safetensors" not in hub.refs["acme/branchy"]["main"].files
    monkeypatch.setenv("VIT_EXPORT", "0")
    image = next((run_dir.parent.parent.parent / "colours" / "val" / "c0").iterdir())
    assert _predict("hf-hub:acme/branchy@v1", image)["label"] == _predict(str(run_dir), image)["label"]

    own = tmp_path / "own"
    own.mkdir()
    for name in ("config.json", "model.safetensors"):
        (own / name).write_bytes((run_dir / name).read_bytes())
    (own / "README.md").write_text("# my card\n")
    result = runner.invoke(app, ["push", str(own), "acme/own", "--json"])
    assert result.exit_code == 0, result.output
    assert (hub.storage / "acme/own/main/README.md").read_text() == "# my card\n"  # kept as written


def test_push_errors_are_one_line(hub, run_dir, tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    for args, text in (
        ([str(empty), "acme/x"], "there is no model to push"),
        ([str(tmp_path / "nope"), "acme/x"], "no such run folder"),
        ([str(run_dir), "no-owner"], "is not of the form owner/name"),
    ):
        result = runner.invoke(app, ["push", *args])
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
        assert text in result.stderr
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = runner.invoke(app, ["push", str(run_dir), "acme/x"])
    assert result.exit_code == 2 and "offline mode is on" in result.stderr
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with LocalHub() as read_only:  # answers 403 to every write, as the Hub does without a write token
        monkeypatch.setenv("HF_ENDPOINT", read_only.endpoint)
        result = runner.invoke(app, ["push", str(run_dir), "acme/x"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "error: the Hub refused to create or write acme/x (HTTP 403)" in result.stderr
    assert "hf auth login" in result.stderr


def test_hubserver_command_writable_without_repos(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "tests" / "hubserver.py"), "--port", "0", "--writable"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("export HF_ENDPOINT=http://127.0.0.1:")
    finally:
        proc.terminate()
        proc.wait(5)
