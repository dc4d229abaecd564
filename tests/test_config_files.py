"""Config files as timm and ultralytics users write them (YAML beside JSON and TOML), and the flag habits
of the neighbouring tools: `--device 0` is cuda:0, `-j` is --workers."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from vitcli.accel.runtime import canonical
from vitcli.cli import app
from vitcli.errors import UsageError
from vitcli.train.run.config import resolve

runner = CliRunner()


def test_yaml_config_file_is_read_like_toml(tmp_path):
    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text(
        "# a timm-style file\ndataset: pets\nrecipe: paper\nlr: 1e-3\nsteps: 40\nbetas: [0.8, 0.95]\nname: pets-a\n"
    )
    toml_file = tmp_path / "run.toml"
    toml_file.write_text(
        'dataset = "pets"\nrecipe = "paper"\nlr = 1e-3\nsteps = 40\nbetas = [0.8, 0.95]\nname = "pets-a"\n'
    )
    from_yaml, from_toml = resolve("train", {}, yaml_file), resolve("train", {}, toml_file)
    assert from_yaml == from_toml
    assert from_yaml.lr == 0.001 and from_yaml.betas == (0.8, 0.95) and from_yaml.steps == 40
    assert resolve("train", {"lr": 0.01}, tmp_path / "run.yaml").lr == 0.01  # flags beat the file
    (tmp_path / "run.yml").write_text("dataset: pets\nepochs: 2\n")
    assert resolve("finetune", {}, tmp_path / "run.yml").epochs == 2


def test_bad_yaml_is_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: [1\n")
    result = runner.invoke(app, ["finetune", "--config", str(bad), "--dry-run"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "is not valid YAML" in result.stderr and "line 2" in result.stderr
    listing = tmp_path / "list.yaml"
    listing.write_text("- lr\n- steps\n")
    with pytest.raises(UsageError, match="does not hold a table of settings"):
        resolve("finetune", {}, listing)
    typo = tmp_path / "typo.yaml"
    typo.write_text("dataset: pets\nsteps: 3\nlrr: 0.1\n")
    with pytest.raises(UsageError, match="unknown setting 'lrr'"):
        resolve("finetune", {}, typo)


def test_device_index_means_cuda_and_j_means_workers(tmp_path):
    assert canonical("0") == "cuda:0" and canonical(" 1 ") == "cuda:1"
    assert canonical("cpu") == "cpu" and canonical(None) == "auto" and canonical("CUDA:2") == "cuda:2"
    result = runner.invoke(
        app, ["finetune", "--dataset", "pets", "--steps", "2", "--device", "0", "-j", "3", "--dry-run", "--json"]
    )
    assert result.exit_code == 0, result.output
    cfg = json.loads(result.stdout)
    assert cfg["device"] == "cuda:0" and cfg["workers"] == 3


def test_device_index_without_that_gpu_is_one_line(tiny_vit_dir, make_images):
    import torch

    if torch.cuda.is_available() and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a GPU 7")
    result = runner.invoke(app, ["predict", str(make_images(1)[0]), "--model", str(tiny_vit_dir), "--device", "7"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "CUDA" in result.stderr or "cuda:7" in result.stderr
