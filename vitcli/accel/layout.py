"""channels_last for convolutional models on CPU, where one timed forward pass says it is faster here.

oneDNN's convolutions and pooling work in NHWC; a model kept in PyTorch's default NCHW pays a layout
reorder around each of them. For a ViT that is one convolution (the patch embedding) and nothing to
gain; for PoolFormer and other MetaFormers, CNNs and hybrids it is most of the model (measured gains:
docs/info.md). So for a model with more than one Conv2d, `apply(model, runtime)` times a forward pass
at batch 2 both ways once per (CPU, torch, threads, precision, architecture, input size), records the
verdict (vitcli.accel.cache) and, where channels_last won, converts the model's 4-D weights and puts a
pre-hook on the model that gives it its input in channels_last too. Inference only; VIT_KERNELS=0
turns it off with the other kernels.
"""

from __future__ import annotations

from vitcli.accel.cache import best_ms

MIN_CONVS = 2  # a ViT has one (the patch embedding): nothing to gain


def _to_channels_last(module, args):
    import torch

    if args and isinstance(args[0], torch.Tensor) and args[0].dim() == 4:
        return (args[0].contiguous(memory_format=torch.channels_last),) + tuple(args[1:])
    return None


def is_channels_last(model) -> bool:
    return bool(getattr(model, "_vitcli_channels_last", False))


def convert(model) -> None:
    """The model's weights and its input in channels_last (in place, once)."""
    import torch

    if is_channels_last(model):
        return
    model.to(memory_format=torch.channels_last)
    model.register_forward_pre_hook(_to_channels_last)
    model._vitcli_channels_last = True


def measure(model, runtime, input_size, reps: int = 3) -> dict:
    """One forward at batch 2 in NCHW and in channels_last (on a copy), alternating; best of `reps`."""
    import copy

    import torch

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, *input_size, generator=gen)
    other = copy.deepcopy(model)
    convert(other)
    with torch.inference_mode(), runtime.autocast():
        model(x), other(x)  # warm-up (oneDNN prepares its kernels)
        best = best_ms({"nchw": lambda: model(x), "channels_last": lambda: other(x)}, reps)
    nchw, last = best["nchw"], best["channels_last"]
    return {"nchw_ms": round(nchw, 2), "channels_last_ms": round(last, 2), "channels_last": last < 0.95 * nchw}


def apply(model, runtime) -> bool:
    """channels_last for this model and runtime where measured faster here; whether it was applied."""
    import torch

    from vitcli import env
    from vitcli.accel.cache import measured

    if runtime.device.type != "cpu" or env.kernels() == "off" or is_channels_last(model):
        return is_channels_last(model)
    if sum(isinstance(m, torch.nn.Conv2d) for m in model.modules()) < MIN_CONVS:
        return False
    cfg = getattr(model, "pretrained_cfg", None) or {}
    input_size = tuple(cfg.get("input_size") or ())
    if len(input_size) != 3:
        return False
    architecture = cfg.get("architecture") or type(model).__name__
    detail = f"|{runtime.precision}|{architecture}|{'x'.join(map(str, input_size))}"
    verdict = measured(
        "channels-last", lambda: measure(model, runtime, input_size), lambda v: "channels_last" in v, detail
    )
    if verdict.get("channels_last"):
        convert(model)
        return True
    return False
