"""Token mixers and the MetaFormer swap: the same timm model with its token mixer replaced.

MetaFormer (Yu et al. 2022) reads a transformer block as `norm -> token mixer -> residual,
norm -> channel MLP -> residual` and claims the block shape matters more than the mixer. This module
lets one flag test that claim on timm's own models:

  - the isotropic ViT (timm's VisionTransformer): `token_mixer` in attention | pooling | mlp |
    identity, injected through VisionTransformer's `block_fn=` (attention keeps timm's own Block, so
    its weights are exactly a ViT's);
  - PoolFormer v1/v2 (timm's MetaFormer): `token_mixers`, one mixer per stage, e.g.
    pooling,pooling,attention,attention (the paper's hybrid).

Both are reached through one registered timm entrypoint, `vitcli_metaformer(base=..., token_mixer=...)`,
so the run folder's config.json (`architecture` + `model_args`) rebuilds the model with
`timm.create_model` once this module is imported (vitcli.models does that).

Prefix (class/register) tokens have no place on the patch grid. The ViT mixers treat them so:
  - attention: as timm does (every token attends to every token);
  - pooling: patch tokens get PoolFormer's `avgpool3x3(x) - x` on the grid; each prefix token gets
    the average of all patch tokens minus itself (the same pool-minus-input form, over the whole grid);
  - identity: patch tokens are returned unchanged (PoolFormer's nn.Identity ablation: no mixing between
    patches); prefix tokens read the patch average as in pooling, because a class token that never
    sees a patch would make a class-token head blind (with `global_pool='avg'` it does not matter);
  - mlp: MLP-Mixer's token-mixing MLP across all tokens, prefix tokens included.
"""

from __future__ import annotations

from functools import partial

import torch
from timm.layers import DropPath, LayerScale, Mlp
from timm.models import register_model
from torch import nn

ARCH = "vitcli_metaformer"
MIXERS = ("attention", "pooling", "mlp", "identity")
HIERARCHY_MIXERS = ("attention", "pooling", "identity")  # mlp needs a fixed token count per stage


# ---------------------------------------------------------------------------------------------
# Token mixers for a token sequence (B, N, C) whose first `num_prefix_tokens` are not on the grid.


class Pooling(nn.Module):
    """PoolFormer's mixer on the patch grid: avgpool(x) - x (the block adds x back)."""

    def __init__(self, grid_size: tuple[int, int], num_prefix_tokens: int = 0, pool_size: int = 3):
        super().__init__()
        self.grid_size = tuple(grid_size)
        self.num_prefix_tokens = num_prefix_tokens
        self.pool = nn.AvgPool2d(pool_size, stride=1, padding=pool_size // 2, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        prefix, patches = x[:, : self.num_prefix_tokens], x[:, self.num_prefix_tokens :]  # (B, P, C), (B, HW, C)
        B, L, C = patches.shape
        grid = patches.transpose(1, 2).reshape(B, C, *self.grid_size)  # (B, C, H, W)
        mixed = (self.pool(grid) - grid).flatten(2).transpose(1, 2)  # (B, HW, C)
        if not self.num_prefix_tokens:
            return mixed
        return torch.cat([patches.mean(1, keepdim=True) - prefix, mixed], dim=1)


class Identity(nn.Module):
    """No mixing between patches (the paper's identity ablation); prefix tokens read the patch average."""

    def __init__(self, num_prefix_tokens: int = 0):
        super().__init__()
        self.num_prefix_tokens = num_prefix_tokens

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.num_prefix_tokens:
            return x
        prefix, patches = x[:, : self.num_prefix_tokens], x[:, self.num_prefix_tokens :]
        return torch.cat([patches.mean(1, keepdim=True) - prefix, patches], dim=1)


class TokenMlp(nn.Module):
    """MLP-Mixer's token mixing: one MLP across the N tokens, shared by every channel."""

    def __init__(self, num_tokens: int, hidden: int, act_layer=nn.GELU, drop: float = 0.0, device=None, dtype=None):
        super().__init__()
        self.mlp = Mlp(num_tokens, hidden, act_layer=act_layer, drop=drop, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x.transpose(1, 2)).transpose(1, 2)  # (B, C, N) -> mix N -> (B, N, C)


class MetaFormerBlock(nn.Module):
    """norm -> token mixer -> residual, norm -> channel MLP -> residual, with timm Block's arguments.

    `mixer` builds the token mixer from the width; everything else is what VisionTransformer passes
    its `block_fn`, so the block is a drop-in for timm's Block (same names for norms, MLP, scales).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 1,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = False,
        qk_norm: bool = False,
        scale_attn_norm: bool = False,
        scale_mlp_norm: bool = False,
        proj_bias: bool = True,
        proj_drop: float = 0.0,
        attn_drop: float = 0.0,
        init_values=None,
        drop_path: float = 0.0,
        act_layer=nn.GELU,
        norm_layer=nn.LayerNorm,
        mlp_layer=Mlp,
        attn_layer=None,
        depth: int = 0,
        device=None,
        dtype=None,
        *,
        mixer,
    ):
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.norm1 = norm_layer(dim, **dd)
        self.token_mixer = mixer(dim, **dd)
        self.ls1 = LayerScale(dim, init_values=init_values, **dd) if init_values else nn.Identity()
        self.drop_path1 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim, **dd)
        self.mlp = mlp_layer(
            in_features=dim,
            hidden_features=int(dim * mlp_ratio),
            act_layer=act_layer,
            norm_layer=norm_layer if scale_mlp_norm else None,
            bias=proj_bias,
            drop=proj_drop,
            **dd,
        )
        self.ls2 = LayerScale(dim, init_values=init_values, **dd) if init_values else nn.Identity()
        self.drop_path2 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor, attn_mask=None, is_causal: bool = False) -> torch.Tensor:  # (B, N, C)
        x = x + self.drop_path1(self.ls1(self.token_mixer(self.norm1(x))))
        x = x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
        return x


def vit_mixer(name: str, grid_size: tuple[int, int], num_prefix_tokens: int):
    """`mixer(dim, device=, dtype=) -> nn.Module` for a ViT token mixer name (None for attention)."""
    num_tokens = grid_size[0] * grid_size[1] + num_prefix_tokens
    if name == "attention":
        return None
    if name == "pooling":
        return lambda dim, **dd: Pooling(grid_size, num_prefix_tokens)
    if name == "identity":
        return lambda dim, **dd: Identity(num_prefix_tokens)
    if name == "mlp":
        return lambda dim, **dd: TokenMlp(num_tokens, int(0.5 * dim), **dd)  # MLP-Mixer: tokens_dim = dim / 2
    raise ValueError(f"unknown token mixer {name!r}: choose from {', '.join(MIXERS)}")


# ---------------------------------------------------------------------------------------------
# Mixers for PoolFormer's stages (NCHW feature maps).


class AttentionNCHW(nn.Module):
    """Self-attention over the positions of an NCHW map (PoolFormer's hybrid stages keep NCHW norms)."""

    def __init__(self, dim: int, proj_drop: float = 0.0, device=None, dtype=None, **kwargs):
        super().__init__()
        from timm.models.metaformer import Attention

        self.attn = Attention(dim, proj_drop=proj_drop, device=device, dtype=dtype)  # head_dim 32, as the paper

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        y = self.attn(x.flatten(2).transpose(1, 2))  # (B, HW, C)
        return y.transpose(1, 2).reshape(B, C, H, W)


def stage_mixer(name: str):
    """The class timm's MetaFormer instantiates for a stage's mixer name."""
    from timm.models.metaformer import Pooling as PoolFormerPooling

    classes = {"pooling": PoolFormerPooling, "attention": AttentionNCHW, "identity": nn.Identity}
    if name not in classes:
        raise ValueError(
            f"token mixer {name!r} is not available per stage: choose from "
            f"{', '.join(HIERARCHY_MIXERS)} (mlp needs a fixed token count)"
        )
    return classes[name]


# ---------------------------------------------------------------------------------------------
# The registered entrypoint.


def split_mixers(value) -> list[str]:
    """'pooling,attention' or ['pooling', 'attention'] -> ['pooling', 'attention'] (lower case)."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    return [str(v).strip().lower() for v in items if str(v).strip()]


def _base_kind(base_arch: str) -> str:
    from timm.models import model_entrypoint

    module = model_entrypoint(base_arch).__module__
    if base_arch.startswith("poolformer") and module.endswith("metaformer"):
        return "poolformer"
    if module.endswith(("vision_transformer", "vision_transformer_hybrid", "deit")):
        return "vit"
    raise ValueError(
        f"{base_arch} is not an isotropic ViT or a PoolFormer: the token-mixer swap supports "
        "timm's VisionTransformer family and poolformer/poolformerv2"
    )


@register_model
def vitcli_metaformer(
    pretrained: bool = False,
    base: str = "vit_small_patch16_224",
    token_mixer=None,
    token_mixers=None,
    pretrained_cfg=None,
    pretrained_cfg_overlay=None,
    **kwargs,
):
    """A timm model (`base`) with its token mixer swapped: `token_mixer` for all blocks/stages, or
    `token_mixers` per PoolFormer stage. Names: attention, pooling, mlp (ViT only), identity."""
    from timm.models import model_entrypoint, resolve_pretrained_cfg, split_model_name_tag

    base_arch, base_tag = split_model_name_tag(base)
    kind = _base_kind(base_arch)
    mixers = split_mixers(token_mixers) or split_mixers(token_mixer) or ["attention" if kind == "vit" else "pooling"]
    for m in mixers:
        if m not in MIXERS:
            raise ValueError(f"unknown token mixer {m!r}: choose from {', '.join(MIXERS)}")

    if isinstance(pretrained_cfg, dict):  # a saved checkpoint's own config (config.json)
        foreign = pretrained_cfg.get("architecture") not in (None, ARCH)  # weights of the plain base model
        cfg = resolve_pretrained_cfg(base_arch, pretrained_cfg, pretrained_cfg_overlay).to_dict()
    else:  # the base architecture's config (preprocessing, and weights when pretrained)
        cfg = resolve_pretrained_cfg(base_arch, pretrained_cfg or base_tag or None, pretrained_cfg_overlay).to_dict()
        foreign = True
        if not pretrained:
            cfg["tag"] = None  # no weights of that tag are in this model
    if pretrained and foreign and set(mixers) != {"attention" if kind == "vit" else "pooling"}:
        raise ValueError(
            f"the pre-trained weights of {base} were learned with its own token mixer; "
            f"a swapped mixer ({','.join(mixers)}) must be trained from scratch (vit train)"
        )
    cfg["architecture"] = ARCH
    fn = model_entrypoint(base_arch)

    if kind == "vit":
        if len(mixers) != 1:
            raise ValueError("an isotropic ViT takes one --token-mixer (--token-mixers is per PoolFormer stage)")
        from vitcli.models.meta import skip_init

        with torch.device("meta"), skip_init():  # the patch grid and prefix tokens, from a weightless skeleton
            skeleton = fn(pretrained=False, **kwargs)
        if getattr(skeleton, "dynamic_img_size", False) and mixers[0] in ("pooling", "mlp"):
            raise ValueError(f"the {mixers[0]} mixer needs a fixed input size (dynamic_img_size=False)")
        grid = tuple(skeleton.patch_embed.grid_size)
        mixer = vit_mixer(mixers[0], grid, skeleton.num_prefix_tokens)
        if mixer is not None:
            kwargs["block_fn"] = partial(MetaFormerBlock, mixer=mixer)
    else:
        for key in ("img_size", "patch_size"):  # ViT settings (a recipe's): PoolFormer takes any size, its stem patches
            kwargs.pop(key, None)
        if len(mixers) == 1:
            mixers = mixers * 4
        if len(mixers) != 4:
            raise ValueError(f"PoolFormer has 4 stages: give 4 token mixers, not {len(mixers)}")
        kwargs["token_mixers"] = [stage_mixer(m) for m in mixers]

    model = fn(pretrained=pretrained, pretrained_cfg=cfg, **kwargs)
    model.pretrained_cfg = model.default_cfg = {**model.pretrained_cfg, "architecture": ARCH}
    model.token_mixers = tuple(mixers)  # for people and tools: what each block/stage mixes with
    return model
