"""The training phase of `vit benchmark --train`: vitcli's training step (as `vit finetune` / `vit train`
run it: `vitcli.accel.prepare`'s training kernels, fused/foreach SGD, foreach clipping, no host sync per
step) next to the plain timm loop a user writes (timm's optimizer factory, `loss.item()` every step), in
the run's autocast and, when that is not fp32, plain fp32 too; timed in rounds with the GEMM ceiling probe.
"""

from __future__ import annotations

import copy

from vitcli.bench.timing import Side, alternate

TRAINING_KERNELS = {
    "onednn": "the linears as oneDNN kernels",
    "math-attention": "attention through timm's math path (bf16 GEMMs), not the flash kernel",
}


def train_phase(model, baseline, x, rt, iters, warmup, rounds, compile, ceiling_side, log):
    """Training steps for both loops (copies of the model, so inference figures stay untouched)."""
    import torch
    import torch.nn.functional as F

    from vitcli.accel.runtime import fused_optimizer_ok
    from vitcli.models.meta import count_flops

    num_classes = getattr(model, "num_classes", 0) or 1000
    gen = torch.Generator().manual_seed(1)
    y = torch.randint(0, max(1, num_classes), (x.shape[0],), generator=gen).to(rt.device)
    ours_model = copy.deepcopy(baseline).train()
    timm_fp32_model = copy.deepcopy(baseline).train() if rt.precision != "fp32" else None
    timm_model = baseline.train()
    train_flops = count_flops(timm_model, x[:1], train=True)  # timm's layers: FlopCounterMode knows their ops
    if not compile:
        from vitcli import accel

        name = accel.prepare(ours_model, rt, "training").training_kernels  # as vit finetune / train run it
        if name != "eager":
            log(f"training, vitcli side: {TRAINING_KERNELS[name]} (vitcli.accel.prepare)")

    # vitcli: SGD (the fine-tuning recipe) fused where torch has it, foreach clipping, no .item() per step
    kwargs = {"fused": True} if fused_optimizer_ok(rt.device) else {"foreach": True}
    opt = torch.optim.SGD(ours_model.parameters(), lr=1e-4, momentum=0.9, **kwargs)
    scaler = torch.amp.GradScaler(rt.device.type) if rt.precision == "fp16" else None
    fwd = torch.compile(ours_model) if compile else ours_model

    def ours_step():
        with rt.autocast():
            loss = F.cross_entropy(fwd(x).float(), y)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
        else:
            loss.backward()
        torch.nn.utils.clip_grad_norm_(ours_model.parameters(), 1.0, foreach=True)
        if scaler is not None:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        opt.zero_grad(set_to_none=True)

    a = Side("vitcli", ours_step, rt.device, x.shape[0])
    b = Side("timm", _timm_train_step(timm_model, x, y, rt, autocast=True), rt.device, x.shape[0])
    sides = [a, b, ceiling_side]
    if timm_fp32_model is not None:
        sides.append(
            Side("timm fp32", _timm_train_step(timm_fp32_model, x, y, rt, autocast=False), rt.device, x.shape[0])
        )
    log(f"training: {warmup} warm-up + {iters} timed steps of {x.shape[0]} per side")
    a.run(max(warmup, 1 if compile else 0), record=False)
    for side in sides[1:]:
        if side is not ceiling_side:
            side.run(warmup, record=False)
    alternate(sides, iters, rounds)
    return a, b, (sides[3] if len(sides) > 3 else None), train_flops


def _timm_train_step(model, x, y, rt, autocast: bool):
    """The plain timm loop a user writes: timm's optimizer factory, clip, loss.item() for the log line;
    under the run's autocast (and GradScaler for fp16), or plain fp32."""
    import contextlib

    import torch
    import torch.nn.functional as F
    from timm.optim import create_optimizer_v2

    opt = create_optimizer_v2(model, "sgd", lr=1e-4, momentum=0.9, weight_decay=0.0)
    scaler = torch.amp.GradScaler(rt.device.type) if autocast and rt.precision == "fp16" else None

    def step():
        with rt.autocast() if autocast else contextlib.nullcontext():
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
        loss.item()

    return step
