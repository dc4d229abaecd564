"""Shared fixtures: a tiny ViT in Hub layout, synthetic images, the optional real assets."""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ASSETS = Path(os.environ.get("VIT_ASSETS", REPO.parent / "shared" / "assets"))

# Never reach the real Hub from tests, never show progress bars, never write to the user's cache.
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.setdefault("HF_ENDPOINT", "http://127.0.0.1:9")  # a closed port: a stray request fails fast
os.environ["VIT_PROGRESS"] = "0"
# fixtures wider than a test (module, session) run outside `_isolated_cache`: they get a cache of the session
_SESSION_CACHE = Path(tempfile.mkdtemp(prefix="vitcli-tests-"))
atexit.register(shutil.rmtree, _SESSION_CACHE, True)
os.environ["VIT_CACHE"] = str(_SESSION_CACHE / "vit")
os.environ["HF_HOME"] = str(_SESSION_CACHE / "hf")
os.environ.pop("HF_HUB_CACHE", None)

TINY_ARGS = dict(img_size=32, patch_size=4, embed_dim=64, depth=2, num_heads=2, mlp_ratio=2.0)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Each test gets an empty HF cache and vitcli cache unless it sets its own; offline mode is off."""
    base = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("HF_HOME", str(base / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("VIT_CACHE", str(base / "vit"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)


def make_tiny_vit(num_classes: int = 10, seed: int = 0, **kwargs):
    """A ViT under 1 M parameters at 32 px (timm's VisionTransformer)."""
    import timm
    import torch

    torch.manual_seed(seed)
    args = {**TINY_ARGS, **kwargs}
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=num_classes, **args)
    return model.eval()


def save_hub_layout(model, folder: Path, label_names=None) -> Path:
    """config.json + model.safetensors, exactly as timm writes them for the Hub."""
    from timm.models import save_for_hf

    config = {"label_names": list(label_names)} if label_names else None
    save_for_hf(model, str(folder), model_config=config, safe_serialization=True)
    return folder


@pytest.fixture(scope="session")
def tiny_vit_dir(tmp_path_factory) -> Path:
    """A local Hub-layout folder with a tiny 10-class ViT (labels class0..class9)."""
    folder = tmp_path_factory.mktemp("tiny_vit")
    return save_hub_layout(make_tiny_vit(10), folder, [f"class{i}" for i in range(10)])


@pytest.fixture
def make_images(tmp_path):
    """make_images(n, size=(40, 40), folder=None, fmt='png') -> list of synthetic RGB image paths."""
    import numpy as np
    from PIL import Image

    def _make(n: int, size=(40, 40), folder: Path | None = None, fmt: str = "png", seed: int = 0):
        folder = Path(folder or tmp_path / "images")
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(seed)
        paths = []
        for i in range(n):
            arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
            path = folder / f"img{i:03d}.{fmt}"
            Image.fromarray(arr).save(path)
            paths.append(path)
        return paths

    return _make


def make_colour_tree(root: Path, counts: dict, colours=((200, 40, 40), (40, 40, 200), (40, 200, 40))) -> Path:
    """An ImageFolder tree: for each split in `counts` (e.g. {"train": 16, "val": 4}), that many noisy
    36 px images of each colour class c0, c1, ... A dataset a tiny ViT learns in a few steps."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in counts.items():
        for c, colour in enumerate(colours):
            folder = root / split / f"c{c}"
            folder.mkdir(parents=True)
            for i in range(n):
                arr = np.clip(rng.normal(colour, 40, (36, 36, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(arr).save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="session")
def assets() -> Path:
    """The real assets beside the repo (../shared/assets); tests using them skip when absent."""
    if not (ASSETS / "models" / "vit_tiny_patch16_224.augreg_in21k_ft_in1k" / "model.safetensors").is_file():
        pytest.skip("../shared/assets is not present")
    return ASSETS


@contextmanager
def deadline(seconds: int):
    """Fail (instead of hanging the suite) when the block runs longer than `seconds`."""

    def alarm(*_):
        raise TimeoutError(f"still running after {seconds} s: a hang")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
