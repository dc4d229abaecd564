"""The training loop shared by `vit finetune` and `vit train`, as named steps.

    Trainer(job).fit():  restore -> repeat [train_step -> guard -> log -> evaluate_and_select -> save]
                         -> finish (the selected model on the test split)

What it guarantees:
- exact resume: the data order is a per-epoch permutation drawn from (seed, epoch), augmentation is
  seeded per (sample, epoch) (vitcli.train.run.batches), mixup per (step, micro-batch), and the checkpoint
  holds model, EMA, optimizer, scheduler, scaler, every rank's RNG states, the step and the position
  within the epoch; on CPU a resumed run reproduces the uninterrupted one bit for bit;
- nothing lost: SIGINT/SIGTERM finish the current step, save, and stop with 130/143 (a second Ctrl-C
  aborts at once); a non-finite loss or gradient norm skips the update, `max_bad_steps` in a row stop
  the run with the last good checkpoint kept;
- one global batch: batch_size = world_size x accum x micro-batch, whatever the device count;
- selection on the held-out split (higher top-1, on a tie lower loss), the EMA's weights beside the
  model's, `patience`; what the run keeps, and when, is vitcli.train.run.keeping (mixed into Trainer).
"""

from __future__ import annotations

import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vitcli.train import files
from vitcli.train.recipe import distill
from vitcli.train.recipe.optim import create_optimizer, create_scheduler
from vitcli.train.recipe.regularise import Regularisation, make_ema
from vitcli.train.report import reporting
from vitcli.train.report.display import Display
from vitcli.train.run import checkpoint
from vitcli.train.run.batches import TrainBatches
from vitcli.train.run.evaluation import eval_batch_size
from vitcli.train.run.interrupts import Diverged, Interrupted, StopSignals
from vitcli.train.run.keeping import Keeping
from vitcli.train.run.plan import epoch_images, plan
from vitcli.train.scale import distributed, fsdp


@dataclass
class Job:
    """Everything the loop needs, built by vitcli.train.run.start."""

    cfg: Any  # RunConfig
    model: Any  # the bare nn.Module (rank-local)
    source: Any  # vitcli.data.source.DatasetSource
    train_set: Any  # ImageDataset with the training transform
    eval_sets: dict  # split -> ImageDataset with the eval transform
    runtime: Any
    dist: distributed.Dist
    run_dir: Path
    label_names: list
    model_block: dict  # the "vitcli" block of the saved config.json
    resume_state: dict | None = None
    stop_after: int | None = None  # stop as if interrupted after this step (time-boxed jobs, tests)
    workers: int | None = None  # DataLoader workers (results do not depend on it); None: the loader's default
    accum: int | None = None  # micro-batches per step; None: the checkpoint's, --accum, or 1
    evaluate_first: bool = False  # the model is already a classifier (a probed head): a step-0 candidate
    extra_summary: dict = field(default_factory=dict)


@dataclass
class Tally:
    """What the run has counted so far: saved in the checkpoint, restored on resume."""

    step: int = 0
    best_top1: float | None = None
    best_step: int | None = None
    best_loss: float | None = None
    best_weights: str | None = None  # "model" or "ema"
    stale: int = 0  # evaluations since the best
    bad_steps: int = 0
    images_seen: int = 0
    train_seconds: float = 0.0
    elapsed: float = 0.0


@dataclass
class StepResult:
    """One optimizer step as every rank agrees on it (after the all-reduce)."""

    mean_loss: float
    grad_norm: float
    images: int
    signum: int  # a signal some rank received (0: none)
    stop_after: bool  # the step `stop_after` asked for was reached


def fit(job: Job) -> dict:
    return Trainer(job).fit()


class Trainer(Keeping):
    def __init__(self, job: Job):
        import torch

        from vitcli import accel

        self.job, self.cfg, self.dist, self.rt, self.model = job, job.cfg, job.dist, job.runtime, job.model
        self.state = job.resume_state or {}
        # CPU: oneDNN linears (fp32) or the math attention (bf16) where measured faster (same parameters);
        # a resumed run keeps the kernels it started with, so that it stays bit for bit the uninterrupted run
        self.accel = accel.prepare(
            self.model,
            self.rt,
            "training",
            self.state.get("kernels") or ("eager" if getattr(self.cfg, "fsdp", False) else None),
        )
        self.kernels = self.accel.training_kernels
        if job.accum is None:
            job.accum = int(self.state.get("accum") or self.cfg.accum or 1)
        self.accum = job.accum
        self.n_train = len(job.train_set)
        self.plan = plan(
            self.cfg,
            n_train=self.n_train,
            num_classes=job.source.num_classes,
            world=self.dist.world,
            accum=self.accum,
            n_epoch=epoch_images(job.source),
        )
        self.micro, self.total, self.eval_at, self.save_at = self.plan.micro, self.plan.total, *self.plan.points
        self.selection = job.source.selection_split if job.source.selection_split in job.eval_sets else None

        self.train_model = fsdp.prepare(self.model, self.cfg, self.rt, self.dist)  # DDP, FSDP2 (before the optimizer)
        self.optimizer = create_optimizer(self.model, self.cfg)
        self.scheduler = create_scheduler(self.optimizer, self.cfg, self.total, self.plan.warmup)
        self.scaler = torch.amp.GradScaler(self.rt.device.type) if self.rt.precision == "fp16" else None
        self.regularisation = Regularisation(self.cfg, job.source.num_classes, self.cfg.seed, self.dist.rank)
        self.criterion = self.regularisation.criterion
        self.distiller = distill.make(self.cfg, self.model, self.criterion, self.rt, job.label_names, self.dist)
        self.ema = make_ema(self.model, self.cfg)  # after the kernels: the EMA evaluates with them too
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.tally = Tally()
        epoch, pos = self.restore()
        self.batches = TrainBatches(
            job.train_set,
            job.source,
            micro=self.micro,
            seed=self.cfg.seed,
            dist=self.dist,
            runtime=self.rt,
            workers=job.workers,
            epoch=epoch,
            pos=pos,
        )
        self.eval_bs = eval_batch_size(self.cfg, self.dist.world, self.accum)
        self.stopped_early: int | None = None
        self.started = time.time()
        self.probe = None  # a few training images: a model is kept only if its outputs on them are finite

    # ----------------------------------------------------------------------------------- set-up
    def restore(self) -> tuple[int, int]:
        """Load the checkpoint being resumed, if any; returns (epoch, position in it)."""
        state = self.state
        if not state:
            return 0, 0
        fsdp.load_states(self.model, self.optimizer, state, self.cfg.model)
        if int(state.get("total", -1)) == self.total:  # a resume with a new --steps keeps the new schedule
            self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            self.ema.module.load_state_dict(state["ema"])
        b = state.get("best") or {}
        self.tally = Tally(
            int(state["step"]),
            b.get("top1"),
            b.get("step"),
            b.get("loss"),
            b.get("weights"),
            int(b.get("stale", 0)),
            int(state.get("bad_steps", 0)),
            int(state.get("images_seen", 0)),
            float(state.get("train_seconds", 0.0)),
            float(state.get("elapsed", 0.0)),
        )
        self.job.source.unreadable.update(state.get("unreadable") or {})
        rngs = state["rng"]
        checkpoint.set_rng_state(rngs[self.dist.rank] if self.dist.rank < len(rngs) else rngs[0])
        if self.dist.main:
            from vitcli import output

            output.info(
                f"resuming at step {self.tally.step}/{self.total} (epoch {state['epoch']}, image {state['pos']} of it)"
            )
        return int(state["epoch"]), int(state["pos"])

    # ----------------------------------------------------------------------------------- the loop
    def fit(self) -> dict:
        """The loop and `finish`; every record goes to one reporter (metrics.jsonl, results.csv, curves.png,
        TensorBoard / W&B: vitcli.train.report.reporting), closed whatever happens."""
        with reporting.Reporter(
            self.job.run_dir, self.cfg, resume_step=self.tally.step if self.state else None, enabled=self.dist.main
        ) as self.metrics:
            return self.run_steps()

    def run_steps(self) -> dict:
        t = self.tally
        self.display = Display(self.total, enabled=self.dist.main)
        self.model.train()
        try:
            with StopSignals() as stop, self.display:
                self.display.update(t.step, val=t.best_top1)
                if self.job.evaluate_first and self.selection and t.step == 0:
                    self.evaluate_and_select()  # the probed head as it is: fine-tuning must beat it
                while t.step < self.total:
                    started = time.time()
                    result = self.train_step(stop)
                    finite = self.guard(result)
                    t.step += 1
                    t.images_seen += result.images
                    t.train_seconds += time.time() - started
                    self.log(result, finite)
                    if not finite:
                        self.stop_if_diverged(result)
                    if self.selection and t.step in self.eval_at:
                        self.evaluate_and_select()
                        if self.out_of_patience():
                            self.save_state()
                            break
                    if result.signum:  # a signal reached some rank: every rank stops here
                        self.save_state()
                        signum = stop.signum or (
                            signal.SIGTERM if result.signum % signal.SIGTERM == 0 else signal.SIGINT
                        )
                        raise Interrupted(
                            f"stopped at step {t.step}/{self.total}; the training state is saved in "
                            f"{self.job.run_dir / files.STATE}",
                            f"continue with --resume {self.job.run_dir}",
                            int(signum),
                        )
                    if result.stop_after:
                        self.save_state()
                        return {"run_dir": str(self.job.run_dir), "stopped_at": t.step, "steps": self.total}
                    if t.step in self.save_at and t.bad_steps == 0:
                        self.save_state()  # never during a run of non-finite steps: the last good one stays
        finally:
            self.batches.close()
        return self.finish()

    def train_step(self, stop) -> StepResult:
        """Forward and backward over `accum` micro-batches, the gradient clipped; no update yet. The
        step's one device -> host transfer and the one all-reduce of what every rank must agree on."""
        import torch

        rt, t = self.rt, self.tally
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step_update(t.step + 1)
        loss_dtype = torch.float32 if rt.device.type == "mps" else torch.float64  # MPS has no float64
        loss_sum = torch.zeros((), dtype=loss_dtype, device=rt.device)  # no sync per micro-batch
        n_images = 0
        for a in range(self.accum):
            images, labels = self.batches.next()
            images = images.to(rt.device, non_blocking=True)
            self.probe = images[:4].clone() if self.probe is None else self.probe  # save_best's check
            labels = labels.to(rt.device, non_blocking=True)
            sync = fsdp.accumulating(self.train_model, self.dist, a < self.accum - 1)
            images, targets = self.regularisation.mix(images, labels, t.step, a)  # mixup / cutmix, when on
            with sync:
                with rt.autocast():
                    logits = self.train_model(images)
                loss = (
                    self.criterion(logits.float(), targets)
                    if self.distiller is None
                    else self.distiller.loss(images, logits, targets)
                )  # --teacher: the label loss mixed with the teacher's
                scaled = loss / self.accum
                (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
            loss_sum += loss.detach().to(loss_sum.dtype) * len(labels)
            n_images += len(labels)
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        grad_norm = fsdp.plain(
            torch.nn.utils.clip_grad_norm_(self.params, self.cfg.clip_grad or float("inf"), foreach=True)
        )
        loss_value, grad_norm = torch.stack([loss_sum, grad_norm.to(loss_sum.dtype)]).tolist()
        stop_after = self.job.stop_after is not None and t.step + 1 >= self.job.stop_after
        flags = torch.tensor([loss_value, n_images, float(stop.signum or 0), float(stop_after)], dtype=torch.float64)
        distributed.all_sum(flags, self.dist)
        return StepResult(
            flags[0].item() / max(flags[1].item(), 1),
            grad_norm,
            int(flags[1].item()),
            int(flags[2].item()),
            bool(flags[3].item()),
        )

    def guard(self, result: StepResult) -> bool:
        """Apply the update when the loss and gradient norm are finite; otherwise skip it (after
        `max_bad_steps` such steps in a row, `stop_if_diverged` ends the run)."""
        t = self.tally
        finite = math.isfinite(result.mean_loss) and (math.isfinite(result.grad_norm) or self.scaler is not None)
        if finite:
            if self.scaler is not None:
                self.scaler.step(self.optimizer)
            else:
                self.optimizer.step()
            if self.ema is not None:
                self.ema.update(self.model, step=t.step + 1)
            t.bad_steps = 0
        else:
            self.optimizer.zero_grad(set_to_none=True)
            t.bad_steps += 1
        if self.scaler is not None:
            self.scaler.update()
        return finite

    def stop_if_diverged(self, result: StepResult) -> None:
        t = self.tally
        if t.bad_steps >= self.cfg.max_bad_steps:
            raise Diverged(
                f"{t.bad_steps} steps in a row had a non-finite loss or gradient norm (last at step {t.step}: "
                f"loss {result.mean_loss}, grad norm {result.grad_norm}); the run stopped",
                f"the last good checkpoint is kept in {self.job.run_dir / files.STATE}; lower --lr, check the "
                "data, or use --precision fp32",
            )

    def log(self, result: StepResult, finite: bool) -> None:
        t, total = self.tally, self.total
        lr = max(g["lr"] for g in self.optimizer.param_groups)  # the peak (the head's, with layer decay)
        img_s = t.images_seen / max(t.train_seconds, 1e-9)
        if not finite:
            self.metrics.log(
                {"step": t.step, "event": "nonfinite", "loss": result.mean_loss, "grad_norm": result.grad_norm}
            )
            self.display.message(
                f"step {t.step}: non-finite loss or gradient norm (loss {result.mean_loss}, "
                f"grad norm {result.grad_norm}): update skipped "
                f"({t.bad_steps}/{self.cfg.max_bad_steps})"
            )
        elif t.step % self.cfg.log_every == 0 or t.step == 1 or t.step == total or t.step in self.eval_at:
            epoch = t.images_seen / max(self.plan.epoch_images, 1)  # passes over train/ as given
            self.metrics.log(
                {
                    "step": t.step,
                    "epoch": round(epoch, 4),
                    "loss": round(result.mean_loss, 6),
                    "lr": lr,
                    "grad_norm": round(result.grad_norm, 6),
                    "img_s": round(img_s, 2),
                    "skipped_images": self.job.source.skipped_count,
                    "seconds": round(t.elapsed + time.time() - self.started, 2),
                }
            )
        self.display.update(
            t.step,
            loss=result.mean_loss,
            lr=lr,
            img_s=img_s,
            eta=(total - t.step) * t.train_seconds / t.step,
            val=t.best_top1,
        )
