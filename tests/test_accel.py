"""vitcli.accel: the private torch APIs behind one module (fail loudly when torch changes them), the one
measurement cache, prepare's record, `vit info`, and repeatable answers (issue 23)."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from tests.conftest import make_tiny_vit, save_hub_layout
from vitcli import accel
from vitcli.accel import cache, torch_private
from vitcli.accel.runtime import Runtime
from vitcli.cli.app import app

runner = CliRunner()
CPU = Runtime(torch.device("cpu"), "fp32")


# --- the private torch APIs: each is called here, so a torch release that changes one fails this file --------


@pytest.mark.skipif(not torch_private.onednn_linear_available(), reason="this torch build has no oneDNN")
def test_onednn_linear_is_linear_plus_gelu():
    x, w, b = torch.randn(6, 8), torch.randn(4, 8), torch.randn(4)
    with torch.inference_mode():
        assert torch.allclose(torch_private.onednn_linear(x, w, b), torch.nn.functional.linear(x, w, b), atol=1e-5)
        gelu = torch.nn.functional.gelu(torch.nn.functional.linear(x, w, b))
        assert torch.allclose(torch_private.onednn_linear(x, w, b, "gelu"), gelu, atol=1e-5)
        assert torch.allclose(torch_private.onednn_linear(x, w, None), x @ w.T, atol=1e-5)


def test_inductor_switches_exist():
    import torch._inductor.config as inductor_config

    before = inductor_config.freezing
    with torch_private.inductor_freezing(True):
        assert inductor_config.freezing is True
    assert inductor_config.freezing == before
    assert isinstance(torch_private.inductor_default_cache_dir(), str)


def test_no_private_torch_name_outside_torch_private():
    from pathlib import Path

    package = Path(accel.__file__).resolve().parents[1]
    found = [
        str(p)
        for p in package.rglob("*.py")
        if p.name != "torch_private.py"
        and any(s in p.read_text() for s in ("torch.ops.mkldnn", "torch._inductor", "_linear_pointwise"))
    ]
    assert not found, found


# --- the one cache ------------------------------------------------------------------------------------------


def test_a_measurement_is_taken_once_recorded_with_its_date_and_cleared(monkeypatch, tmp_path):
    monkeypatch.setenv("VIT_CACHE", str(tmp_path))
    calls = []
    measure = lambda: calls.append(1) or {"ok": True}  # noqa: E731
    assert cache.measured("probe", measure, lambda v: "ok" in v, "|x") == {"ok": True}
    assert cache.measured("probe", measure, lambda v: "ok" in v, "|x") == {"ok": True} and len(calls) == 1
    (entry,) = cache.entries().values()
    assert entry["name"] == "probe" and entry["detail"] == "x" and entry["measured"].startswith("20")
    assert entry["machine"] == cache.machine_key()
    assert cache.clear() == 1 and cache.entries() == {}
    cache.measured("probe", measure, lambda v: "ok" in v, "|x")
    assert len(calls) == 2  # measured again after a clear


def test_prepare_names_what_it_applied_and_chooses_the_same_every_time(monkeypatch, tmp_path):
    monkeypatch.setenv("VIT_CACHE", str(tmp_path))
    first, second = accel.prepare(make_tiny_vit(4), CPU), accel.prepare(make_tiny_vit(4), CPU)
    assert first == second and first.to_json()["linears"] in ("eager", "onednn fp32")
    assert accel.describe(make_tiny_vit(4)).describe() == "eager"
    with pytest.raises(ValueError):
        accel.prepare(make_tiny_vit(4), CPU, "bogus")


# --- vit info --------------------------------------------------------------------------------------------------


def test_vit_info_json_has_versions_choices_measurements_and_caches(monkeypatch, tmp_path):
    monkeypatch.setenv("VIT_CACHE", str(tmp_path / "vit"))
    result = runner.invoke(app, ["info", "--json"])
    assert result.exit_code == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["packages"]["torch"] == torch.__version__.split("+")[0] or info["packages"]["torch"]
    choices = {row["choice"]: row for row in info["choices"]}
    assert choices["precision"]["value"] in ("fp32", "bf16") and choices["precision"]["why"]
    assert choices["backend"]["value"] == "torch" and choices["compile"]["value"] == "off"
    assert {c["name"] for c in info["caches"]} >= {"measurements", "fast-start copies", "Hugging Face hub"}
    assert info["cache_dir"] == str(tmp_path / "vit")
    assert all(m["measured"] for m in info["measurements"])
    again = json.loads(runner.invoke(app, ["info", "--json"]).stdout)
    assert again["choices"] == info["choices"]  # recorded: the second run chooses the same
    cleared = runner.invoke(app, ["info", "--clear-cache", "--json"])
    assert cleared.exit_code == 0 and not (tmp_path / "vit" / "measurements.json").exists()
    assert [r["path"] for r in json.loads(cleared.stdout)["removed"]] == [str(tmp_path / "vit" / "measurements.json")]
    text = runner.invoke(app, ["info"])
    assert text.exit_code == 0 and "precision" in text.stdout and "measured" in text.stdout
    lines = text.stdout.splitlines()  # a pipe: each table tab-separated under its `# title`
    assert lines[lines.index("# choices") + 1] == "choice\tvalue\twhy"
    assert any(line.startswith(f"precision\t{choices['precision']['value']}\t") for line in lines)


# --- repeatable answers ----------------------------------------------------------------------------------------


def test_predict_answers_do_not_change_after_download_and_export(make_images, tmp_path, monkeypatch):
    """Issue 23: the first and the later runs of one predict print the same, whatever copies appear."""
    from tests.hubserver import LocalHub

    model_dir = save_hub_layout(make_tiny_vit(5, seed=3), tmp_path / "m", [f"k{i}" for i in range(5)])
    images = make_images(5, folder=tmp_path / "imgs")
    monkeypatch.setenv("VIT_CACHE", str(tmp_path / "vit"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with LocalHub({"org/tiny": model_dir}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        predict = ["predict", "--model", "hf-hub:org/tiny", "--json", *map(str, images)]
        outputs = [runner.invoke(app, predict)]
        assert runner.invoke(app, ["download", "hf-hub:org/tiny"]).exit_code == 0
        outputs.append(runner.invoke(app, predict))
        assert (
            runner.invoke(app, ["export", "--model", "hf-hub:org/tiny", "-o", str(tmp_path / "t.onnx")]).exit_code == 0
        )
        outputs.append(runner.invoke(app, predict))
    assert all(o.exit_code == 0 for o in outputs), [o.stderr for o in outputs]
    assert outputs[0].stdout == outputs[1].stdout == outputs[2].stdout
    assert all(json.loads(line)["backend"] == "torch" for line in outputs[2].stdout.splitlines())


def test_predict_and_eval_give_every_image_the_same_top1(tiny_vit_dir, make_images, tmp_path):
    paths = make_images(7, folder=tmp_path / "val")
    labels = tmp_path / "labels.txt"
    labels.write_text("".join(f"{p.name} {i % 3}\n" for i, p in enumerate(paths)))
    pred = runner.invoke(
        app, ["predict", "--model", str(tiny_vit_dir), "--json", "-k", "1", "-b", "3", *map(str, paths)]
    )
    ev = runner.invoke(
        app,
        [
            "eval",
            "--model",
            str(tiny_vit_dir),
            "--data",
            str(tmp_path / "val"),
            "--labels",
            str(labels),
            "--out-dir",
            str(tmp_path / "out"),
            "--json",
        ],
    )
    assert pred.exit_code == 0 and ev.exit_code == 0, pred.stderr + ev.stderr
    predicted = {
        r["path"].rsplit("/", 1)[-1]: r["predictions"][0]["index"] for r in map(json.loads, pred.stdout.splitlines())
    }
    rows = (tmp_path / "out" / "predictions.csv").read_text().splitlines()[1:]
    evaluated = {r.split(",")[0].rsplit("/", 1)[-1]: int(r.split(",")[2]) for r in rows}
    assert predicted == evaluated and len(predicted) == 7
