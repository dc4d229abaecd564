"""Hub downloads against a local Hub server: cache, offline mode and every failure, one line each."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from tests.conftest import make_tiny_vit, save_hub_layout
from tests.hubserver import LocalHub
from vitcli.cli import app

runner = CliRunner()
REPO = "acme/tiny-vit"


@pytest.fixture
def hub(tiny_vit_dir, monkeypatch):
    with LocalHub({REPO: tiny_vit_dir}) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        yield server


@pytest.fixture
def image(make_images):
    return str(make_images(1)[0])


def _predict(image, model=f"hf-hub:{REPO}", *extra):
    return runner.invoke(app, ["predict", image, "--model", model, "--json", *extra])


def _one_error_line(result) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_first_download_then_cache_then_offline(hub, image):
    first = _predict(image)
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["predictions"][0]["label"].startswith("class")
    fetched = hub.downloads()
    assert any("config.json" in p for p in fetched)
    assert any("model.safetensors" in p for p in fetched)  # the weights came from the CDN origin

    hub.log.clear()
    second = _predict(image)
    assert second.exit_code == 0 and second.stdout == first.stdout
    assert hub.log == []  # from the cache: no request at all

    offline = _predict(image, f"hf-hub:{REPO}", "--offline")
    assert offline.exit_code == 0 and offline.stdout == first.stdout
    assert hub.log == []


def test_offline_with_empty_cache(hub, image):
    result = _predict(image, f"hf-hub:{REPO}@v2", "--offline")
    line = _one_error_line(result)
    assert "offline" in line and "not in the cache" in line
    assert f"hf-hub:{REPO}@v2" in line  # the error names the model
    assert f"hint: run `vit download hf-hub:{REPO}@v2` once while online" in result.stderr
    assert hub.log == []


def test_offline_download_says_it_needs_the_network(hub, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = runner.invoke(app, ["download", f"hf-hub:{REPO}", "--no-fast-start"])
    line = _one_error_line(result)
    assert f"hf-hub:{REPO}" in line and "needs the network" in line
    assert "vit download" not in result.stderr  # never "run vit download" to a vit download
    assert hub.log == []


def test_offline_from_environment(hub, image, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert "offline" in _one_error_line(_predict(image))


def test_unknown_repo(hub, image):
    line = _one_error_line(_predict(image, "hf-hub:acme/nope"))
    assert "acme/nope" in line and "not found" in line


def test_unknown_revision(hub, image):
    line = _one_error_line(_predict(image, f"hf-hub:{REPO}@v9"))
    assert "revision" in line


def test_connection_refused(image, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    line = _one_error_line(_predict(image))
    assert "cannot connect" in line and "127.0.0.1:9" in line


def test_unknown_host_fails_at_once_without_the_hub_retries(image, monkeypatch):
    import huggingface_hub

    def no_download(*args, **kwargs):
        if not kwargs.get("local_files_only"):
            raise AssertionError("huggingface_hub was asked to download (and to retry for 23 s)")
        return real(*args, **kwargs)

    real = huggingface_hub.hf_hub_download
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_download)
    monkeypatch.setenv("HF_ENDPOINT", "http://nonexistent.invalid")
    line = _one_error_line(_predict(image))
    assert "cannot connect" in line and "nonexistent.invalid" in line


def test_dropped_connection_resumes(hub, image):
    hub.drop_after = {"model.safetensors": 1000}
    hub.drops_left = 1
    result = _predict(image)
    assert result.exit_code == 0, result.output
    ranges = [p for o, m, p in hub.log if o == "cdn" and m == "GET"]
    assert len(ranges) == 2  # cut once, then resumed


@pytest.mark.slow
def test_dropped_connection_that_keeps_failing(hub, image):
    hub.drop_after = {"model.safetensors": 1000}
    hub.drops_left = 100
    line = _one_error_line(_predict(image))
    assert "interrupted" in line or "incomplete" in line


@pytest.fixture(scope="module")
def vit_ti_repo(tmp_path_factory):
    """A randomly initialised ViT-Ti/16 in the layout of timm's Hub repo for the real tag."""
    folder = tmp_path_factory.mktemp("vit_ti")
    model = make_tiny_vit(1000, img_size=224, patch_size=16, embed_dim=192, depth=1, num_heads=3, mlp_ratio=4.0)
    save_hub_layout(model, folder)
    return folder


def test_timm_name_download_then_offline(vit_ti_repo, image, monkeypatch):
    """A timm name finds its Hub repo in timm's pretrained config; `vit download` prefetches it."""
    import timm

    name = "vit_tiny_patch16_224.augreg_in21k_ft_in1k"
    assert timm.models.get_pretrained_cfg(name).hf_hub_id == f"timm/{name}"
    # depth=1 checkpoint: serve it as the real repo, build the model with the same depth
    with LocalHub({f"timm/{name}": vit_ti_repo}) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        result = runner.invoke(app, ["download", name, "--json"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["weights"].endswith("model.safetensors")
    # the server is gone: offline use works from the cache
    from vitcli import env
    from vitcli.models.resolver import fetch, parse_spec

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert env.offline()
    source = fetch(parse_spec(name))
    assert source.weights.name == "model.safetensors" and source.weights.is_file()
