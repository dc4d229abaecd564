"""Data-parallel training under `torchrun`: nccl on CUDA, gloo on CPU; a no-op for one process.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK. Each rank takes its own shard of every epoch's
permutation, the global batch is split as batch = world_size x accum x micro-batch, and only rank 0
writes files or draws progress.
"""

from __future__ import annotations

from dataclasses import dataclass

from vitcli.errors import UsageError


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def from_env() -> Dist:
    from vitcli import env

    return Dist(*env.dist())


def setup(device_spec: str) -> tuple[Dist, str]:
    """Join the process group when run by torchrun; returns the device spec for this rank."""
    import torch

    from vitcli.accel.runtime import canonical

    dist = from_env()
    device_spec = canonical(device_spec)
    if not dist.enabled:
        return dist, device_spec
    import torch.distributed as td

    use_cuda = device_spec in ("auto", "cuda") and torch.cuda.is_available() or device_spec.startswith("cuda")
    if use_cuda:
        if dist.local_rank >= torch.cuda.device_count():
            raise UsageError(
                f"local rank {dist.local_rank} has no GPU ({torch.cuda.device_count()} visible)",
                "give torchrun --nproc-per-node at most the number of GPUs",
            )
        torch.cuda.set_device(dist.local_rank)
        device_spec = f"cuda:{dist.local_rank}"
    elif device_spec == "auto":
        device_spec = "cpu"
    if not td.is_initialized():
        td.init_process_group(backend="nccl" if use_cuda else "gloo")
    return dist, device_spec


def teardown(dist: Dist) -> None:
    """Leave the process group (torchrun's, or the one-rank group an --fsdp run makes for itself)."""
    import torch.distributed as td

    if td.is_available() and td.is_initialized():
        td.destroy_process_group()


def all_true(value: bool, dist: Dist) -> bool:
    """Whether `value` holds on every rank."""
    import torch

    flag = torch.tensor([float(not value)], dtype=torch.float64)
    all_sum(flag, dist)
    return flag.item() == 0


def all_sum(tensor, dist: Dist):
    """Sum a tensor over ranks, in place (a no-op for one process). nccl reduces CUDA tensors only, so
    a CPU tensor (the loop's flags and evaluation totals) travels through this rank's GPU."""
    if dist.enabled:
        import torch
        import torch.distributed as td

        if td.get_backend() == "nccl" and tensor.device.type != "cuda":
            on_gpu = tensor.to(torch.device("cuda", torch.cuda.current_device()))
            td.all_reduce(on_gpu, op=td.ReduceOp.SUM)
            tensor.copy_(on_gpu.cpu())
        else:
            td.all_reduce(tensor, op=td.ReduceOp.SUM)
    return tensor


def barrier(dist: Dist) -> None:
    if dist.enabled:
        import torch.distributed as td

        td.barrier()


def broadcast_object(obj, dist: Dist):
    """Rank 0's value on every rank (the run folder's path, for instance)."""
    if not dist.enabled:
        return obj
    import torch.distributed as td

    box = [obj]
    td.broadcast_object_list(box, src=0)
    return box[0]
