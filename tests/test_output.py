"""The output rules every command follows: tables fit the terminal (paths relative to the input root,
never split mid-word, no "…"); piped output is plain tab-separated lines, never cut; results on
stdout, messages on stderr; one error style (`error:` + `hint:`), exit 1 for input, 2 for usage."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from tests.conftest import make_tiny_vit, save_hub_layout
from vitcli.cli import app, tables

ANSI = re.compile(r"\x1b\[[0-9;]*m")
TERMINAL = {"TTY_COMPATIBLE": "1", "NO_COLOR": "1"}  # rich then treats stdout as a terminal
LABELS = [
    "night snake, Hypsiglena torquata",
    "bald eagle, American eagle, Haliaeetus leucocephalus",
    "porcupine, hedgehog",
]


@pytest.fixture(scope="module")
def long_label_model(tmp_path_factory):
    return save_hub_layout(make_tiny_vit(3), tmp_path_factory.mktemp("labels"), LABELS)


@pytest.fixture
def deep_images(make_images, tmp_path):
    """12 images two folders deep under a long root, so whole paths would never fit 80 columns."""
    root = tmp_path / "a-rather-long-folder-name-for-a-photo-collection" / "holidays-2026"
    return root, make_images(6, folder=root / "beach") + make_images(6, folder=root / "mountains", seed=1)


def _lines(text: str) -> list[str]:
    return [ANSI.sub("", line) for line in text.splitlines()]


def test_predict_table_fits_80_columns_one_line_per_image(long_label_model, deep_images):
    root, images = deep_images
    result = CliRunner().invoke(
        app, ["predict", "-k", "1", "--model", str(long_label_model), str(root)], env={**TERMINAL, "COLUMNS": "80"}
    )
    assert result.exit_code == 0, result.output
    lines = _lines(result.stdout)
    assert all(len(line) <= 80 for line in lines), lines
    assert "…" not in result.stdout
    assert lines[0].split() == ["image", "label", "index", "score"]  # no rank column for -k 1
    # about one line per image: only a long label wraps, at a space
    assert len(images) + 1 <= len(lines) <= 2 * len(images) + 1
    assert str(root) not in result.stdout  # paths relative to the input root, which stderr names
    assert f"images in {root}" in result.stderr
    assert sum(line.startswith(("beach/img", "mountains/img")) for line in lines) == len(images)
    words = {w for label in LABELS for w in label.replace(",", "").split()}
    for line in lines[1:]:  # every word of a label is whole on its line
        for token in re.findall(r"[A-Za-z]+", line.split("  ")[-3] if "  " in line else line):
            assert token in words or token in {"beach", "mountains", "img", "png"}, line


def test_narrow_terminal_breaks_paths_after_a_slash_never_inside_a_name():
    columns = [tables.Column("image", wrap="path"), tables.Column("label"), tables.Column("score", right=True)]
    row = ["holidays/beach/sunset-over-the-water.jpg", "night snake, Hypsiglena torquata", "0.9000"]
    widths = tables.fit([c.wrap for c in columns], [row], 50)
    assert sum(widths) + tables.GAP * 2 <= 50
    lines = tables._layout(columns, row, widths)
    assert [line.split("  ")[0].strip() for line in lines if line.split("  ")[0].strip()][:2] == [
        "holidays/beach/",
        "sunset-over-the-water.jpg",
    ]
    assert "torquata" in "".join(lines) and all(len(line) <= 50 for line in lines)
    # narrower than the longest word: the line runs long rather than cutting a word
    assert "sunset-over-the-water.jpg" in "\n".join(
        tables._layout(columns, row, tables.fit([c.wrap for c in columns], [row], 10))
    )


def test_piped_output_is_tab_separated_whole_and_never_truncated(long_label_model, deep_images):
    root, images = deep_images
    result = CliRunner().invoke(
        app, ["predict", "-k", "2", "--model", str(long_label_model), str(root)], env={"COLUMNS": "20"}
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "image\trank\tlabel\tindex\tscore"
    assert len(lines) == 1 + 2 * len(images)
    rows = [line.split("\t") for line in lines[1:]]
    assert all(len(r) == 5 for r in rows)
    assert {r[0] for r in rows} == {str(p) for p in images}  # whole paths, as given
    assert {r[2] for r in rows} <= set(LABELS) and "…" not in result.stdout
    assert "\x1b[" not in result.stdout


def test_results_on_stdout_messages_on_stderr(long_label_model, make_images):
    image = make_images(1)[0]
    result = CliRunner().invoke(
        app, ["predict", "-k", "1", "--model", str(long_label_model), str(image), str(image.parent / "missing.png")]
    )
    assert result.exit_code == 1
    assert result.stdout.splitlines()[1].split("\t")[0] == str(image)  # the result
    assert " cpu " in result.stderr and "error:" in result.stderr and "warning:" in result.stderr
    assert "error" not in result.stdout and " cpu " not in result.stdout


def test_a_result_table_goes_to_stdout(capsys, monkeypatch):
    """Tables of results (here visualize's faithfulness table) are printed on stdout, never stderr."""
    from vitcli.cli import visualize

    result = {
        "faithfulness_setup": {"num_images": 2, "steps": 3},
        "faithfulness": {"gradcam": {"deletion_auc": 0.1, "insertion_auc": 0.9}},
    }
    visualize._faithfulness_table(result)
    out, err = capsys.readouterr()
    assert "gradcam\t0.1000\t0.9000" in out and err == ""


@pytest.mark.parametrize(
    "args",
    [
        ["predict", "--no-such-flag"],
        ["no-such-command"],
        ["predict", "-k", "0", "x"],
        ["finetune", "--steps", "many"],
        ["--bogus"],
        ["predict", "--model"],
    ],
)
def test_usage_errors_are_one_error_line_exit_2_no_box(args):
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert lines[0].startswith("error: ") and lines[1].startswith(("hint: usage: vit", "hint: see `vit"))
    assert not any(ch in result.output for ch in "╭│╰"), result.output
    assert result.stdout == ""


def test_user_errors_exit_1_in_the_same_style(tmp_path):
    result = CliRunner().invoke(app, ["predict", "--model", str(tmp_path / "nowhere"), "x.jpg"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and "\nhint: " in result.stderr
