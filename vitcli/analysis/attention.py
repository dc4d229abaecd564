"""Explicit attention weights from timm ViTs, even when timm computes attention fused.

timm's attention calls `F.scaled_dot_product_attention`: the (B, heads, N, N) weights never exist, so a
hook on a softmax (or on `attn_drop`) sees nothing. Two ways to get them, tried in this order:

- **recompute** (timm's standard `Attention`: ViT, DeiT, registers, qk-norm): a forward hook on each
  block's attention module takes the input the module received and recomputes
  `softmax(q k^T * scale)` from the module's own `qkv` projection, `q_norm` and `k_norm` (and the
  attention mask, if one was passed). The hook returns nothing, so the model's output is bit-identical
  to a run without hooks, and fused attention stays on.
- **extract** (any other attention module that follows timm's convention of applying `attn_drop` to the
  softmax): a forward hook on each `attn_drop`, as timm's `AttentionExtract` places it, while fused
  attention is switched off for that pass, then switched back. The explicit path computes the same
  function, within float rounding.

Hooking `attn_drop` cannot be the first choice: with fused attention on (the default) there is no
softmax node to trace and `attn_drop` is never called.

Also here: `TokenLayout`, where the prefix tokens (class, registers, distillation) and the patch grid
sit in the token sequence, for any grid and non-square inputs.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from vitcli.errors import VitError


class NotAViTError(VitError):
    """The model has no self-attention blocks (e.g. PoolFormer), or none we can read."""


@dataclass(frozen=True)
class TokenLayout:
    """The token sequence of a ViT: `num_prefix` tokens, then a row-major grid of patches."""

    num_prefix: int  # class + register + distillation tokens, in front of the patches
    has_class_token: bool  # the class token, when there is one, is token 0
    grid: tuple[int, int]  # (rows, cols) of patches
    patch_size: tuple[int, int]  # (height, width) of a patch in input pixels

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def num_tokens(self) -> int:
        return self.num_prefix + self.num_patches


def _pair(v) -> tuple[int, int]:
    return (int(v[0]), int(v[1])) if isinstance(v, (tuple, list)) else (int(v), int(v))


def token_layout(model, input_size: tuple[int, int] | None = None) -> TokenLayout:
    """The layout for inputs of `input_size` (H, W) pixels; the model's own grid when None."""
    patch_embed = getattr(model, "patch_embed", None)
    if patch_embed is None or getattr(patch_embed, "patch_size", None) is None:
        raise NotAViTError(f"{_arch(model)} has no patch embedding: not a ViT")
    patch = _pair(patch_embed.patch_size)
    if input_size is None:
        grid = _pair(patch_embed.grid_size)
    elif hasattr(patch_embed, "dynamic_feat_size"):
        grid = _pair(patch_embed.dynamic_feat_size(tuple(input_size)))
    else:
        grid = (input_size[0] // patch[0], input_size[1] // patch[1])
    num_prefix = int(getattr(model, "num_prefix_tokens", 1 if getattr(model, "cls_token", None) is not None else 0))
    has_cls = bool(getattr(model, "has_class_token", getattr(model, "cls_token", None) is not None))
    return TokenLayout(num_prefix, has_cls, grid, patch)


def _arch(model) -> str:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return cfg.get("architecture") or type(model).__name__


def attention_modules(model) -> list:
    """Each block's self-attention module, in depth order; NotAViTError when there is none."""
    blocks = getattr(model, "blocks", None)
    modules = [getattr(b, "attn", None) for b in blocks] if blocks is not None else []
    if not modules or any(m is None for m in modules):
        mixers = sorted({type(m.token_mixer).__name__ for m in model.modules() if hasattr(m, "token_mixer")})
        mixer = f" (its token mixer is {', '.join(mixers)})" if mixers else ""
        raise NotAViTError(
            f"{_arch(model)} has no self-attention blocks{mixer}: the attention figures need a ViT",
            "use a ViT (e.g. vit_base_patch16_224.augreg2_in21k_ft_in1k) for --attention-distance and "
            "--attention-map; --filters works with this model too",
        )
    return modules


def _recomputable(attn) -> bool:
    """timm's standard qkv attention (no rotary embedding, no separate q/k/v projections)."""
    import torch

    return (
        type(attn).__name__ == "Attention"
        and type(attn).__module__.startswith("timm.")
        and isinstance(getattr(attn, "qkv", None), torch.nn.Linear)
        and hasattr(attn, "num_heads")
        and hasattr(attn, "scale")
        and getattr(attn, "rope", None) is None
    )


def method_for(model) -> str:
    """'recompute' when every block uses timm's standard attention, else 'extract'."""
    modules = attention_modules(model)
    return "recompute" if all(_recomputable(m) for m in modules) else "extract"


def _weights_from_qkv(attn, x, attn_mask=None):
    """softmax(q k^T * scale) of a timm `Attention` for its input x (B, N, C) -> (B, heads, N, N) fp32."""
    import torch

    B, N, _ = x.shape
    head_dim = getattr(attn, "head_dim", None) or attn.qkv.out_features // (3 * attn.num_heads)
    qkv = attn.qkv(x).reshape(B, N, 3, attn.num_heads, head_dim).permute(2, 0, 3, 1, 4)
    q, k, _ = qkv.unbind(0)  # (B, heads, N, head_dim)
    q, k = attn.q_norm(q), attn.k_norm(k)
    logits = (q.float() * attn.scale) @ k.float().transpose(-2, -1)  # (B, heads, N, N)
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            logits = logits.masked_fill(~attn_mask, float("-inf"))
        else:
            logits = logits + attn_mask.float()
    return logits.softmax(dim=-1)


class AttentionRecorder(contextlib.AbstractContextManager):
    """Records each block's attention weights during forward passes, without changing the outputs.

    with AttentionRecorder(model) as rec:
        logits = model(x)
    rec.maps  # list over layers of (B, heads, N, N) float32 tensors
    """

    def __init__(self, model):
        self.modules = attention_modules(model)
        if not all(_recomputable(m) for m in self.modules):
            raise NotAViTError(
                f"{_arch(model)} uses an attention module the recompute hook does not know",
                "use attention_maps(), which falls back to hooking attn_drop",
            )
        self.maps: list = [None] * len(self.modules)
        self._handles = []

    def _hook(self, index):
        def hook(module, args, kwargs, output):
            x = args[0] if args else kwargs["x"]
            self.maps[index] = _weights_from_qkv(module, x, kwargs.get("attn_mask"))
            return None  # leave the module's output alone

        return hook

    def __enter__(self):
        self.maps = [None] * len(self.modules)
        self._handles = [m.register_forward_hook(self._hook(i), with_kwargs=True) for i, m in enumerate(self.modules)]
        return self

    def __exit__(self, *exc):
        for handle in self._handles:
            handle.remove()
        self._handles = []
        return False


@contextlib.contextmanager
def fused_attention(model, enabled: bool):
    """Switch timm's fused attention on or off in every module for a block, then restore it."""
    saved = [(m, m.fused_attn) for m in model.modules() if hasattr(m, "fused_attn")]
    try:
        for m, _ in saved:
            m.fused_attn = enabled
        yield
    finally:
        for m, value in saved:
            m.fused_attn = value


def _extract(model, x) -> list:
    """Each block's `attn_drop` output (the softmax weights in eval mode), with fused attention off for
    this pass. (timm's AttentionExtract does the same with hooks it gives no way to remove.)"""
    drops = [getattr(a, "attn_drop", None) for a in attention_modules(model)]
    if any(d is None for d in drops):
        raise NotAViTError(
            f"cannot read the attention weights of {_arch(model)}",
            "its attention modules do not follow timm's layout (qkv or attn_drop)",
        )
    maps: list = [None] * len(drops)

    def hook(index):
        def keep(module, args, output):
            maps[index] = output

        return keep

    handles = [d.register_forward_hook(hook(i)) for i, d in enumerate(drops)]
    was_training = model.training
    model.eval()
    try:
        with fused_attention(model, False):
            model(x)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    if any(m is None or m.dim() != 4 or m.shape[-1] != m.shape[-2] for m in maps):
        raise NotAViTError(
            f"cannot read the attention weights of {_arch(model)}",
            "its attn_drop does not receive the (B, heads, N, N) attention weights",
        )
    return [m.float() for m in maps]


def attention_maps(model, x, method: str = "auto") -> list:
    """Attention weights of every block for the batch x: a list over layers of (B, heads, N, N) fp32.

    method: auto | recompute | extract (see the module docstring).
    """
    if method == "auto":
        method = method_for(model)
    if method == "recompute":
        with AttentionRecorder(model) as rec:
            model(x)
        return rec.maps
    if method == "extract":
        return _extract(model, x)
    raise ValueError(f"unknown method {method!r}")
