"""Issue "Reliability 2": containment, concurrency, divergence, OS errors, special files, deadlines, signals.

One test (or a few) per class found; docs/RELIABILITY.md keeps each promise beside its test. The OS errors a
test cannot make for real without privileges (a read-only file system, a full disk) are made by patching the
calls that would meet them; /work/helpers-style repros outside the project make them for real.
"""

from __future__ import annotations

import builtins
import errno
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from tests.conftest import deadline, make_colour_tree, make_tiny_vit, save_hub_layout
from vitcli.cli import app

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def vit(*args, timeout: int = 90, **env):
    with deadline(timeout):
        result = runner.invoke(app, [str(a) for a in args], env=env or None)
    text = result.output + result.stderr
    assert "Traceback" not in text and "unexpected failure" not in text, text
    return result


def one_line_error(result, code: int, *says: str) -> None:
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and all(s in result.stderr for s in says), result.stderr


def finetune(model, data, project, *more):
    return [
        "finetune",
        "--model",
        model,
        "--dataset",
        data,
        "--steps",
        "1",
        "--batch-size",
        "4",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--project",
        project,
        *more,
    ]


def python_vit(args: list[str], *, timeout: int = 120, **popen):
    """`python -m vitcli ARGS` in a fresh process (for what a CliRunner cannot show: real standard streams)."""
    env = {**os.environ, **popen.pop("env", {})}
    return subprocess.run(
        [sys.executable, "-m", "vitcli", *map(str, args)], cwd=REPO, env=env, timeout=timeout, check=False, **popen
    )


@pytest.fixture
def tree(tmp_path) -> Path:
    return make_colour_tree(tmp_path / "ds", {"train": 4, "val": 2})


@pytest.fixture(scope="module")
def colour_model(tmp_path_factory) -> Path:
    """A tiny ViT whose classes are the colour tree's (c0, c1, c2), for eval."""
    return save_hub_layout(make_tiny_vit(3), tmp_path_factory.mktemp("colours"), ["c0", "c1", "c2"])


# 1 ------------------------------------------------------------------- run folders stay in the project
@pytest.mark.parametrize("name", ["../../escaped", "/tmp/escaped-abs", "a/b", "..", ".", ""])
def test_a_run_name_is_one_folder_under_the_project(tree, tmp_path, name):
    project = tmp_path / "deep" / "project"
    result = vit(*finetune("test_vit", tree, project, "--name", name, "--dry-run"))
    one_line_error(result, 2, "a run name must be one folder name")
    result = vit(*finetune("test_vit", tree, project, "--name", name))
    one_line_error(result, 2, "a run name must be one folder name")
    assert not project.exists() and not (tmp_path / "escaped").exists() and not Path("/tmp/escaped-abs").exists()


def test_a_run_name_from_a_config_file_or_a_run_folder_is_checked_the_same(tree, tmp_path):
    (tmp_path / "c.json").write_text(json.dumps({"name": "../../../outside"}))
    (tmp_path / "c.yaml").write_text("name: /tmp/outside-abs\n")
    run = tmp_path / "oldrun"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"command": "finetune", "config": {"name": "../x", "steps": 1}}))
    for config in (tmp_path / "c.json", tmp_path / "c.yaml", run):
        result = vit(*finetune("test_vit", tree, tmp_path / "p", "--config", config))
        one_line_error(result, 2, "a run name must be one folder name")
    assert not (tmp_path / "p").exists() and not Path("/tmp/outside-abs").exists()


def test_reusing_an_abandoned_run_folder_deletes_only_what_vitcli_wrote(tiny_vit_dir, tree, tmp_path):
    run = tmp_path / "p" / "finetune" / "r"
    (run / "last").mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"status": "running"}))
    (run / "metrics.jsonl").write_text("")
    (run / "last" / ".state.tmp-123-0.pt").write_bytes(b"half")  # a killed writer's temporary file
    (run / "last" / "notes.txt").write_text("mine")  # not vitcli's: the folder is not reused
    result = vit(*finetune(tiny_vit_dir, tree, tmp_path / "p", "--name", "r"))
    one_line_error(result, 2, "already exists")
    assert (run / "last" / "notes.txt").read_text() == "mine" and (run / "run.json").exists()
    (run / "last" / "notes.txt").unlink()
    result = vit(*finetune(tiny_vit_dir, tree, tmp_path / "p", "--name", "r"))
    assert result.exit_code == 0, result.stderr
    assert json.loads((run / "run.json").read_text())["status"] == "finished"
    assert not list((run / "last").glob("*.tmp-*"))


def test_check_name_refuses_every_path(tmp_path):
    from vitcli.errors import UsageError
    from vitcli.train.run import runs

    for bad in ("..", "a/../b", "/abs", "x\\y", "nul\0", "", "."):
        with pytest.raises(UsageError):
            runs.create(tmp_path / "p", "train", bad, "ds")
    assert runs.create(tmp_path / "p", "train", "ok-1.5_x", "ds") == tmp_path / "p" / "train" / "ok-1.5_x"
    runs.release(tmp_path / "p" / "train" / "ok-1.5_x")


# 2 --------------------------------------------------------------- one run folder, one process at a time
HOLD = (
    "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDONLY); "
    "fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB); print('held', flush=True); time.sleep(120)"
)


def test_a_second_run_of_one_name_is_refused_while_the_first_lives(tiny_vit_dir, tree, tmp_path):
    run = tmp_path / "p" / "finetune" / "same"
    run.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"status": "running"}))  # a live run before its first checkpoint
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        result = vit(*finetune(tiny_vit_dir, tree, tmp_path / "p", "--name", "same"))
        one_line_error(result, 1, "is in use by another vit process", "pick another --name")
        assert json.loads((run / "run.json").read_text()) == {"status": "running"}  # its folder untouched
    finally:
        holder.kill()
        holder.wait()


def test_a_run_folder_is_claimed_once_and_released(tmp_path):
    from vitcli.errors import VitError
    from vitcli.train.run import runs

    folder = runs.create(tmp_path, "train", "x", "ds")
    child = subprocess.run(
        [sys.executable, "-c", HOLD.replace("time.sleep(120)", "pass"), str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert child.returncode != 0 and "BlockingIOError" in child.stderr  # held by this process
    runs.release(folder)
    child = subprocess.run(
        [sys.executable, "-c", HOLD.replace("time.sleep(120)", "pass"), str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert child.returncode == 0, child.stderr
    runs.claim(folder)
    runs.release(folder)
    with pytest.raises(VitError):  # a folder another process holds
        holder = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
        try:
            holder.stdout.readline()
            runs.create_at(folder)
        finally:
            holder.kill()
            holder.wait()


# 3 ------------------------------------------------------------------------------------- divergence
def test_a_diverged_run_ends_diverged_and_keeps_no_model_with_non_finite_outputs(tiny_vit_dir, tree, tmp_path):
    from safetensors.torch import load_file

    result = vit(
        *finetune(
            tiny_vit_dir,
            tree,
            tmp_path / "p",
            "--lr",
            "1e9",
            "--steps",
            "3",
            "--clip-grad",
            "0",
            "--name",
            "hot",
            "--json",
        )
    )
    one_line_error(result, 1, "diverged")
    run = tmp_path / "p" / "finetune" / "hot"
    assert json.loads((run / "run.json").read_text())["status"] == "diverged"
    if (run / "model.safetensors").exists():  # a model kept before it diverged must give numbers
        model = make_tiny_vit(3)
        model.load_state_dict(load_file(str(run / "model.safetensors")))
        import torch

        assert model(torch.rand(2, 3, 32, 32)).isfinite().all()


def test_outputs_finite_catches_finite_weights_whose_outputs_are_not():
    import torch

    from vitcli.accel.runtime import runtime
    from vitcli.train.run.checkpoint import all_finite, outputs_finite

    model = make_tiny_vit(3)
    with torch.no_grad():
        model.head.weight.fill_(3e38)  # finite, but its logits overflow
    images = torch.rand(2, 3, 32, 32)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    assert all_finite(model, optimizer) and not outputs_finite(model, images, runtime("cpu", "fp32"))
    assert model.training is False  # the module's mode is kept
    assert outputs_finite(make_tiny_vit(3), images, runtime("cpu", "fp32"))


def test_a_diverged_or_nan_setting_never_wins_a_sweep(tmp_path):
    from vitcli.train.run.interrupts import Diverged
    from vitcli.train.sweeps import sweep

    def runner(setting, run_dir, resume):
        run_dir.mkdir(parents=True, exist_ok=True)
        if setting["lr"] == "1e9":
            raise Diverged("the run diverged: its last 2 step(s) were not finite")
        return {"val_top1": float("nan") if setting["lr"] == "1e8" else 40.0}

    result = sweep.run(sweep.parse(["lr=1e9,1e8,0.001"]), tmp_path / "s", runner)
    status = {r.setting["lr"]: r.status for r in result.rows}
    assert status == {"1e9": "diverged", "1e8": "failed", "0.001": "ok"}
    assert result.winner.setting == {"lr": "0.001"}
    assert "diverged: the run diverged" in (tmp_path / "s" / "results.md").read_text()


# 4 ---------------------------------------------------------------------------- datasets through links
def test_a_class_folder_linking_back_to_the_root_or_another_class_is_an_error(tmp_path):
    from vitcli.data.datasets import open_dataset
    from vitcli.errors import DataError

    root = make_colour_tree(tmp_path / "ds", {"train": 3})
    (root / "train" / "c0" / "back").symlink_to(root / "train")  # every image again, under c0
    with pytest.raises(DataError, match="through a link"):
        open_dataset(str(root), val_split=0.0)
    (root / "train" / "c0" / "back").unlink()
    (root / "train" / "c3").symlink_to(root / "train" / "c1")  # a class that is another class
    with pytest.raises(DataError, match="reaches class 'c1'"):
        open_dataset(str(root), val_split=0.0)
    (root / "train" / "c3").unlink()
    (root / "train" / "c0" / "again.png").symlink_to(root / "train" / "c0" / "0.png")  # one real file twice
    source = open_dataset(str(root), val_split=0.0)
    assert source.size("train") == 9  # each real file once


def test_train_and_eval_refuse_a_looped_dataset_with_a_hint(tiny_vit_dir, tmp_path):
    root = make_colour_tree(tmp_path / "ds", {"train": 3, "val": 2})
    (root / "val" / "c0" / "loop").symlink_to(root / "val")
    one_line_error(vit("eval", "--model", tiny_vit_dir, "--dataset", root, "--split", "val"), 1, "through a link")
    one_line_error(vit(*finetune(tiny_vit_dir, root, tmp_path / "p")), 1, "through a link")


# 5 ------------------------------------------------------------------------------------- labels files
def test_a_labels_file_naming_one_image_twice_with_two_classes_is_refused(tiny_vit_dir, tmp_path, make_images):
    make_images(3, folder=tmp_path / "val")
    (tmp_path / "l.txt").write_text("img000.png 1\nimg001.png 2\n# x\n./img000.png 3\n")
    result = vit("eval", "--model", tiny_vit_dir, "--data", tmp_path / "val", "--labels", tmp_path / "l.txt")
    one_line_error(result, 1, "l.txt:4", "class 3 here and class 1 at line 1")
    (tmp_path / "l.txt").write_text("img000.png 1\nimg001.png 2\nimg000.png 1\n")  # the same twice: read once
    result = vit("eval", "--model", tiny_vit_dir, "--data", tmp_path / "val", "--labels", tmp_path / "l.txt", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["num_images"] == 2


# 6 ---------------------------------------------------------------------------- OS errors by errno
@pytest.fixture
def read_only(tmp_path, monkeypatch):
    """A folder that behaves as a read-only file system (EROFS) for mkdir, open-for-writing and os.open."""
    ro = tmp_path / "ro"
    ro.mkdir()
    prefix = str(ro) + os.sep

    def inside(path) -> bool:
        try:
            return os.path.abspath(os.fspath(path)).startswith(prefix)
        except TypeError:  # a file descriptor
            return False

    def refuse(path):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))

    real_mkdir, real_open, real_os_open = Path.mkdir, builtins.open, os.open

    def mkdir(self, *a, **k):
        if inside(self) and not self.exists():
            refuse(self)
        return real_mkdir(self, *a, **k)

    def open_(file, mode="r", *a, **k):
        if inside(file) and any(c in mode for c in "wax+"):
            refuse(file)
        return real_open(file, mode, *a, **k)

    def os_open(path, flags, *a, **k):
        if inside(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            refuse(path)
        return real_os_open(path, flags, *a, **k)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    monkeypatch.setattr(builtins, "open", open_)
    monkeypatch.setattr(os, "open", os_open)
    return ro


def test_a_read_only_file_system_is_one_line_in_every_command(tiny_vit_dir, colour_model, tree, read_only, make_images):
    image = make_images(1)[0]
    commands = {
        "predict": ["predict", "--model", tiny_vit_dir, "-o", read_only / "out.csv", image],
        "eval": [
            "eval",
            "--model",
            colour_model,
            "--dataset",
            tree,
            "--split",
            "val",
            "--out-dir",
            read_only / "ev",
            "--json",
        ],
        "train": finetune(tiny_vit_dir, tree, read_only / "runs"),
        "export": ["export", "--model", tiny_vit_dir, "-o", read_only / "m.onnx"],
        "visualize": ["visualize", "--attention-map", "--model", tiny_vit_dir, "--out-dir", read_only / "vis", image],
    }
    for command, args in commands.items():
        result = vit(*args)
        one_line_error(result, 1, "the file system is read-only", str(read_only))
        if command == "eval":  # the metrics were printed before the artefacts failed
            assert json.loads(result.stdout)["num_images"] == 6


@pytest.mark.parametrize(
    "code,says",
    [
        (errno.EROFS, "read-only"),
        (errno.EACCES, "permission denied"),
        (errno.ENOSPC, "no space left"),
        (errno.EMFILE, "too many open files"),
        (errno.EIO, "input/output error"),
        (errno.ENAMETOOLONG, "too long"),
        (errno.EXDEV, "across file systems"),
        (errno.ESTALE, "tale"),
    ],
)
def test_every_oserror_is_one_line_by_errno(code, says):
    from vitcli.errors import describe

    failure = describe(OSError(code, os.strerror(code), "/some/file"))
    assert failure is not None and failure.exit_code == 1 and says in failure.message.lower()
    wrapped = RuntimeError("while saving")
    wrapped.__cause__ = OSError(code, os.strerror(code))
    assert describe(wrapped) is not None  # found in the cause chain


def test_an_errno_named_by_a_rust_library_is_one_line():
    from vitcli.errors import describe

    class SafetensorError(Exception):  # what safetensors raises on a full or read-only disk
        pass

    full = describe(SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)"))
    assert full is not None and full.message.startswith("no space left on the device")
    read_only = describe(SafetensorError("Error while serializing: I/O error: Read-only file system (os error 30)"))
    assert read_only is not None and "read-only" in read_only.message


def test_a_20_digit_seed_is_a_usage_error(tree, tmp_path):
    result = vit(*finetune("test_vit", tree, tmp_path / "p", "--seed", "99999999999999999999"))
    one_line_error(result, 2, "--seed")
    assert not (tmp_path / "p").exists()


def test_closed_stderr_never_sends_a_message_to_stdout(tmp_path):
    proc = python_vit(
        ["predict", "--model", tmp_path / "no-such-model", tmp_path / "x.png"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        pass_fds=(),
        preexec_fn=lambda: os.close(2),
    )
    assert proc.returncode == 1 and proc.stdout == b""


def test_closed_stdout_is_an_error_on_stderr(tmp_path):
    proc = python_vit(
        ["models", "vit_tiny_patch16_224"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        preexec_fn=lambda: os.close(1),
    )
    assert proc.returncode == 1 and b"error: stdout is closed" in proc.stderr, proc.stderr


def test_an_ascii_only_stdout_escapes_a_non_ascii_name(tiny_vit_dir, tmp_path, monkeypatch):
    import io

    from vitcli import output

    image = tmp_path / "café ☕.png"
    Image.new("RGB", (36, 36), (10, 200, 10)).save(image)
    proc = python_vit(
        ["predict", "--model", tiny_vit_dir, "-k", "1", image],
        capture_output=True,
        env={"PYTHONIOENCODING": "ascii", "PYTHONUTF8": "0", "LC_ALL": "C"},
    )
    assert proc.returncode == 0 and b"Traceback" not in proc.stderr, proc.stderr
    assert b"caf\\xe9 \\u2615.png" in proc.stdout, proc.stdout
    ascii_out = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
    monkeypatch.setattr(sys, "stdout", ascii_out)
    output.emit_json({"path": str(image)})  # JSON stays JSON: escaped as \u00e9, not as \xe9
    ascii_out.seek(0)
    assert json.loads(ascii_out.read())["path"] == str(image)


# 7 ------------------------------------------------------------------------- model files that do not fit
def test_resuming_from_a_state_of_another_architecture_is_one_line(tiny_vit_dir, tree, tmp_path):
    import torch

    assert (
        vit(*finetune(tiny_vit_dir, tree, tmp_path / "p", "--name", "a", "--steps", "2", "--stop-after", "1")).exit_code
        == 0
    )
    state_path = tmp_path / "p" / "finetune" / "a" / "last" / "state.pt"
    state = torch.load(state_path, weights_only=True)
    state["model"] = make_tiny_vit(3, embed_dim=32).state_dict()  # another architecture's weights
    torch.save(state, state_path)
    result = vit("finetune", "--resume", tmp_path / "p" / "finetune" / "a")
    one_line_error(result, 1, "does not fit the model", "another architecture")


def _onnx_with(path: Path, out: Path, change) -> Path:
    import onnx

    model = onnx.load(str(path))
    entry = next(e for e in model.metadata_props if e.key == "vitcli")
    info = json.loads(entry.value)
    entry.value = change(info) if callable(change) else change
    onnx.save(model, str(out))
    return out


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory) -> Path:
    folder = save_hub_layout(make_tiny_vit(4), tmp_path_factory.mktemp("m4"), ["a", "b", "c", "d"])
    out = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    result = runner.invoke(app, ["export", "--model", str(folder), "-o", str(out)])
    assert result.exit_code == 0, result.stderr
    return out


def _set(info: dict, **changes) -> str:
    info.update(changes)
    return json.dumps(info)


@pytest.mark.parametrize(
    "change,says",
    [
        (lambda i: _set(i, label_names=["a", "b"]), "names 2 labels but the graph gives 4 outputs"),
        (lambda i: _set(i, data_config={**i["data_config"], "input_size": [3, 64, 64]}), "the graph takes [3, 32, 32]"),
        (lambda i: json.dumps({k: v for k, v in i.items() if k != "data_config"}), "no valid data_config"),
        (lambda i: _set(i, data_config={**i["data_config"], "input_size": [3, 0, -1]}), "no valid data_config"),
        (lambda i: _set(i, data_config={**i["data_config"], "std": [0, 0, 0]}), "no valid data_config"),
        ("{not json", "is not valid JSON"),
    ],
)
def test_an_onnx_file_whose_metadata_does_not_fit_its_graph_is_one_line(onnx_file, tmp_path, make_images, change, says):
    bad = _onnx_with(onnx_file, tmp_path / "bad.onnx", change)
    one_line_error(vit("predict", "--model", bad, make_images(1)[0]), 1, says, "vit export")


@pytest.mark.parametrize(
    "key,value",
    [("input_size", [3, 0, 0]), ("input_size", [3, -32, 32]), ("img_size", -1), ("img_size", 0), ("num_classes", -3)],
)
def test_a_config_json_with_a_size_that_is_not_one_is_one_line(tmp_path, make_images, key, value):
    folder = save_hub_layout(make_tiny_vit(10), tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    (config["pretrained_cfg"] if key == "input_size" else config["model_args"])[key] = value
    (folder / "config.json").write_text(json.dumps(config))
    one_line_error(vit("predict", "--model", folder, make_images(1)[0]), 1, "config.json", key)


def test_hf_class_labels_out_of_range_are_one_line_when_opened(tmp_path):
    import datasets

    from vitcli.data.datasets import open_dataset
    from vitcli.errors import DataError

    png = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(png)
    rows = {"image": [{"bytes": png.read_bytes(), "path": "x.png"}] * 3, "label": [0, 7, 1]}
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(tmp_path / "hf"))
    info_path = tmp_path / "hf" / "dataset_info.json"
    info = json.loads(info_path.read_text())
    info["features"]["label"] = {"names": ["a", "b"], "_type": "ClassLabel"}  # what the file claims
    info_path.write_text(json.dumps(info))
    with pytest.raises(DataError, match="row 1 has label 7, outside the 2 classes"):
        open_dataset(str(tmp_path / "hf"), val_split=0.0)


# 8 ------------------------------------------------------------------------------------------ no hang
def test_a_fifo_or_device_given_as_an_image_is_refused_at_once(tiny_vit_dir, tmp_path, make_images):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    inputs = [fifo, make_images(1)[0]] + (["/dev/zero"] if os.path.exists("/dev/zero") else [])
    result = vit("predict", "--model", tiny_vit_dir, "--json", *inputs, timeout=30)
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert result.exit_code == 1 and len(records) == len(inputs)
    errors = {Path(r["path"]).name: r.get("error") for r in records}
    assert "a FIFO, not a regular file" in errors["pipe.png"]
    if "zero" in errors:
        assert "a device, not a regular file" in errors["zero"]


class _Drip(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "100000")
        self.end_headers()
        try:
            for _ in range(1000):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.05)
        except OSError:
            pass

    def log_message(self, *a):
        pass


def test_a_url_that_drips_bytes_meets_a_total_deadline(monkeypatch):
    from vitcli.data import urls
    from vitcli.errors import ImageError

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Drip)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(urls, "DEADLINE_S", 1.5)
    try:
        started = time.monotonic()
        with deadline(20), pytest.raises(ImageError, match="took over 1.5 s"):
            urls.fetch(f"http://127.0.0.1:{server.server_port}/x.jpg")
        assert time.monotonic() - started < 5
    finally:
        server.shutdown()


def test_a_yaml_alias_bomb_is_refused_before_it_expands(tree, tmp_path):
    levels = ["a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1]"] + [
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]" for i in range(8)
    ]
    (tmp_path / "bomb.yaml").write_text("steps: 1\nnested:\n" + "".join(f"  {line}\n" for line in levels))
    (tmp_path / "self.yaml").write_text("x: &x [*x]\n")
    for config, says in (("bomb.yaml", "expand to more than"), ("self.yaml", "refers to itself")):
        result = vit(
            *finetune("test_vit", tree, tmp_path / "p", "--config", tmp_path / config, "--dry-run"), timeout=20
        )
        one_line_error(result, 2, says)


def test_counting_many_architectures_shows_progress_without_a_terminal(monkeypatch):
    from vitcli.cli import models as models_cli
    from vitcli.models import zoo

    names = [f"arch{i}" for i in range(30)]
    monkeypatch.setattr(zoo, "architectures", lambda *a, **k: names)
    monkeypatch.setattr(zoo, "tags_by_architecture", dict)
    monkeypatch.setattr(
        zoo, "profile", lambda name: (time.sleep(0.01), zoo.ZooEntry(name, 1, 1.0, (3, 8, 8), [], None))[1]
    )
    monkeypatch.setattr(models_cli, "PROGRESS_EVERY_S", 0.05)
    result = vit("models", "**", "--json")
    assert result.exit_code == 0 and len(result.stdout.splitlines()) == 30
    assert "counting 30 architectures" in result.stderr and "counted" in result.stderr and "of 30" in result.stderr


# 9 ------------------------------------------------------------------------------- nothing finished lost
def test_sigterm_during_predict_prints_the_finished_rows(tiny_vit_dir, make_images, monkeypatch):
    from vitcli.inference import predict as predict_core

    images = make_images(6)
    real_open = predict_core.open_predictor

    def open_then_terminate(*args, **kwargs):  # the real predictor; SIGTERM after its third result
        predictor = real_open(*args, **kwargs)
        real_run = predictor.run

        def run(paths, **options):
            for i, pred in enumerate(real_run(paths, **options)):
                yield pred
                if i == 2:
                    os.kill(os.getpid(), signal.SIGTERM)
                    time.sleep(1)  # the handler raises here

        predictor.run = run
        return predictor

    monkeypatch.setattr(predict_core, "open_predictor", open_then_terminate)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    result = vit("predict", "--model", tiny_vit_dir, "--device", "cpu", "--batch-size", "1", "-k", "1", *images)
    assert result.exit_code == 143 and "terminated" in result.stderr
    shown = [p.name for p in images if p.name in result.stdout]
    assert shown == [p.name for p in images[:3]], result.stdout  # the three finished rows, nothing else
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # put back


def test_eval_prints_its_metrics_before_a_full_disk_stops_the_artefacts(colour_model, tree, tmp_path, monkeypatch):
    from vitcli.eval import reports

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "ev" / "metrics.json"))

    monkeypatch.setattr(reports, "write_artefacts", full)
    result = vit(
        "eval", "--model", colour_model, "--dataset", tree, "--split", "val", "--out-dir", tmp_path / "ev", "--json"
    )
    one_line_error(result, 1, "no space left on the device")
    assert json.loads(result.stdout)["num_images"] == 6


def test_output_naming_one_of_the_inputs_is_refused(tiny_vit_dir, tmp_path, make_images):
    images = make_images(2)
    listed = tmp_path / "list.csv"
    listed.write_text(f"{images[0]}\n")
    before = images[1].read_bytes()
    renamed = images[1].rename(images[1].with_suffix(".csv"))  # an image named like a results file
    one_line_error(
        vit("predict", "--model", tiny_vit_dir, "-o", renamed, renamed, images[0]), 2, "is one of the inputs"
    )
    assert renamed.read_bytes() == before
    one_line_error(vit("predict", "--model", tiny_vit_dir, "--list", listed, "-o", listed), 2, "is one of the inputs")
    assert listed.read_text() == f"{images[0]}\n"


def test_a_full_disk_at_a_checkpoint_leaves_run_json_failed_and_no_temporary_file(
    tiny_vit_dir, tree, tmp_path, monkeypatch
):
    import torch

    from vitcli.train.run import runs

    opened = []

    real_save = torch.save

    def full(obj, f, *a, **k):  # a checkpoint (written to an open file) gets some bytes, then the disk is full
        if not hasattr(f, "write"):
            return real_save(obj, f, *a, **k)  # the LP-FT probe's feature cache
        opened.append(f)
        f.write(b"x" * 1000)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    real_write = runs.atomic_write

    def run_json_full_too(path, data):  # the disk stays full: run.json cannot get a new file either
        if Path(path).name == "run.json" and "failed" in str(data):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_write(path, data)

    monkeypatch.setattr(runs, "atomic_write", run_json_full_too)
    result = vit(*finetune(tiny_vit_dir, tree, tmp_path / "p", "--name", "full", "--save-every", "1"))
    one_line_error(result, 1, "no space left on the device")
    run = tmp_path / "p" / "finetune" / "full"
    assert json.loads((run / "run.json").read_text())["status"] == "failed"
    assert opened and all(f.closed for f in opened)
    assert not [p for p in run.rglob("*") if ".tmp-" in p.name]


def test_full_stdout_mid_run_is_an_error_not_a_traceback(tmp_path):
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    with open("/dev/full", "w") as full:
        proc = python_vit(["models", "vit_tiny_patch16_224", "--json"], stdout=full, stderr=subprocess.PIPE)
    assert proc.returncode == 1 and b"Traceback" not in proc.stderr and b"error:" in proc.stderr, proc.stderr
