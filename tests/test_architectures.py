"""The token-mixer swap: every mixer in a tiny ViT, PoolFormer's stages, save/load through run folders."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import TINY_ARGS

MIXERS = ("attention", "pooling", "mlp", "identity")


def tiny_mixer_vit(mixer: str, num_classes: int = 5, **kwargs):
    from vitcli.models.resolver import load_model

    torch.manual_seed(0)
    args = {**TINY_ARGS, **kwargs}
    return load_model(
        "vit_tiny_patch16_224", pretrained=False, token_mixer=mixer, num_classes=num_classes, **args
    ).model


@pytest.mark.parametrize("mixer", MIXERS)
@pytest.mark.parametrize("pool", ["token", "avg"])
def test_mixer_shape_finite_and_gradients_reach_every_parameter(mixer, pool):
    model = tiny_mixer_vit(mixer, global_pool=pool)
    assert model.token_mixers == (mixer,)
    block = model.blocks[0]
    if mixer == "attention":
        assert type(block).__name__ == "Block"  # timm's own block: exactly a ViT
    else:
        assert type(block).__name__ == "MetaFormerBlock" and not hasattr(block, "attn")
    model.train()
    x = torch.randn(4, 3, 32, 32)
    out = model(x)
    assert out.shape == (4, 5)
    assert torch.isfinite(out).all()
    F.cross_entropy(out, torch.tensor([0, 1, 2, 3])).backward()
    for name, p in model.named_parameters():
        if pool == "avg" and mixer in ("pooling", "identity") and name == "cls_token":
            continue  # an avg head reads only patch tokens, and without attention no patch reads the class token
        assert p.grad is not None, f"{mixer}: no gradient for {name}"
        assert p.grad.abs().sum() > 0, f"{mixer}: zero gradient for {name}"


@pytest.mark.parametrize("mixer", MIXERS)
def test_reset_classifier(mixer):
    model = tiny_mixer_vit(mixer).eval()
    x = torch.randn(2, 3, 32, 32)
    model.reset_classifier(3)
    assert model(x).shape == (2, 3)
    model.reset_classifier(0)
    assert model(x).shape == (2, TINY_ARGS["embed_dim"])


def test_pooling_mixer_is_avgpool_minus_input():
    from timm.models.metaformer import Pooling as TimmPooling

    from vitcli.models.metaformer import Pooling

    torch.manual_seed(0)
    B, C, H, W = 2, 8, 5, 4
    grid = torch.randn(B, C, H, W)
    expected = F.avg_pool2d(grid, 3, stride=1, padding=1, count_include_pad=False) - grid
    assert torch.allclose(expected, TimmPooling()(grid))  # PoolFormer's own mixer, NCHW
    tokens = grid.flatten(2).transpose(1, 2)  # (B, HW, C), row-major like a ViT's patch tokens
    out = Pooling((H, W), num_prefix_tokens=0)(tokens)
    assert torch.allclose(out, expected.flatten(2).transpose(1, 2), atol=1e-6)
    # a class token: the patches are pooled exactly the same, the class token reads mean(patches) - itself
    cls = torch.randn(B, 1, C)
    out = Pooling((H, W), num_prefix_tokens=1)(torch.cat([cls, tokens], 1))
    assert torch.allclose(out[:, 1:], expected.flatten(2).transpose(1, 2), atol=1e-6)
    assert torch.allclose(out[:, :1], tokens.mean(1, keepdim=True) - cls, atol=1e-6)


def test_identity_does_not_mix_patches_and_mlp_does():
    from vitcli.models.metaformer import Identity, TokenMlp

    x = torch.randn(2, 1 + 16, 8)
    y = Identity(num_prefix_tokens=1)(x)
    assert torch.equal(y[:, 1:], x[:, 1:])
    mlp = TokenMlp(17, 4)
    x2 = x.clone()
    x2[:, 5] += 1.0  # change one token: the mlp output of other tokens changes, the identity's does not
    assert not torch.allclose(mlp(x)[:, 9], mlp(x2)[:, 9])
    assert torch.equal(Identity(1)(x)[:, 9], Identity(1)(x2)[:, 9])


@pytest.mark.parametrize("mixer", ["pooling", "mlp", "identity"])
def test_mixer_vit_round_trips_through_a_hub_folder(mixer, tmp_path):
    from timm.models import save_for_hf

    from vitcli.models.resolver import load_model

    model = tiny_mixer_vit(mixer, num_classes=3).eval()
    save_for_hf(model, str(tmp_path), model_config={"label_names": ["a", "b", "c"]}, safe_serialization=True)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["architecture"] == "vitcli_metaformer"
    assert cfg["model_args"]["token_mixer"] == mixer and cfg["model_args"]["base"] == "vit_tiny_patch16_224"
    loaded = load_model(str(tmp_path))
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(loaded.model(x), model(x), atol=1e-6)
    assert loaded.label_names == ["a", "b", "c"]
    assert loaded.data_config["input_size"][1:] in ([32, 32], (32, 32))
    assert loaded.model.token_mixers == (mixer,)


def test_pretrained_weights_keep_their_mixer(tiny_vit_dir):
    from vitcli.errors import ModelError
    from vitcli.models.resolver import load_model

    plain = load_model(str(tiny_vit_dir))
    same = load_model(str(tiny_vit_dir), token_mixer="attention")  # the same ViT through the swap
    x = torch.randn(1, 3, 32, 32)
    assert torch.allclose(plain.model(x), same.model(x), atol=1e-6)
    with pytest.raises(ModelError, match="trained from scratch"):
        load_model(str(tiny_vit_dir), token_mixer="pooling")


def test_poolformer_token_mixers_per_stage_and_round_trip(tmp_path):
    from timm.models import save_for_hf

    from vitcli.models.metaformer import AttentionNCHW
    from vitcli.models.resolver import load_model

    torch.manual_seed(0)
    loaded = load_model(
        "poolformer_s12", pretrained=False, num_classes=2, token_mixers="pooling,pooling,attention,attention"
    )
    model = loaded.model
    kinds = [type(stage.blocks[0].token_mixer).__name__ for stage in model.stages]
    assert kinds == ["Pooling", "Pooling", "AttentionNCHW", "AttentionNCHW"]
    assert isinstance(model.stages[3].blocks[0].token_mixer, AttentionNCHW)
    assert loaded.data_config["mean"] == pytest.approx((0.485, 0.456, 0.406))  # PoolFormer's own config
    x = torch.randn(2, 3, 64, 64)
    out = model(x)
    assert out.shape == (2, 2) and torch.isfinite(out).all()
    save_for_hf(model, str(tmp_path), safe_serialization=True)
    again = load_model(str(tmp_path))
    assert again.model.token_mixers == ("pooling", "pooling", "attention", "attention")
    assert torch.allclose(again.model(x), out, atol=1e-5)


def test_poolformer_plain_through_the_resolver():
    from vitcli.models.resolver import load_model

    loaded = load_model("poolformer_s12", pretrained=False, num_classes=4)
    assert loaded.architecture == "poolformer_s12"
    assert loaded.data_config["input_size"] == (3, 224, 224) and loaded.data_config["crop_pct"] == 0.9
    assert loaded.model(torch.randn(1, 3, 32, 32)).shape == (1, 4)
    assert loaded.label_names == ["0", "1", "2", "3"]


def test_bad_mixers_are_clear_errors():
    from vitcli.errors import ModelError
    from vitcli.models.resolver import load_model

    with pytest.raises(ModelError, match="unknown token mixer 'conv'"):
        load_model("vit_tiny_patch16_224", pretrained=False, token_mixer="conv", **TINY_ARGS)
    with pytest.raises(ModelError, match="one --token-mixer"):
        load_model("vit_tiny_patch16_224", pretrained=False, token_mixers="pooling,attention", **TINY_ARGS)
    with pytest.raises(ModelError, match="not available per stage"):
        load_model("poolformer_s12", pretrained=False, token_mixers="mlp,mlp,mlp,mlp")
    with pytest.raises(ModelError, match="4 stages"):
        load_model("poolformer_s12", pretrained=False, token_mixers="pooling,attention")
    with pytest.raises(ModelError, match="not an isotropic ViT or a PoolFormer"):
        load_model("resnet18", pretrained=False, token_mixer="pooling")
