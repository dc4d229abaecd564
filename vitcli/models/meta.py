"""Models without weights: building on the `meta` device, and the one FLOP counter.

`on_meta(name, **args)` builds a timm architecture on the meta device (shapes only, no memory, no
initialisation), for counting and for reading a model's structure before building it for real.

`count_flops` runs one pass under torch's FlopCounterMode. Two conventions:
  - plain (vit benchmark): the matrix multiplies, convolutions and attention products a pass executes,
    forward or forward + backward, the work the matrix-multiply ceiling is measured against;
  - timm's tables (vit models, timm_convention=True): also fvcore's per-element cost of normalisation
    layers (5 with an affine, 4 without; batch norm in eval 2) and adaptive pooling (1), as timm's
    published `infer_gmacs` (made with fvcore) counts them. Elementwise activations are free in both.
torch counts the CUDA attention kernels but not the CPU flash kernel; its formula is added here.
"""

from __future__ import annotations

import math


def skip_init():
    """A torch-function mode that skips in-place ops on meta tensors (weight init: no data to fill).

    Construction on `meta` otherwise spends most of its time running initialisers through Python refs.
    """
    import torch
    from torch.overrides import TorchFunctionMode

    class SkipInit(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            name = getattr(func, "__name__", "")
            if (
                name.endswith("_")
                and not name.endswith("__")
                and args
                and isinstance(args[0], torch.Tensor)
                and args[0].is_meta
            ):
                return args[0]
            return func(*args, **(kwargs or {}))

    return SkipInit()


def on_meta(name: str, **model_args):
    """The timm architecture `name` built on the meta device: its structure, no weights. (For vitcli's own
    architectures, call vitcli.models.registry.ensure_registered() first.)"""
    import timm
    import torch

    with torch.device("meta"), skip_init():
        return timm.create_model(name, pretrained=False, **model_args)


def _sdpa_cpu() -> dict:
    import torch
    import torch.utils.flop_counter as fc

    aten = torch.ops.aten
    mapping = {}
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
        mapping[aten._scaled_dot_product_flash_attention_for_cpu] = lambda q, k, v, *a, out_shape=None, **kw: (
            fc.sdpa_flop_count(q, k, v)
        )
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward"):
        mapping[aten._scaled_dot_product_flash_attention_for_cpu_backward] = (
            lambda g, q, k, v, *a, out_shape=None, **kw: fc.sdpa_backward_flop_count(g, q, k, v)
        )
    return mapping


def _fvcore_norms() -> dict:
    """FlopCounterMode formulas (in FLOPs = 2 x MACs) for the ops fvcore charges and torch does not."""
    import torch

    aten = torch.ops.aten

    def norm(input_shape, weight_shape=None, *args, out_shape=None, **kwargs):  # layer/group norm
        return 2 * math.prod(input_shape) * (5 if weight_shape is not None else 4)

    def layer_norm(input_shape, normalized_shape, weight_shape=None, *args, out_shape=None, **kwargs):
        return norm(input_shape, weight_shape)

    def batch_norm_eval(input_shape, weight_shape=None, *args, out_shape=None, **kwargs):
        return 2 * math.prod(input_shape) * (2 if weight_shape is not None else 1)

    def batch_norm(
        input_shape,
        weight_shape=None,
        bias_shape=None,
        mean_shape=None,
        var_shape=None,
        training=False,
        *args,
        out_shape=None,
        **kwargs,
    ):
        if training:
            return norm(input_shape, weight_shape)
        return batch_norm_eval(input_shape, weight_shape)

    def batch_norm_legit(input_shape, weight_shape=None, *args, out_shape=None, **kwargs):
        return norm(input_shape, weight_shape)  # no running stats: the training-mode formula (StdConv)

    def adaptive_pool(input_shape, *args, out_shape=None, **kwargs):
        return 2 * math.prod(input_shape)

    return {
        aten.native_layer_norm: layer_norm,
        aten.native_group_norm: norm,
        aten.native_batch_norm: batch_norm,
        aten._native_batch_norm_legit_no_training: batch_norm_eval,
        aten._native_batch_norm_legit: batch_norm_legit,
        aten._adaptive_avg_pool2d: adaptive_pool,
    }


def count_flops(model, example, *, train: bool = False, timm_convention: bool = False) -> float:
    """FLOPs per image of one forward pass on `example` (train: forward + backward, in training mode).
    Works on meta models. The model's mode and requires_grad flags are restored afterwards."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    mapping = {**_sdpa_cpu(), **(_fvcore_norms() if timm_convention else {})}
    counter = FlopCounterMode(display=False, custom_mapping=mapping)
    was_training = model.training
    grads = [(p, p.requires_grad) for p in model.parameters()]
    model.train(train)
    try:
        if train:
            with counter:
                model(example).float().sum().backward()
            model.zero_grad(set_to_none=True)
        else:
            for p, _ in grads:  # FlopCounterMode's module tracker trips over grad-requiring latents (MAP heads)
                p.requires_grad_(False)
            with counter, torch.no_grad():
                model(example)
    finally:
        model.train(was_training)
        for p, flag in grads:
            p.requires_grad_(flag)
    return counter.get_total_flops() / example.shape[0]
