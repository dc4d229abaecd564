"""`vit models`: counts without weights that match timm's published numbers; the listing and its cache."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

# timm's own numbers: results/benchmark-infer-amp-nchw-pt240-cu124-rtx4090.csv in
# huggingface/pytorch-image-models (columns param_count in M, infer_gmacs), input 224.
PUBLISHED = {
    "vit_tiny_patch16_224": (5.72, 1.26),
    "vit_base_patch16_224": (86.57, 17.58),
    "poolformer_s12": (11.92, 1.82),
    "mixer_b16_224": (59.88, 12.62),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_counts_match_timms_published_numbers(name):
    from vitcli.models import zoo

    entry = zoo.profile(name)
    params_m, gmacs = PUBLISHED[name]
    assert entry.error is None
    assert entry.input_size == (3, 224, 224)
    assert round(entry.params / 1e6, 2) == params_m
    assert round(entry.gmacs, 2) == gmacs
    assert entry.gflops == pytest.approx(2 * entry.gmacs)


def test_meta_count_equals_a_real_forward_count():
    import timm
    import torch

    from vitcli.models import zoo
    from vitcli.models.meta import count_flops

    torch.manual_seed(0)
    real = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64).eval()
    params = sum(p.numel() for p in real.parameters())
    macs = count_flops(real, torch.zeros(1, 3, 64, 64), timm_convention=True) / 2
    meta = zoo.profile("vit_tiny_patch16_224", img_size=64)
    assert meta.input_size == (3, 64, 64)
    assert (meta.params, round(meta.gmacs * 1e9)) == (params, round(macs))
    assert all(p.requires_grad for p in real.parameters())  # counting leaves the model as it was
    assert not real.training


def test_default_families():
    from vitcli.models import zoo

    names = zoo.architectures()
    for name in (
        "vit_base_patch16_224",
        "vit_base_r50_s16_384",
        "deit_small_patch16_224",
        "deit3_base_patch16_224",
        "poolformer_s12",
        "poolformerv2_m48",
        "mixer_b16_224",
    ):
        assert name in names
    assert "resnet50" not in names and "convnext_tiny" not in names
    assert "resnet50" in zoo.architectures(all_models=True)
    assert zoo.architectures("augreg2") == sorted(zoo.architectures("augreg2"))
    assert "vit_base_patch16_224" in zoo.architectures("augreg2")  # matched through its pretrained tag


def test_vit_models_pattern_table_json_and_cache(monkeypatch):
    from vitcli.cli import app
    from vitcli.models import zoo

    runner = CliRunner()
    result = runner.invoke(app, ["models", "poolformer*_s12"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()  # piped: tab-separated
    assert lines[0].split("\t")[:2] == ["model", "params (M)"]
    row = next(line for line in lines if line.startswith("poolformer_s12\t"))
    assert row.split("\t")[1:6] == ["11.92", "1.82", "3.65", "224x224", "sail_in1k"]
    assert any(line.startswith("poolformerv2_s12\t") for line in lines)

    def no_recount(name, **kw):  # the second listing comes from the cache
        raise AssertionError(f"recounted {name}")

    monkeypatch.setattr(zoo, "profile", no_recount)
    result = runner.invoke(app, ["models", "poolformer*_s12", "--json"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    by_name = {r["model"]: r for r in rows}
    assert set(by_name) == {"poolformer_s12", "poolformerv2_s12"}
    assert by_name["poolformer_s12"]["params"] == 11915176
    assert by_name["poolformer_s12"]["input_size"] == [3, 224, 224]
    assert by_name["poolformer_s12"]["tags"] == ["sail_in1k"]


def test_vit_models_no_match():
    from vitcli.cli import app

    result = CliRunner().invoke(app, ["models", "no_such_model_xyz"])
    assert result.exit_code == 2
    assert "no architecture matches" in result.stderr


def test_swapped_mixers_are_counted():
    from vitcli.models import zoo

    attn = zoo.profile("vitcli_metaformer", base="vit_small_patch16_224", token_mixer="attention")
    pool = zoo.profile("vitcli_metaformer", base="vit_small_patch16_224", token_mixer="pooling")
    plain = zoo.profile("vit_small_patch16_224")
    assert (attn.params, attn.gmacs) == (plain.params, plain.gmacs)
    assert pool.params < attn.params and pool.gmacs < attn.gmacs  # no qkv/proj weights, no attention products
