"""`vit shard` and `--dataset wds:`: shards written whole and resumably, streamed with the same number of
batches on every rank, resumed exactly; a run on shards evaluates on the original folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import make_colour_tree
from vitcli.cli import app

REPO = Path(__file__).resolve().parents[1]
pytest.importorskip("webdataset")


@pytest.fixture(scope="module")
def colour_ds(tmp_path_factory) -> Path:
    return make_colour_tree(tmp_path_factory.mktemp("colours"), {"train": 16, "test": 4})


@pytest.fixture(scope="module")
def shards(colour_ds, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shards")
    result = CliRunner().invoke(app, ["shard", str(colour_ds), str(out), "--shard-size", "10", "--json"])
    assert result.exit_code == 0, result.output
    return out


def test_shard_writes_whole_shards_and_a_description(shards, colour_ds):
    meta = json.loads((shards / "train.json").read_text())
    assert meta["split"] == "train" and meta["complete"] and meta["classes"] == ["c0", "c1", "c2"]
    assert meta["counts"] == {"c0": 16, "c1": 16, "c2": 16} and meta["samples"] == 48
    assert [s["samples"] for s in meta["shards"]] == [10, 10, 10, 10, 8]
    assert sorted(p.name for p in shards.glob("*.tar")) == [f"test-00000{i}.tar" for i in range(2)] + [
        f"train-00000{i}.tar" for i in range(5)
    ]
    import tarfile

    with tarfile.open(shards / "train-000000.tar") as tar:
        names = tar.getnames()
        data = tar.extractfile(names[1]).read()
    assert len(names) == 20 and names[0].endswith(".cls") and names[1].endswith(".png")
    # the bytes as stored: a sample's image is one of the original files, byte for byte
    originals = {p.read_bytes() for p in (colour_ds / "train").rglob("*.png")}
    assert data in originals


def test_shard_resumes_and_refuses_another_plan(colour_ds, tmp_path):
    out = tmp_path / "s"
    runner = CliRunner()
    assert (
        runner.invoke(app, ["shard", str(colour_ds), str(out), "--shard-size", "16", "--split", "train"]).exit_code == 0
    )
    first = (out / "train-000001.tar").stat().st_mtime_ns
    (out / "train-000002.tar").unlink()  # as if killed before the last shard was renamed
    (out / ".train-000002.tmp-1-0.tar").write_bytes(b"half")
    result = runner.invoke(app, ["shard", str(colour_ds), str(out), "--shard-size", "16", "--split", "train", "--json"])
    assert result.exit_code == 0, result.output
    written = json.loads(result.stdout)["splits"]["train"]
    assert (written["written"], written["kept"]) == (1, 2)
    assert (out / "train-000001.tar").stat().st_mtime_ns == first and not list(out.glob(".*tmp*"))
    result = runner.invoke(app, ["shard", str(colour_ds), str(out), "--shard-size", "8", "--split", "train"])
    assert result.exit_code == 2 and "another plan" in result.stderr


def _batches(stream, *, rank, world, micro, workers, epoch=0, start=0):
    from vitcli.train.scale.distributed import Dist

    loader = stream.loader(
        epoch=epoch, start=start, micro=micro, dist=Dist(rank, world), workers=workers, device=None, seed=3
    )
    return [b.positions for b in loader]


def test_stream_gives_every_rank_the_same_batches_whatever_the_workers(shards):
    from vitcli.data.transforms import eval_transform
    from vitcli.data.wds import open_shards

    tf = eval_transform({"input_size": (3, 8, 8), "mean": (0.5,) * 3, "std": (0.5,) * 3})
    stream = open_shards(f"wds:{shards}").subset("train", tf, augment_seed=0)
    assert len(stream) == 48
    per_rank = [_batches(stream, rank=r, world=2, micro=4, workers=0) for r in range(2)]
    assert len(per_rank[0]) == len(per_rank[1]) == stream.layout(2, 4).batches(4) > 0
    seen = [j for rank in per_rank for b in rank for j in b]
    assert len(set(seen)) >= 0.8 * 48  # cut/pad to equal shares keeps most samples, each rank its own shards
    assert _batches(stream, rank=0, world=2, micro=4, workers=2) == per_rank[0]  # workers change nothing
    assert _batches(stream, rank=0, world=2, micro=4, workers=0, start=8) == per_rank[0][2:]  # resume mid-epoch
    assert _batches(stream, rank=0, world=2, micro=4, workers=0, epoch=1) != per_rank[0]  # reshuffled per epoch
    # fewer shards than ranks: every rank reads all shards and keeps its share of the samples
    few = open_shards(f"wds:{shards}/train-00000{{0..1}}.tar").subset("train", tf, augment_seed=0)
    parts = [_batches(few, rank=r, world=3, micro=2, workers=0) for r in range(3)]
    assert len({len(p) for p in parts}) == 1
    assert not {j for b in parts[0] for j in b} & {j for b in parts[1] for j in b}


def test_eval_and_finetune_on_shards_and_exact_resume(tiny_vit_dir, shards, colour_ds, tmp_path):
    from safetensors.torch import load_file

    from vitcli.train.run import checkpoint
    from vitcli.train.run.config import resolve
    from vitcli.train.run.start import finetune, resume_config

    def cfg(name):
        return resolve(
            "finetune",
            dict(
                model=str(tiny_vit_dir),
                dataset=f"wds:{shards}",
                recipe="quick",
                steps=6,
                batch_size=8,
                warmup=1,
                lr=0.01,
                project=str(tmp_path / "runs"),
                workers=0,
                device="cpu",
                name=name,
                accum=2,
                aa="rand-m9-mstd0.5",
                head_init="zero",
                precision="fp32",
            ),
        )

    a = finetune(cfg("a"))
    stopped = finetune(cfg("b"), stop_after=3)
    run_b = Path(stopped["run_dir"])
    b = finetune(resume_config("finetune", run_b, {"workers": 2}), resume=run_b)
    sa, sb = checkpoint.load(Path(a["run_dir"]) / "last/state.pt"), checkpoint.load(run_b / "last/state.pt")
    assert (sa["step"], sa["epoch"], sa["pos"]) == (sb["step"], sb["epoch"], sb["pos"])
    assert all(sa["model"][k].equal(sb["model"][k]) for k in sa["model"])
    wa, wb = load_file(str(Path(a["run_dir"]) / "model.safetensors")), load_file(str(run_b / "model.safetensors"))
    assert all(wa[k].equal(wb[k]) for k in wa) and a["test_top1"] == b["test_top1"]
    # the run folder evaluates on the original folder, and on the shards, alike
    runner = CliRunner()
    on_folder = runner.invoke(
        app, ["eval", "--model", a["run_dir"], "--dataset", str(colour_ds), "--device", "cpu", "--json"]
    )
    on_shards = runner.invoke(
        app, ["eval", "--model", a["run_dir"], "--dataset", f"wds:{shards}", "--device", "cpu", "--json"]
    )
    assert on_folder.exit_code == 0 and on_shards.exit_code == 0, on_folder.output + on_shards.output
    top1 = [json.loads(r.stdout.splitlines()[-1])["top1"] for r in (on_folder, on_shards)]
    assert top1[0] == top1[1] == a["test_top1"]


def test_torchrun_two_processes_on_shards(tiny_vit_dir, shards, tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    env = dict(os.environ, VIT_PROGRESS="0", PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
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
            f"wds:{shards}",
            "--steps",
            "8",
            "--batch-size",
            "8",
            "--recipe",
            "quick",
            "--project",
            str(tmp_path / "runs"),
            "--workers",
            "1",
            "--json",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("{")))
    # 8 steps of 2 x 4 images cross the end of an epoch (48 images): no rank waits for the other
    assert summary["world_size"] == 2 and summary["images_seen"] == 64 and summary["test_top1"] is not None


def test_val_split_on_shards_is_refused_not_ignored(tiny_vit_dir, shards):
    """Nothing is carved from a stream: --val-split on wds: is a usage error (exit 2), not silently dropped."""
    args = ["finetune", "--model", str(tiny_vit_dir), "--dataset", f"wds:{shards}", "--dry-run", "--json"]
    refused = CliRunner().invoke(app, [*args, "--val-split", "0.1"])
    assert refused.exit_code == 2 and "--val-split does not apply to WebDataset shards" in refused.stderr
    assert CliRunner().invoke(app, [*args, "--patience", "2"]).exit_code == 0  # selection without a carve
