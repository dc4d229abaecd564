"""Issue "Reliability": no hang, no traceback, nothing silently wrong, whatever the input.

One test (or a few) per case found; docs/RELIABILITY.md lists the promises and points here.
"""

from __future__ import annotations

import errno
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from tests.conftest import deadline, make_colour_tree, make_tiny_vit, save_hub_layout
from vitcli.cli import app

runner = CliRunner()


def vit(*args, timeout: int = 60, **env):
    with deadline(timeout):
        result = runner.invoke(app, [str(a) for a in args], env=env or None)
    assert "Traceback" not in result.output + result.stderr, result.output + result.stderr
    assert "unexpected failure" not in result.stderr, result.stderr
    return result


def one_line_error(result, code: int, *says: str) -> None:
    assert result.exit_code == code, (result.exit_code, result.output, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) >= 1 and all(s in result.stderr for s in says), result.stderr


def train_args(model, data, tmp_path, *more):
    return [
        "finetune",
        "--model",
        model,
        "--dataset",
        data,
        "--steps",
        "2",
        "--batch-size",
        "4",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--project",
        tmp_path / "runs",
        *more,
    ]


# 1 ----------------------------------------------------------------------------------------- no hang
def test_a_training_set_of_unreadable_images_stops_with_the_count(tiny_vit_dir, tmp_path):
    for split, n in (("train", 4), ("val", 1)):
        for c in ("a", "b"):
            folder = tmp_path / "ds" / split / c
            folder.mkdir(parents=True)
            for i in range(n):
                (folder / f"{i}.png").write_bytes(b"" if i % 2 else b"this is text, not an image")
    result = vit(*train_args(tiny_vit_dir, tmp_path / "ds", tmp_path), timeout=60)
    one_line_error(result, 1, "0 of 8 training images could be read", "4 empty", "4 not an image")
    run = next((tmp_path / "runs" / "finetune").iterdir())
    assert json.loads((run / "run.json").read_text())["status"] != "running"


# 2 ------------------------------------------------------------------------ a head that is not the weights'
def test_a_config_whose_class_count_differs_from_the_weights_is_an_error(tmp_path, make_images):
    folder = save_hub_layout(make_tiny_vit(10), tmp_path / "m", [f"c{i}" for i in range(10)])
    config = json.loads((folder / "config.json").read_text())
    config["num_classes"] = config["model_args"]["num_classes"] = 5
    config.pop("label_names")
    (folder / "config.json").write_text(json.dumps(config))
    result = vit("predict", "--model", folder, make_images(1)[0])
    one_line_error(result, 1, "5 classes", "has 10")


def test_label_names_that_do_not_fit_the_head_are_an_error(tmp_path, make_images):
    folder = save_hub_layout(make_tiny_vit(10), tmp_path / "m", ["a", "b", "c"])
    one_line_error(vit("predict", "--model", folder, make_images(1)[0]), 1, "3 label_names", "10 classes")


def test_weights_missing_a_tensor_are_an_error_not_a_fresh_initialisation(tmp_path, make_images):
    from safetensors.torch import load_file, save_file

    folder = save_hub_layout(make_tiny_vit(10), tmp_path / "m")
    state = load_file(str(folder / "model.safetensors"))
    state.pop("blocks.0.attn.qkv.weight")
    save_file(state, str(folder / "model.safetensors"))
    one_line_error(vit("predict", "--model", folder, make_images(1)[0]), 1, "1 missing", "blocks.0.attn.qkv.weight")


# 3 -------------------------------------------------------------------------------- the NaN guard
@pytest.mark.parametrize("lr", ["inf", "nan", "-0.01"])
def test_a_non_finite_or_negative_lr_is_refused_up_front(tiny_vit_dir, tmp_path, lr):
    ds = make_colour_tree(tmp_path / "ds", {"train": 4, "val": 2})
    one_line_error(vit(*train_args(tiny_vit_dir, ds, tmp_path, "--lr", lr)), 2, f"--lr {float(lr)!r}")
    assert not (tmp_path / "runs").exists()


def test_no_checkpoint_or_model_is_written_unless_every_tensor_is_finite(tiny_vit_dir, tmp_path):
    import torch
    from safetensors.torch import load_file

    ds = make_colour_tree(tmp_path / "ds", {"train": 8, "val": 2})
    result = vit(
        *train_args(
            tiny_vit_dir,
            ds,
            tmp_path,
            "--lr",
            "1e38",
            "--clip-grad",
            "0",
            "--steps",
            "6",
            "--save-every",
            "1",
            "--eval-every",
            "1",
            "--json",
        )
    )
    assert result.exit_code in (0, 1)
    for line in result.stdout.splitlines():
        json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} in the JSON output"))
    run = next((tmp_path / "runs" / "finetune").iterdir())
    if (run / "last" / "state.pt").exists():
        state = torch.load(run / "last" / "state.pt", weights_only=True)
        assert all(t.isfinite().all() for t in state["model"].values() if t.is_floating_point())
    if (run / "model.safetensors").exists():
        assert all(t.isfinite().all() for t in load_file(str(run / "model.safetensors")).values())


def test_json_output_never_holds_nan(tmp_path, make_images):
    import torch

    model = make_tiny_vit(10)
    with torch.no_grad():
        model.head.bias.fill_(float("nan"))
    folder = save_hub_layout(model, tmp_path / "nan")
    result = vit("predict", "--model", folder, "--json", make_images(1)[0])
    assert result.exit_code == 1

    def refuse(constant):
        raise AssertionError(f"{constant} in the JSON output")

    record = json.loads(result.stdout, parse_constant=refuse)
    assert "not finite" in record["error"]


# 4 ------------------------------------------------------------------- finished output is never lost
def _png(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((36, 36, 3), 120, np.uint8)).save(path, format="PNG")
    return path


def test_names_with_markup_and_brackets_are_shown_literally(tiny_vit_dir, tmp_path):
    odd = [
        _png(tmp_path / "dir[" / "x]" / "y.png"),
        _png(tmp_path / "photo [edited].png"),
        _png(tmp_path / "[bold]b.png"),
        _png(tmp_path / ":smile: e.png"),
    ]
    result = vit("predict", "--model", tiny_vit_dir, "-k", "1", *odd)
    assert result.exit_code == 0, result.stderr
    flat = result.stdout.replace("\n", "")
    for p in odd:
        assert p.name in flat


def test_a_name_that_is_not_utf8_is_escaped_alike_in_table_json_and_csv(tiny_vit_dir, tmp_path):
    name = os.fsdecode(b"caf\xe9.png")
    path = _png(tmp_path / name)
    shown = "caf\\xe9.png"
    table = vit("predict", "--model", tiny_vit_dir, "-k", "1", path)
    assert table.exit_code == 0 and shown in table.stdout.replace("\n", "")
    as_json = vit("predict", "--model", tiny_vit_dir, "--json", "-o", tmp_path / "out.csv", path)
    assert as_json.exit_code == 0, as_json.stderr
    assert json.loads(as_json.stdout)["path"].endswith(shown)
    assert shown in (tmp_path / "out.csv").read_text(encoding="utf-8")


def test_a_full_disk_while_writing_output_keeps_every_result(tiny_vit_dir, tmp_path, make_images):
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    (tmp_path / "full.jsonl").symlink_to("/dev/full")
    images = make_images(3)
    result = vit("predict", "--model", tiny_vit_dir, "--json", "-o", tmp_path / "full.jsonl", *images)
    assert result.exit_code == 1
    assert len([json.loads(line) for line in result.stdout.splitlines()]) == 3  # every image predicted
    assert "were not all written" in result.stderr and "No space left" in result.stderr


def test_output_naming_a_folder_is_refused_before_any_work(tiny_vit_dir, tmp_path, make_images):
    (tmp_path / "results.csv").mkdir()
    one_line_error(
        vit("predict", "--model", tiny_vit_dir, "-o", tmp_path / "results.csv", make_images(1)[0]), 2, "is a folder"
    )


# 5 -------------------------------------------------------------------------------- symlink loops
def test_links_to_folders_never_repeat_an_image_or_hang(tmp_path):
    from vitcli.data.inputs import expand_inputs

    root = tmp_path / "imgs"
    _png(root / "a.png")
    _png(root / "sub" / "b.png")
    (root / "self").symlink_to(root)  # a link to "."
    (root / "x").mkdir()
    (root / "y").mkdir()
    (root / "x" / "to_y").symlink_to(root / "y")  # two links to each other
    (root / "y" / "to_x").symlink_to(root / "x")
    (root / "b_again.png").symlink_to(root / "sub" / "b.png")
    with deadline(20):
        for spec in (str(root), str(root / "**" / "*.png")):
            paths, missing = expand_inputs([spec])
            real = sorted(os.path.realpath(p) for p in paths)  # each real file once (b under either name)
            assert real == [str((root / "a.png").resolve()), str((root / "sub" / "b.png").resolve())], paths
            assert not missing


def test_a_folder_named_like_an_image_is_reported_not_skipped(tiny_vit_dir, tmp_path, make_images):
    (tmp_path / "holiday.jpg").mkdir()
    result = vit("predict", "--model", tiny_vit_dir, "--json", make_images(1)[0], tmp_path / "holiday.jpg")
    assert result.exit_code == 1
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert any(r.get("error") == "the folder holds no image files" for r in records)


# 6 -------------------------------------------------------------------------------- damaged weights
@pytest.mark.parametrize("damage", ["truncated", "random", "header only"])
def test_a_damaged_safetensors_file_is_one_line_naming_it(tmp_path, make_images, damage):
    folder = save_hub_layout(make_tiny_vit(10), tmp_path / "m")
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    header = 8 + int.from_bytes(data[:8], "little")
    weights.write_bytes(
        {"truncated": data[: len(data) // 2], "random": os.urandom(4096), "header only": data[:header]}[damage]
    )
    for command in (
        ["predict", "--model", folder, make_images(1)[0]],
        ["benchmark", "--model", folder, "--iters", "1", "--warmup-iters", "0", "--batch-size", "1"],
    ):
        one_line_error(vit(*command), 1, "model.safetensors", "damaged")


# 7 ------------------------------------------------------------------------------ a full cache folder
def test_a_full_cache_never_fails_a_command(tiny_vit_dir, make_images, monkeypatch):
    import shutil
    from collections import namedtuple

    from vitcli.export import faststart
    from vitcli.models.resolver import load_model

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10, 10, 0))
    assert faststart.save(str(tiny_vit_dir), load_model(str(tiny_vit_dir))) is None  # not even attempted
    exported = Path(os.environ["VIT_CACHE"]) / "exported"
    assert not exported.exists() or not any(exported.rglob("model.onnx"))
    result = vit("predict", "--model", tiny_vit_dir, "--device", "cpu", make_images(1)[0])
    assert result.exit_code == 0, result.stderr


# 8 -------------------------------------------------------------------------- one line and a hint
@pytest.mark.parametrize(
    "model,says",
    [
        ("vit_tiny_patch16_224.nosuchtag", "no pretrained tag 'nosuchtag'"),
        ("hf-hub:../etc", "bad Hub id"),
        ("hf-hub:timm/..", "bad Hub id"),
    ],
)
def test_bad_model_names(model, says, make_images):
    one_line_error(vit("predict", "--model", model, make_images(1)[0]), 1, says)


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:99999", "notaurl"])
def test_bad_hub_endpoints(endpoint, make_images):
    result = vit(
        "predict", "--model", "vit_tiny_patch16_224.augreg_in21k_ft_in1k", make_images(1)[0], HF_ENDPOINT=endpoint
    )
    one_line_error(result, 2, "HF_ENDPOINT", "not an http(s) URL")


def test_bad_numbers_and_an_image_size_that_is_not_whole_patches(tmp_path):
    ds = make_colour_tree(tmp_path / "ds", {"train": 4, "val": 2})
    base = ["train", "--model", "test_vit", "--dataset", ds, "--steps", "1", "--project", tmp_path / "runs"]
    one_line_error(vit(*base, "--epochs", "nan"), 2, "--epochs")
    one_line_error(vit(*base, "--img-size", "30", "--patch-size", "4"), 2, "not a multiple of --patch-size 4")
    assert not (tmp_path / "runs").exists()


def test_running_out_of_memory_is_one_line():
    from vitcli.errors import describe

    for exc in (
        MemoryError(),
        RuntimeError(
            "[enforce fail at alloc_cpu.cpp:116] DefaultCPUAllocator: can't "
            "allocate memory: you tried to allocate 9999999 bytes"
        ),
    ):
        failure = describe(exc)
        assert failure is not None and failure.message == "out of memory" and "--batch-size" in failure.hint


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("state", ["truncated", "random", "pickled", "an image"])
def test_resuming_from_a_damaged_state_is_one_line(tmp_path, state):
    import pickle

    run = tmp_path / "run"
    (run / "last").mkdir(parents=True)
    target = run / "last" / "state.pt"
    if state == "truncated":
        import torch

        torch.save({"model": {}, "step": 1}, target)
        target.write_bytes(target.read_bytes()[:40])
    elif state == "random":
        target.write_bytes(os.urandom(2048))
    elif state == "pickled":
        target.write_bytes(pickle.dumps({"model": {}, "optimizer": {}, "step": 1, "config": {}, "odd": Path("x")}))
    else:
        target = _png(tmp_path / "photo.png")
    one_line_error(vit("finetune", "--resume", target if state == "an image" else run), 2, "training state")


def test_a_full_disk_during_a_checkpoint_keeps_the_last_one(tiny_vit_dir, tmp_path, monkeypatch):
    import torch

    from vitcli.train.run import checkpoint

    ds = make_colour_tree(tmp_path / "ds", {"train": 8, "val": 2})
    result = vit(*train_args(tiny_vit_dir, ds, tmp_path, "--steps", "2", "--save-every", "1", "--name", "full"))
    assert result.exit_code == 0, result.stderr
    run = tmp_path / "runs" / "finetune" / "full"
    before = (run / "last" / "state.pt").read_bytes()

    def full(obj, f, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(f))

    monkeypatch.setattr(torch, "save", full)
    result = vit("finetune", "--resume", run, "--steps", "3")
    one_line_error(result, 1, "no space left on the device")
    assert (run / "last" / "state.pt").read_bytes() == before
    assert checkpoint.load(run / "last" / "state.pt")["step"] == 2
    assert not [p for p in run.rglob("*") if ".tmp-" in p.name]


def test_bad_labels_and_real_files(tiny_vit_dir, tmp_path, make_images):
    images = make_images(2, folder=tmp_path / "val")
    (tmp_path / "bin.txt").write_bytes(b"img000.png 1\n\xff\xfe 2\n")
    (tmp_path / "big.txt").write_text(f"img000.png {10**23}\n")
    base = ["eval", "--model", tiny_vit_dir, "--data", tmp_path / "val"]
    one_line_error(vit(*base, "--labels", tmp_path / "bin.txt"), 1, "not UTF-8")
    one_line_error(vit(*base, "--labels", tmp_path / "big.txt"), 1, "expected 'FILENAME CLASS_INDEX'")
    (tmp_path / "ok.txt").write_text("".join(f"{p.name} 1\n" for p in images))
    (tmp_path / "real.json").write_text('[["x"]]')
    one_line_error(
        vit(*base, "--labels", tmp_path / "ok.txt", "--real-labels", tmp_path / "real.json"), 1, "class indices"
    )


# 9 ------------------------------------------------------------------------------------ smaller ones
def test_a_run_killed_before_its_first_checkpoint_starts_again_under_its_name(tiny_vit_dir, tmp_path):
    ds = make_colour_tree(tmp_path / "ds", {"train": 8, "val": 2})
    run = tmp_path / "runs" / "finetune" / "early"
    (run).mkdir(parents=True)
    (run / "run.json").write_text('{"status": "running"}')  # what a kill before the first save leaves
    one_line_error(vit("finetune", "--resume", run), 2, "no saved training state", "same --name")
    result = vit(*train_args(tiny_vit_dir, ds, tmp_path, "--name", "early"))
    assert result.exit_code == 0, result.stderr
    assert json.loads((run / "run.json").read_text())["status"] == "finished"


def test_resuming_a_train_run_with_finetune_names_the_command(tmp_path):
    ds = make_colour_tree(tmp_path / "ds", {"train": 8, "val": 2})
    result = vit(
        "train",
        "--model",
        "test_vit",
        "--img-size",
        "32",
        "--patch-size",
        "4",
        "--dataset",
        ds,
        "--steps",
        "1",
        "--batch-size",
        "4",
        "--workers",
        "0",
        "--project",
        tmp_path / "runs",
        "--name",
        "t",
    )
    assert result.exit_code == 0, result.stderr
    one_line_error(
        vit("finetune", "--resume", tmp_path / "runs" / "train" / "t"), 2, "is a train run", "vit train --resume"
    )


def test_a_crashed_run_is_not_left_running(tiny_vit_dir, tmp_path, monkeypatch):
    from vitcli.train.run import loop

    ds = make_colour_tree(tmp_path / "ds", {"train": 8, "val": 2})

    def boom(self, stop):
        raise RuntimeError("a bug")

    monkeypatch.setattr(loop.Trainer, "train_step", boom)
    with deadline(60):
        result = runner.invoke(app, [str(a) for a in train_args(tiny_vit_dir, ds, tmp_path, "--name", "c")])
    assert result.exit_code == 1  # a bug keeps its traceback, but the run folder says what happened
    record = json.loads((tmp_path / "runs" / "finetune" / "c" / "run.json").read_text())
    assert record["status"] == "failed" and "a bug" in record["error"]


def test_stale_partial_downloads_are_removed(tmp_path, monkeypatch):
    from vitcli.hub import files as hub

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    blobs = tmp_path / "hub" / "models--org--name" / "blobs"
    blobs.mkdir(parents=True)
    old, fresh = blobs / "abc.1234.incomplete", blobs / "abc.5678.incomplete"
    old.write_bytes(b"x")
    fresh.write_bytes(b"y")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    assert hub.remove_stale_partials("org/name") == [old.name]
    assert fresh.exists() and not old.exists()


def test_eval_exits_1_with_unreadable_images_and_counts_them(tiny_vit_dir, tmp_path, make_images):
    images = make_images(3, folder=tmp_path / "val")
    (tmp_path / "val" / "bad.png").write_bytes(b"")
    (tmp_path / "l.txt").write_text("".join(f"{p.name} 1\n" for p in images) + "bad.png 2\n")
    result = vit("eval", "--model", tiny_vit_dir, "--data", tmp_path / "val", "--labels", tmp_path / "l.txt", "--json")
    assert result.exit_code == 1
    summary = json.loads(result.stdout)
    assert summary["num_images"] == 3 and summary["num_failed"] == 1


def test_few_shot_reports_the_shots_it_used(tiny_vit_dir, tmp_path):
    tree = make_colour_tree(tmp_path / "tree", {"train": 4, "test": 2})
    result = vit("eval", "--model", tiny_vit_dir, "--dataset", tree, "--few-shot", "2,1000", "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    largest = summary["num_train"] // 3  # 3 classes of equal size (minival carved from train/)
    assert sorted(summary["few_shot"]) == sorted(["2", str(largest)])
    assert summary["shots_reduced"] == {"1000": largest} and f"reported as {largest}-shot" in result.stderr
    one_line_error(vit("eval", "--model", tiny_vit_dir, "--dataset", tree, "--few-shot", "1", "--l2", "nan"), 2, "--l2")


# 10 ------------------------------------------------------------------------------------- hardening
def test_only_raster_formats_are_opened(tmp_path):
    from vitcli.data.images import load_image
    from vitcli.errors import ImageError

    eps = tmp_path / "photo.jpg"
    eps.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    ico = tmp_path / "icon.png"
    Image.new("RGB", (16, 16)).save(ico, format="ICO")
    for path in (eps, ico):
        with pytest.raises(ImageError, match="not an image in a supported format"):
            load_image(path)
