"""Acceleration: every speed choice vitcli makes for a model, in one place, visible and repeatable.

`prepare(model, runtime, purpose)` is the one entry point. It applies, in place, what is faster on this
machine for this runtime and returns an `Accel` record naming what it turned on, which every result
(predict's header and --json, eval's metrics.json, run.json, vit benchmark) reports:

- linears: oneDNN fused linears on CPU (vitcli.accel.kernels), fp32 or bf16 inference, fp32 training;
- head: the classifier in fp32 under reduced-precision autocast (bf16 logits tie and swap classes);
- attention: timm's non-fused attention path in bf16 on CPU (vitcli.accel.attention);
- layout: channels_last for convolutional models on CPU (vitcli.accel.layout).

Each is decided by the runtime (vitcli.accel.runtime: device and precision from the flags), the model
and the machine: a choice that needs a timing is measured once and recorded (vitcli.accel.cache), so
the first and the hundredth run choose the same; `vit info` shows the records and why. torch.compile
(vitcli.accel.compiled) is only used when asked for (`--compile`), as is the ONNX fast-start copy
(`--backend onnx`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

PURPOSES = ("inference", "training")
TRAINING_KERNELS = ("onednn", "math-attention", "eager")  # the names a training checkpoint records


@dataclass(frozen=True)
class Accel:
    linears: str = "eager"  # "onednn fp32" | "onednn bf16" | "eager"
    attention: str = "fused"  # "fused" (timm's default) | "math"
    layout: str = "default"  # "default" | "channels_last"
    head_fp32: bool = False  # the classifier in fp32 under autocast
    compiled: bool = False

    @property
    def training_kernels(self) -> str:
        """The name a training checkpoint records, so a resume uses the same kernels."""
        if self.linears.startswith("onednn"):
            return "onednn"
        return "math-attention" if self.attention == "math" else "eager"

    def applied(self) -> list[str]:
        out = []
        if self.linears != "eager":
            out.append(f"{self.linears} linears")
        if self.attention == "math":
            out.append("math attention")
        if self.layout != "default":
            out.append(self.layout)
        if self.head_fp32:
            out.append("fp32 head")
        if self.compiled:
            out.append("compiled")
        return out

    def describe(self) -> str:
        return ", ".join(self.applied()) or "eager"

    def to_json(self) -> dict:
        return asdict(self)


def prepare(model, runtime, purpose: str = "inference", recorded: str | None = None) -> Accel:
    """Apply the speed choices for `runtime` and `purpose` to `model` in place; what was applied.

    inference: oneDNN linears (fp32, or bf16 with the fp32 head under autocast), math attention in bf16,
    channels_last, each where measured faster here. training: a fresh run (`recorded` None) gets the
    kernels measured faster here; a resumed run gets the ones its checkpoint recorded, so that it
    stays bit for bit the uninterrupted run."""
    from vitcli import env
    from vitcli.accel import attention, kernels, layout

    if purpose not in PURPOSES:
        raise ValueError(f"purpose {purpose!r} is not one of {PURPOSES}")
    env.kernels()  # a bad VIT_KERNELS is an error on every path, not only where the kernels apply
    cpu = runtime.device.type == "cpu"
    bf16_cpu = cpu and runtime.precision == "bf16"
    head_fp32 = False
    if purpose == "training":
        if recorded is None:
            if cpu and runtime.precision == "fp32" and kernels.enabled_here() and not kernels.is_fused(model):
                kernels.fuse(model)
            elif bf16_cpu and attention.math_faster_here(training=True):
                attention.use_math(model)
        elif recorded == "onednn" and cpu and kernels.available() and not kernels.is_fused(model):
            kernels.fuse(model)
        elif recorded == "math-attention":
            attention.use_math(model)
    else:
        if runtime.autocast_dtype is None:
            if cpu and runtime.precision == "fp32" and kernels.enabled_here() and not kernels.is_fused(model):
                kernels.fuse(model)
        else:
            head_fp32 = kernels.keep_head_fp32(model) or _has_fp32_head(model)  # first: no nn.Linear to fuse
            if bf16_cpu and not kernels.is_fused(model) and kernels.enabled_here("bf16"):
                import torch

                kernels.fuse(model, torch.bfloat16)
            if bf16_cpu and attention.math_faster_here(training=False):
                attention.use_math(model)
        layout.apply(model, runtime)
    return describe(model, head_fp32)


def _has_fp32_head(model) -> bool:
    from vitcli.accel.kernels import FullPrecisionLinear

    return any(isinstance(m, FullPrecisionLinear) for m in model.modules())


def describe(model, head_fp32: bool | None = None) -> Accel:
    """What `prepare` applied to `model` (read back from the model itself)."""
    import torch

    from vitcli.accel import attention, kernels, layout

    fused = [m for m in model.modules() if isinstance(m, kernels.FusedLinear)]
    linears = "eager" if not fused else f"onednn {'bf16' if fused[0].dtype == torch.bfloat16 else 'fp32'}"
    return Accel(
        linears=linears,
        attention="math" if attention.is_math(model) else "fused",
        layout="channels_last" if layout.is_channels_last(model) else "default",
        head_fp32=_has_fp32_head(model) if head_fp32 is None else head_fp32,
    )
