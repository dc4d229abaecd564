"""The model card `vit push` publishes: no local paths, no "best at step None", and `base_model` when the
fine-tuned model came from the Hub (an hf-hub: id, a timm name, a paper code, a folder of the HF cache)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vitcli.hub import card


def _run_folder(tmp_path: Path, model: str, summary: dict) -> Path:
    dataset = tmp_path / "home" / "someone" / "data" / "flowers12"
    dataset.mkdir(parents=True)
    folder = tmp_path / "runs" / "finetune" / "flowers12-1"
    folder.mkdir(parents=True)
    cfg = {"model": model, "dataset": str(dataset), "recipe": "quick", "lr": 0.01, "steps": 40}
    argv = ["/usr/bin/vit", "finetune", "--dataset", str(dataset), f"--project={tmp_path / 'runs'}", "--model", model]
    (folder / "run.json").write_text(
        json.dumps(
            {
                "command": "finetune",
                "config": cfg,
                "status": "finished",
                "summary": summary,
                "environment": {"argv": argv},
            }
        )
    )
    (folder / "config.json").write_text(json.dumps({"architecture": "vit_tiny_patch16_224", "label_names": ["a", "b"]}))
    return folder


def test_card_without_a_minival_has_no_best_step_none_and_no_local_paths(tmp_path):
    model = tmp_path / "models" / "my-vit"
    model.mkdir(parents=True)
    folder = _run_folder(
        tmp_path,
        str(model),
        {"best_step": None, "val_top1": None, "test_top1": 99.17, "params": 5.5e6, "img_size": 224},
    )
    text = card.model_card(folder, "me/flowers-vit")
    assert "None" not in text
    assert str(tmp_path) not in text and "/home/" not in text  # no absolute local path anywhere
    assert "`flowers12`" in text and "`my-vit`" in text
    assert "vit finetune --dataset flowers12 --project=runs --model my-vit" in text
    assert "| test (the selected model, once) | 99.17 % |" in text
    assert "base_model" not in text  # a local folder that did not come from the Hub


def test_card_keeps_the_best_step_when_there_is_one(tmp_path):
    folder = _run_folder(
        tmp_path,
        "hf-hub:timm/vit_tiny_patch16_224.augreg_in21k",
        {"best_step": 30, "val_top1": 98.0, "selection_split": "minival", "params": 5.5e6},
    )
    text = card.model_card(folder, "me/flowers-vit")
    assert "| minival (selects the model; best at step 30) | 98.00 % |" in text
    assert "base_model: timm/vit_tiny_patch16_224.augreg_in21k" in text


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("hf-hub:timm/vit_small_patch16_224.augreg_in21k@main", "timm/vit_small_patch16_224.augreg_in21k"),
        ("vit_tiny_patch16_224.augreg_in21k_ft_in1k", "timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k"),
        ("S/16", "timm/vit_small_patch16_224.augreg_in21k_ft_in1k"),  # a paper code: timm's default tag
        ("not_a_model_xyz", None),
    ],
)
def test_base_model_from_the_hub(spec, expected):
    assert card.base_model(spec) == expected


def test_base_model_of_a_folder_in_the_hugging_face_cache(tmp_path):
    snapshot = tmp_path / "hub" / "models--timm--vit_tiny_patch16_224.augreg_in21k" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    assert card.base_model(str(snapshot)) == "timm/vit_tiny_patch16_224.augreg_in21k"
    assert card.base_model(str(tmp_path)) is None
