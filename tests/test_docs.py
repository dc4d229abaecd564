"""The front door and the docs site: a short README whose first two bash blocks are what CI runs, links
that resolve, and an mkdocs site that builds with --strict (no broken link, image or anchor, no page
left out of the nav)."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_readme_is_a_short_front_door():
    assert len(README.splitlines()) <= 400
    assert "<details>" not in README  # the --help texts live in docs/reference.md


def test_readme_starts_with_the_two_commands_ci_runs():
    """.ci/run takes the README's first two ```bash blocks: install + the main job, then the tests."""
    blocks = re.findall(r"```bash\n(.*?)```", README, re.DOTALL)
    assert len(blocks) >= 2
    install, tests = blocks[0], blocks[1]
    assert "pip install -e '.[dev]'" in install and "vit predict" in install
    assert "pytest" in tests


def test_readme_links_and_picture_exist():
    targets = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README)
    local = [t for t in targets if "://" not in t]
    assert any(t.endswith(".png") for t in local), "the README shows one picture"
    missing = [t for t in local if not (ROOT / t).exists()]
    assert not missing, missing


@pytest.mark.skipif(
    importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None,
    reason="mkdocs-material is not installed (pip install -e '.[docs]')",
)
def test_mkdocs_build_strict(tmp_path):
    """Every page in the nav exists and every link, image and anchor in it resolves."""
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "reference" / "index.html").is_file()
