"""The CLI shell: fast start, version, help, error mapping, generated files up to date."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from vitcli import __version__
from vitcli.cli import app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _run(*args, **env):
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, cwd=ROOT, env={**os.environ, **env}, timeout=120
    )


def test_import_cli_loads_no_heavy_modules():
    code = (
        "import sys, vitcli.cli; heavy = [m for m in ('torch', 'timm', 'huggingface_hub', 'torchvision', "
        "'numpy', 'PIL', 'matplotlib') if m in sys.modules]; print(heavy)"
    )
    result = _run("-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_help_and_completion_do_not_import_torch():
    code = (
        "import sys; sys.argv = ['vit', '--help']\n"
        "from vitcli.cli import app\n"
        "try:\n    app(prog_name='vit')\nexcept SystemExit:\n    pass\n"
        "print('TORCH' if 'torch' in sys.modules else 'LIGHT', file=sys.stderr)"
    )
    result = _run("-c", code)
    assert "predict" in result.stdout and result.stderr.strip().endswith("LIGHT")
    complete = _run("-m", "vitcli", _VIT_COMPLETE="complete_bash", COMP_WORDS="vit pre", COMP_CWORD="1")
    assert "predict" in complete.stdout


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"vit {__version__}"


def test_python_dash_m():
    result = _run("-m", "vitcli", "--version")
    assert result.returncode == 0 and __version__ in result.stdout


def test_usage_error_exits_2():
    result = runner.invoke(app, ["predict"])
    assert result.exit_code == 2


def test_bad_device_is_one_line(tiny_vit_dir, make_images):
    result = runner.invoke(app, ["predict", str(make_images(1)[0]), "--model", str(tiny_vit_dir), "--device", "tpu"])
    assert result.exit_code == 2
    assert result.stderr.splitlines()[0] == "error: unknown device 'tpu'"


def test_unexpected_errors_keep_their_traceback(monkeypatch, make_images, tiny_vit_dir):
    import vitcli.inference.predict

    def boom(*a, **k):
        raise ZeroDivisionError("bug")

    monkeypatch.setattr(vitcli.inference.predict, "run", boom)
    result = runner.invoke(app, ["predict", str(make_images(1)[0]), "--model", str(tiny_vit_dir)])
    assert result.exit_code == 1
    assert "Traceback" in result.stderr and "a bug in vitcli" in result.stderr


def test_debug_shows_traceback_for_user_errors(monkeypatch):
    monkeypatch.setenv("VIT_DEBUG", "1")
    result = runner.invoke(app, ["download", "hf-hub:bad"])
    assert result.exit_code == 1 and "Traceback" in result.stderr


def test_generated_files_are_up_to_date():
    """completions/ and docs/reference.md come from the app: regenerate with `python scripts/gendocs.py`."""
    result = _run("scripts/gendocs.py", "--check")
    assert result.returncode == 0, result.stderr


def test_process_exit_codes_output_and_a_closed_pipe(tiny_vit_dir, make_images):
    """`vit` as a process (main() skips the interpreter teardown once torch is loaded): stdout is
    complete, exit codes survive, and a reader that leaves early (`| head`) gets no traceback."""
    images = make_images(200)  # x 10 labels: more JSON than a pipe buffers (64 KiB), so the writer must block
    ok = _run(
        "-m",
        "vitcli",
        "predict",
        "--model",
        str(tiny_vit_dir),
        "--json",
        "-k",
        "10",
        "--workers",
        "0",
        str(images[0].parent),
    )
    assert ok.returncode == 0, ok.stderr
    assert len(ok.stdout.splitlines()) == 200 and len(ok.stdout) > 65536 and ok.stdout.endswith("}\n")
    bad = _run("-m", "vitcli", "predict", "--model", str(tiny_vit_dir), str(images[0]), "missing.png")
    assert bad.returncode == 1 and "missing.png" in bad.stderr and "Traceback" not in bad.stderr
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vitcli",
            "predict",
            "--model",
            str(tiny_vit_dir),
            "--json",
            "-k",
            "10",
            "--workers",
            "0",
            str(images[0].parent),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    proc.stdout.readline()
    proc.stdout.close()  # the reader leaves after one line
    stderr = proc.stderr.read()
    assert proc.wait(timeout=120) == 141 and "Traceback" not in stderr


def test_a_bad_environment_value_is_one_line_naming_the_variable(tiny_vit_dir, make_images):
    image = str(make_images(1)[0])
    cases = {
        "VIT_MAX_IMAGE_PIXELS": ("abc", "is not a whole number"),
        "VIT_PROGRESS": ("maybe", "yes/no"),
        "VIT_KERNELS": ("fast", "yes/no"),
        "HF_ENDPOINT": ("notaurl", "not an http(s) URL"),
    }
    for name, (value, says) in cases.items():
        model = "vit_tiny_patch16_224.augreg_in21k_ft_in1k" if name == "HF_ENDPOINT" else str(tiny_vit_dir)
        result = runner.invoke(
            app, ["predict", "--model", model, "--device", "cpu", image], env={name: value, "VIT_EXPORT": "0"}
        )
        assert result.exit_code == 2, (name, result.output)
        assert f"{name}={value!r}" in result.stderr and says in result.stderr and "Traceback" not in result.stderr
