"""The training loop shared by `vit finetune` and `vit train`: steps, evaluation, checkpoints.

What it guarantees:
- exact resume: the data order is a per-epoch permutation drawn from (seed, epoch), augmentation is
  seeded per (sample, epoch) (vitcli.data), and the checkpoint holds model, optimizer, scheduler,
  scaler, every rank's RNG states, the step and the position within the epoch; on CPU a resumed run
  reproduces the uninterrupted one bit for bit;
- nothing lost: SIGINT/SIGTERM finish the current step, save, and stop with 130/143 (a second Ctrl-C
  aborts at once); a non-finite loss or gradient norm skips the update, `max_bad_steps` in a row stop
  the run with the last good checkpoint kept;
- one global batch: batch_size = world_size x accum x micro-batch, whatever the device count.
"""

from __future__ import annotations

import math
import signal
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vitcli.train import checkpoint
from vitcli.data import datasets as data
from vitcli.train import distributed
from vitcli.train import runs
from vitcli.errors import VitError
from vitcli.train.interrupts import Diverged, Interrupted, StopSignals  # noqa: F401 - re-exported
from vitcli.train.display import Display


class EpochSampler:
    """This rank's share of epoch `epoch`'s permutation, from position `start` on."""

    def __init__(self, n: int, seed: int, epoch: int, dist: distributed.Dist, start: int = 0):
        self.n, self.seed, self.epoch, self.dist, self.start = n, seed, epoch, dist, start

    @property
    def per_rank(self) -> int:
        return self.n // self.dist.world

    def __iter__(self):
        import torch

        g = torch.Generator()
        g.manual_seed(self.seed * 1_000_003 + self.epoch)
        perm = torch.randperm(self.n, generator=g)
        mine = perm[self.dist.rank::self.dist.world][:self.per_rank]
        return iter(mine[self.start:].tolist())

    def __len__(self) -> int:
        return max(self.per_rank - self.start, 0)


@dataclass
class Job:
    """Everything the loop needs, built by vitcli.training."""

    cfg: Any  # RunConfig
    model: Any  # the bare nn.Module (rank-local)
    source: data.DatasetSource
    train_set: data.SplitDataset
    eval_sets: dict  # split -> SplitDataset (eval transform)
    runtime: Any
    dist: distributed.Dist
    run_dir: Path
    label_names: list
    model_block: dict  # the "vitcli" block of the saved config.json
    resume_state: dict | None = None
    stop_after: int | None = None  # stop as if interrupted after this step (time-boxed jobs, tests)
    workers: int = 0  # DataLoader workers (results do not depend on it)
    accum: int | None = None  # micro-batches per step; None: the checkpoint's, --accum, or 1
    extra_summary: dict = field(default_factory=dict)


def _optimizer(model, cfg):
    from timm.optim import create_optimizer_v2

    from vitcli.devices import fused_optimizer_ok

    name = {"sgd": "momentum", "momentum": "momentum"}.get(cfg.optimizer, cfg.optimizer)
    kwargs: dict = {}
    if name in ("momentum", "nesterov", "sgdp", "lars", "lamb"):
        kwargs["momentum"] = cfg.momentum
    if name.startswith(("adam", "nadam", "radam", "lamb")):
        kwargs["betas"] = tuple(cfg.betas)
    if name in _FUSED and fused_optimizer_ok(next(model.parameters()).device):
        kwargs["fused"] = True  # torch's one-kernel SGD / Adam(W) step (timm passes it through)
    return create_optimizer_v2(model, opt=name, lr=cfg.lr, weight_decay=cfg.weight_decay, **kwargs)


_FUSED = {"momentum", "nesterov", "adam", "adamw"}  # timm names that map to torch's SGD / Adam / AdamW


def _loss_dtype(device):
    import torch

    return torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64


def _scheduler(optimizer, cfg, total: int):
    """Linear warmup, then cosine / linear decay to 0 (or constant), stepped per update."""
    from timm.scheduler import CosineLRScheduler, PolyLRScheduler

    warmup = min(cfg.warmup, total - 1) if total > 1 else 0
    common = dict(t_initial=max(total - warmup, 1), warmup_t=warmup, warmup_lr_init=0.0, warmup_prefix=True,
                  t_in_epochs=False, lr_min=0.0)
    if cfg.schedule == "cosine":
        return CosineLRScheduler(optimizer, **common)
    return PolyLRScheduler(optimizer, power=1.0 if cfg.schedule == "linear" else 0.0, **common)


def _micro_batch(cfg, dist, accum: int) -> int:
    per = cfg.batch_size // dist.world
    if cfg.batch_size % dist.world or per % accum:
        raise VitError(f"the global batch {cfg.batch_size} does not split into {dist.world} process(es) x "
                       f"{accum} accumulation step(s)",
                       "choose --batch-size divisible by world size x --accum")
    return per // accum


class _Batches:
    """Micro-batches from epoch to epoch, tracking (epoch, position) for exact resume."""

    def __init__(self, job: Job, micro: int, epoch: int, pos: int):
        self.job, self.micro, self.epoch, self.pos = job, micro, epoch, pos
        self.it = None
        n = len(job.train_set)
        self.per_epoch = (n // job.dist.world) // micro
        if self.per_epoch < 1:
            raise VitError(f"the training split has {n} images, fewer than one batch per process "
                           f"({micro} x {job.dist.world})", "lower --batch-size")

    def _open(self):
        job = self.job
        job.train_set.set_epoch(self.epoch)
        sampler = EpochSampler(len(job.train_set), job.cfg.seed, self.epoch, job.dist, self.pos)
        self.it = iter(data.loader(job.train_set, batch_size=self.micro, sampler=sampler, drop_last=True,
                                   workers=job.workers, seed=job.cfg.seed * 7919 + self.epoch,
                                   pin_memory=job.runtime.device.type == "cuda"))

    def next(self):
        """(images, labels) of the next micro-batch with at least one readable image."""
        while True:
            if self.it is None:
                self._open()
            try:
                batch = next(self.it)
            except StopIteration:
                self.epoch, self.pos, self.it = self.epoch + 1, 0, None
                continue
            self.pos += self.micro
            if batch.skipped:
                self.job.source.note_skipped(batch.skipped)
            if batch.images is not None:
                return batch.images, batch.labels

    def close(self):
        self.it = None


def evaluate(job: Job, split: str) -> dict:
    """Top-1 and loss on `split`, sharded over ranks and summed."""
    import torch

    ds = job.eval_sets[split]
    rank, world = job.dist.rank, job.dist.world
    shard = data.SplitDataset(ds.records, ds.indices[rank::world], ds.transform)
    model, device = job.model, job.runtime.device
    totals = torch.zeros(3, dtype=torch.float64)  # correct, loss sum, count
    was_training = model.training
    model.eval()
    micro = job.cfg.batch_size // world // (job.accum or 1)
    bs = max(1, min(256, 2 * micro))  # no activations kept for backward: twice the training micro-batch
    loader = data.loader(shard, batch_size=bs, workers=job.workers)
    with torch.inference_mode():
        for images, labels in data.batches(job.source, loader):
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            with job.runtime.autocast():
                logits = model(images)
            logits = logits.float()
            totals[0] += (logits.argmax(-1) == labels).sum().item()
            totals[1] += torch.nn.functional.cross_entropy(logits, labels, reduction="sum").item()
            totals[2] += len(labels)
    model.train(was_training)
    distributed.all_sum(totals, job.dist)
    n = int(totals[2])
    return {"split": split, "top1": round(100.0 * totals[0].item() / max(n, 1), 4),
            "loss": round(totals[1].item() / max(n, 1), 6), "n": n}


def _gather_rng(dist):
    state = checkpoint.rng_state()
    if not dist.enabled:
        return [state]
    import torch.distributed as td

    out = [None] * dist.world
    td.all_gather_object(out, state)
    return out


def fit(job: Job) -> dict:
    import torch

    from vitcli.inference import kernels

    cfg, dist, rt = job.cfg, job.dist, job.runtime
    model = job.model
    state = job.resume_state or {}
    # CPU fp32: oneDNN linears where measured faster (same parameters); a resumed run keeps the kernels
    # it started with, so that it stays bit for bit the uninterrupted run
    if state.get("kernels") is None:
        kernels.for_runtime(model, rt)
    elif state["kernels"] == "onednn" and kernels.available() and rt.device.type == "cpu":
        kernels.fuse(model)
    if job.accum is None:
        job.accum = int(state.get("accum") or cfg.accum or 1)
    accum = job.accum
    micro = _micro_batch(cfg, dist, accum)
    n_train = len(job.train_set)
    per_epoch_steps = max(((n_train // dist.world) // micro) // accum, 1)
    total = cfg.steps or max(1, math.ceil(cfg.epochs * per_epoch_steps))
    selection = job.source.selection_split if job.source.selection_split in job.eval_sets else None
    if cfg.eval_every:
        eval_at = set(range(cfg.eval_every, total + 1, cfg.eval_every)) | {total}
    else:  # five evaluations, the last at the end
        eval_at = {math.ceil(total * k / 5) for k in range(1, 6)}
    save_at = set(range(cfg.save_every, total + 1, cfg.save_every)) | {total} if cfg.save_every else eval_at

    optimizer = _optimizer(model, cfg)
    scheduler = _scheduler(optimizer, cfg, total)
    scaler = torch.amp.GradScaler(rt.device.type) if rt.precision == "fp16" else None
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    params = [p for p in model.parameters() if p.requires_grad]
    train_model = model
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel

        train_model = DistributedDataParallel(
            model, device_ids=[rt.device.index] if rt.device.type == "cuda" else None)

    step, epoch, pos = 0, 0, 0
    best = {"top1": None, "step": None}
    bad_steps, images_seen, train_seconds, elapsed = 0, 0, 0.0, 0.0
    if state:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if int(state.get("total", -1)) == total:  # a resume with a new --steps keeps the new schedule
            scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        step, epoch, pos = int(state["step"]), int(state["epoch"]), int(state["pos"])
        best = dict(state.get("best") or best)
        bad_steps, images_seen = int(state.get("bad_steps", 0)), int(state.get("images_seen", 0))
        train_seconds, elapsed = float(state.get("train_seconds", 0.0)), float(state.get("elapsed", 0.0))
        job.source.unreadable.update(state.get("unreadable") or {})
        rngs = state["rng"]
        checkpoint.set_rng_state(rngs[dist.rank] if dist.rank < len(rngs) else rngs[0])
        if dist.main:
            from vitcli import output

            output.err().print(f"resuming at step {step}/{total} (epoch {epoch}, image {pos} of it)",
                               highlight=False, soft_wrap=True)

    metrics = runs.Metrics(job.run_dir, resume_step=step if state else None, enabled=dist.main)
    batches = _Batches(job, micro, epoch, pos)
    started = time.time()
    last_eval: dict | None = None

    def save_state():
        rng = _gather_rng(dist)
        if not dist.main:
            return
        checkpoint.save({
            "format": 1, "command": cfg.command, "config": cfg.to_dict(), "step": step,
            "epoch": batches.epoch, "pos": batches.pos, "accum": accum, "micro": micro, "total": total,
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict() if scaler else None,
            "rng": rng, "best": best, "bad_steps": bad_steps, "images_seen": images_seen,
            "train_seconds": train_seconds, "elapsed": elapsed + time.time() - started,
            "unreadable": dict(job.source.unreadable),
            "kernels": "onednn" if kernels.is_fused(model) else "eager",
        }, job.run_dir / runs.STATE)

    def save_best():
        if dist.main:
            runs.save_model(job.run_dir, model, job.label_names, job.model_block)

    display = Display(total, enabled=dist.main)
    model.train()
    try:
        with StopSignals() as stop, display:
            display.update(step, val=best["top1"])
            while step < total:
                t0 = time.time()
                optimizer.zero_grad(set_to_none=True)
                scheduler.step_update(step + 1)
                loss_sum = torch.zeros((), dtype=_loss_dtype(rt.device), device=rt.device)  # no sync per micro-batch
                n_images = 0
                for a in range(accum):
                    images, labels = batches.next()
                    images = images.to(rt.device, non_blocking=True)
                    labels = labels.to(rt.device, non_blocking=True)
                    sync_ctx = train_model.no_sync() if dist.enabled and a < accum - 1 else nullcontext()
                    with sync_ctx:
                        with rt.autocast():
                            logits = train_model(images)
                        loss = criterion(logits.float(), labels)
                        scaled = loss / accum
                        (scaler.scale(scaled) if scaler is not None else scaled).backward()
                    loss_sum += loss.detach().to(loss_sum.dtype) * len(labels)
                    n_images += len(labels)
                if scaler is not None:
                    scaler.unscale_(optimizer)
                grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad or float("inf"), foreach=True)
                # the step's one device -> host transfer: the NaN guard must decide before the update
                loss_value, grad_norm = torch.stack([loss_sum, grad_norm.to(loss_sum.dtype)]).tolist()
                flags = torch.tensor([loss_value, n_images, float(stop.signum or 0),
                                      float(job.stop_after is not None and step + 1 >= job.stop_after)],
                                     dtype=torch.float64)
                distributed.all_sum(flags, dist)
                mean_loss = flags[0].item() / max(flags[1].item(), 1)
                finite = math.isfinite(mean_loss) and (math.isfinite(grad_norm) or scaler is not None)
                if finite:
                    if scaler is not None:
                        scaler.step(optimizer)
                    else:
                        optimizer.step()
                    bad_steps = 0
                else:
                    optimizer.zero_grad(set_to_none=True)
                    bad_steps += 1
                if scaler is not None:
                    scaler.update()
                step += 1
                images_seen += int(flags[1].item())
                dt = time.time() - t0
                train_seconds += dt
                lr = optimizer.param_groups[0]["lr"]
                img_s = images_seen / max(train_seconds, 1e-9)
                if not finite:
                    metrics.log({"step": step, "event": "nonfinite", "loss": mean_loss, "grad_norm": grad_norm})
                    display.message(f"step {step}: non-finite loss or gradient norm (loss {mean_loss}, "
                                    f"grad norm {grad_norm}): update skipped ({bad_steps}/{cfg.max_bad_steps})")
                    if bad_steps >= cfg.max_bad_steps:
                        raise Diverged(
                            f"{bad_steps} steps in a row had a non-finite loss or gradient norm "
                            f"(last at step {step}: loss {mean_loss}, grad norm {grad_norm}); the run stopped",
                            f"the last good checkpoint is kept in {job.run_dir / runs.STATE}; lower --lr, "
                            "check the data, or use --precision fp32")
                elif step % cfg.log_every == 0 or step == 1 or step == total:
                    metrics.log({"step": step, "epoch": round(batches.epoch + batches.pos /
                                                              max(n_train // dist.world, 1), 4),
                                 "loss": round(mean_loss, 6), "lr": lr, "grad_norm": round(grad_norm, 6),
                                 "img_s": round(img_s, 2), "skipped_images": job.source.skipped_count})
                display.update(step, loss=mean_loss, lr=lr, img_s=img_s,
                               eta=(total - step) * train_seconds / step, val=best["top1"])
                if selection and step in eval_at:
                    last_eval = evaluate(job, selection)
                    metrics.log({"step": step, **last_eval, "skipped_images": job.source.skipped_count})
                    if best["top1"] is None or last_eval["top1"] > best["top1"]:
                        best = {"top1": last_eval["top1"], "step": step}
                        save_best()
                    display.update(step, val=best["top1"])
                    display.message(f"step {step}/{total}: {selection} top-1 {last_eval['top1']:.2f} % "
                                    f"(best {best['top1']:.2f} % at step {best['step']})")
                if flags[2].item():  # a signal reached some rank: every rank stops here
                    save_state()
                    signum = stop.signum or (signal.SIGTERM if int(flags[2].item()) % signal.SIGTERM == 0
                                             else signal.SIGINT)
                    raise Interrupted(f"stopped at step {step}/{total}; the training state is saved in "
                                      f"{job.run_dir / runs.STATE}",
                                      f"continue with --resume {job.run_dir}", int(signum))
                if flags[3].item():
                    save_state()
                    return {"run_dir": str(job.run_dir), "stopped_at": step, "steps": total}
                if step in save_at and bad_steps == 0:
                    save_state()  # never during a run of non-finite steps: the last good one stays
    finally:
        batches.close()
        metrics.close()

    if selection is None or best["top1"] is None:
        save_best()  # no held-out split: the final model is the one kept
    distributed.barrier(dist)
    summary = {"run_dir": str(job.run_dir), "steps": total, "seconds": round(elapsed + time.time() - started, 1),
               "selection_split": selection, "val_top1": best["top1"], "best_step": best["step"],
               "img_s": round(images_seen / max(train_seconds, 1e-9), 2), "images_seen": images_seen,
               "skipped_images": job.source.skipped_count, "epochs": round(images_seen / max(n_train, 1), 3)}
    if "test" in job.eval_sets:
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(job.run_dir / "model.safetensors")))
        test = evaluate(job, "test")
        summary["test_top1"] = test["top1"]
        metrics = runs.Metrics(job.run_dir, enabled=dist.main)
        metrics.log({"step": total, **test})
        metrics.close()
    summary.update(job.extra_summary)
    return summary
