"""Past one device's memory: activation checkpointing and FSDP2, and the model the loop trains.

    --grad-checkpointing   timm's `model.set_grad_checkpointing()`: each block's activations are
                           recomputed in the backward pass instead of kept (less memory, more compute)
    --fsdp                 torch's FSDP2 (`fully_shard`) on every transformer block, then on the root:
                           parameters, gradients and optimizer state sharded over the ranks; with
                           --precision bf16 a MixedPrecisionPolicy (bf16 compute, fp32 reductions)

Without --fsdp the loop trains the model itself (one process) or DDP (torchrun), as before. With it:

- the optimizer is made after sharding (it holds the sharded parameters);
- micro-batches of --accum reduce-scatter their gradients every time (FSDP2's default: the sharded
  gradients accumulate, no unsharded copy is kept between micro-batches);
- saving gathers the full state onto rank 0 (`torch.distributed.checkpoint.state_dict`, full_state_dict +
  cpu_offload): model.safetensors and last/state.pt are the same files a one-process run writes, so
  every other command loads them; a resume loads the full state and shards it again;
- evaluation unshards every block for the pass (the parameters only, no gradients or optimizer state):
  ranks evaluate different numbers of batches, which per-block all-gathers could not (they would wait
  for each other for ever).

One process without torchrun gets a one-rank process group, so `--fsdp` runs (and is tested) anywhere.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext

from vitcli.errors import UsageError


def check(cfg) -> None:
    """The settings --fsdp and --grad-checkpointing cannot go with (torch-free, at config time)."""
    if not getattr(cfg, "fsdp", False):
        return
    if cfg.model_ema:
        raise UsageError(
            "--fsdp with --model-ema: the EMA would be a second, unsharded copy of the model",
            "drop --model-ema for sharded runs",
        )
    if cfg.precision == "fp16":
        raise UsageError(
            "--fsdp with --precision fp16: the loss scaler does not handle sharded gradients here",
            "use --precision bf16 (a MixedPrecisionPolicy) or fp32",
        )


def is_sharded(model) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def blocks(model) -> list:
    """The modules FSDP2 shards one by one: every child of a `blocks` container (timm's ViT `blocks.i`,
    MetaFormer's `stages.s.blocks.i`)."""
    return [m for name, m in model.named_modules() if name.rpartition(".")[0].rsplit(".", 1)[-1] == "blocks"]


def prepare(model, cfg, runtime, dist):
    """Turn on activation checkpointing and shard the model (in place) when asked; the module the loop
    runs forward and backward through: the FSDP2 model, DDP under torchrun, else the model itself."""
    import torch

    if getattr(cfg, "grad_checkpointing", False):
        try:
            model.set_grad_checkpointing(True)
        except (AttributeError, NotImplementedError, AssertionError):
            raise UsageError(
                f"{cfg.model} has no activation checkpointing in timm", "drop --grad-checkpointing for this model"
            ) from None
    if getattr(cfg, "fsdp", False):
        import torch.distributed as td
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        if not td.is_initialized():  # one process: a one-rank group (closed by distributed.teardown)
            td.init_process_group(
                "nccl" if runtime.device.type == "cuda" else "gloo", store=td.HashStore(), rank=0, world_size=1
            )
        policy = (
            MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
            if runtime.precision == "bf16"
            else MixedPrecisionPolicy()
        )
        for block in blocks(model):
            fully_shard(block, mp_policy=policy)
        fully_shard(model, mp_policy=policy)
        return model
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(
            model, device_ids=[runtime.device.index] if runtime.device.type == "cuda" else None
        )
    return model


def accumulating(train_model, dist, more: bool):
    """The context of one micro-batch's backward: DDP skips its all-reduce while `more` micro-batches of
    the step follow; FSDP2 reduce-scatters every time (its gradients stay sharded)."""
    if more and dist.enabled and hasattr(train_model, "no_sync"):
        return train_model.no_sync()
    return nullcontext()


def plain(tensor):
    """A DTensor (the gradient norm of sharded parameters) as the full tensor; others as they are."""
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


def finite(model, optimizer, dist) -> bool:
    """Every parameter, buffer and optimizer state finite, on every rank's shard (all ranks agree)."""
    from vitcli.train.run import checkpoint

    if not is_sharded(model):
        return checkpoint.all_finite(model, optimizer)
    import torch

    from vitcli.train.scale.distributed import all_sum

    local = [t.to_local() if hasattr(t, "to_local") else t for t in model.state_dict().values()]
    local += [
        v.to_local() if hasattr(v, "to_local") else v
        for s in optimizer.state.values()
        for v in s.values()
        if isinstance(v, torch.Tensor)
    ]
    bad = sum(int(not t.isfinite().all()) for t in local if t.is_floating_point())
    return all_sum(torch.tensor([float(bad)], dtype=torch.float64), dist).item() == 0


def _options(**kw):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kw)


def states(model, optimizer) -> tuple[dict, dict]:
    """(model, optimizer) state dicts as a one-process run saves them; when sharded, gathered onto rank 0
    (every rank must call; the others get empty dicts)."""
    if not is_sharded(model):
        return model.state_dict(), optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    return (
        get_model_state_dict(model, options=_options(cpu_offload=True)),
        get_optimizer_state_dict(model, optimizer, options=_options(cpu_offload=True)),
    )


def load_states(model, optimizer, state: dict, name: str) -> None:
    """Load a saved (full) training state into the model and optimizer, sharding it when sharded; a state of
    another architecture (`name` is the run's model) is one line (vitcli.train.run.checkpoint.load_model_state)."""
    if not is_sharded(model):
        from vitcli.train.run.checkpoint import load_model_state

        load_model_state(model, state["model"], name)
        optimizer.load_state_dict(state["optimizer"])
        return
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    set_model_state_dict(model, state["model"], options=_options())
    set_optimizer_state_dict(model, optimizer, state["optimizer"], options=_options())


def load_model(model, weights: dict) -> None:
    """Load full weights (a run folder's model.safetensors) into the model, sharded or not."""
    if not is_sharded(model):
        model.load_state_dict(weights)
        return
    from torch.distributed.checkpoint.state_dict import set_model_state_dict

    set_model_state_dict(model, weights, options=_options())


@contextmanager
def full_state(module):
    """Inside the block `module.state_dict()` is the full state (gathered onto rank 0 when sharded), so
    timm's save_for_hf writes the model.safetensors every command loads. Every rank must enter it."""
    if not is_sharded(module):
        yield
        return
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    full = get_model_state_dict(module, options=_options(cpu_offload=True))
    module.state_dict = lambda *args, **kwargs: full  # this instance only, for the block
    try:
        yield
    finally:
        del module.state_dict


@contextmanager
def unsharded(model):
    """The whole model on every rank for an evaluation (no collective per forward pass); resharded after."""
    from torch.distributed.fsdp import FSDPModule

    sharded = [m for m in model.modules() if isinstance(m, FSDPModule)]
    if not sharded:
        yield
        return
    for m in sharded:
        m.unshard()
        m.set_reshard_after_forward(False, recurse=False)
    try:
        yield
    finally:
        for m in sharded:
            m.reshard()
            if m is not model:  # the root keeps FSDP2's own choice (not resharded after forward)
                m.set_reshard_after_forward(True, recurse=False)
