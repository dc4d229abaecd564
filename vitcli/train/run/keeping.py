"""What a run keeps, mixed into the loop (vitcli.train.run.loop.Trainer):

- the model: the selection split evaluated, the EMA's weights beside the model's; a higher top-1, or the
  same top-1 at a lower loss, is saved as the run's model, as what it is ("weights": "ema"|"model"), and
  only when its weights and outputs are finite; `patience` evaluations without a better one stop the run;
- the training state, at the save points and on a stop, only when every weight and optimizer state is
  finite (the last good one stays);
- the end of the run: the summary, and the kept model (no held-out split: the final one) on the test split.

`Keeping` holds no state of its own: it works on the Trainer's (tally, model, ema, optimizer, job, display).
"""

from __future__ import annotations

import math
import time

from vitcli.train import files
from vitcli.train.run import checkpoint, runs
from vitcli.train.run.evaluation import evaluate
from vitcli.train.run.interrupts import Diverged
from vitcli.train.scale import distributed, fsdp


class Keeping:
    """The selection, saving and end-of-run steps of vitcli.train.run.loop.Trainer."""

    # ----------------------------------------------------------------------------------- selection
    def evaluate_split(self, split: str, model=None, **options) -> dict:
        result = evaluate(
            self.model if model is None else model,
            self.job.eval_sets[split],
            self.rt,
            self.dist,
            batch_size=self.eval_bs,
            workers=self.job.workers,
            source=self.job.source,
            **options,
        )
        return {"split": split, **result}

    def evaluate_and_select(self) -> None:
        """Evaluate the selection split (and the EMA's weights, when kept); a new best is saved as the
        run's model: a higher top-1, or the same top-1 at a lower loss."""
        t, results = self.tally, {}
        for which, module in self.candidates().items():
            results[which] = self.evaluate_split(self.selection, module)
            self.metrics.log(
                {
                    "step": t.step,
                    **results[which],
                    **({"weights": which} if self.ema else {}),
                    "skipped_images": self.job.source.skipped_count,
                    "seconds": round(t.elapsed + time.time() - self.started, 2),
                }
            )
        result = results[which := max(results, key=lambda w: (results[w]["top1"], -results[w]["loss"]))]
        better = t.best_top1 is None or (result["top1"], -result["loss"]) > (t.best_top1, -(t.best_loss or math.inf))
        if better and self.save_best(self.candidates()[which], which):
            t.best_top1, t.best_step, t.best_loss, t.best_weights, t.stale = (
                result["top1"],
                t.step,
                result["loss"],
                which,
                0,
            )
        else:
            t.stale += 1
        self.display.update(t.step, val=t.best_top1)
        best = f"best {t.best_top1:.2f} % at step {t.best_step}" if t.best_top1 is not None else "no model kept yet"
        metric = (
            "mAP" if "mAP" in result else "top-1"
        )  # a multi-label run selects on mAP (vitcli.train.recipe.multilabel)
        self.display.message(f"step {t.step}/{self.total}: {self.selection} {metric} {result['top1']:.2f} % ({best})")

    def candidates(self) -> dict:
        """The weights a selection may keep: the trained ones, and their EMA when kept."""
        return {"model": self.model} if self.ema is None else {"model": self.model, "ema": self.ema.module}

    def out_of_patience(self) -> bool:
        """`patience` evaluations in a row without a better model: stop early (the best is kept)."""
        if self.cfg.patience is None or self.tally.stale < self.cfg.patience:
            return False
        self.stopped_early = self.tally.step
        self.display.message(
            f"step {self.tally.step}: no better {self.selection} top-1 in {self.cfg.patience} "
            f"evaluations: stopping early (best at step {self.tally.best_step})"
        )
        return True

    # ----------------------------------------------------------------------------------- saving
    def finite(self) -> bool:
        """Every parameter, buffer and optimizer state is finite: the only state worth saving."""
        return fsdp.finite(self.model, self.optimizer, self.dist)

    def save_state(self) -> None:
        rng = checkpoint.gather_rng_states(self.dist)
        model_state, optimizer_state = fsdp.states(self.model, self.optimizer)  # every rank (FSDP gathers)
        if not self.finite():  # (every rank holds the same weights: all agree)
            self.display.message(
                f"step {self.tally.step}: the weights are not finite: the training state is not "
                "saved (the last good one is kept)"
            )
            return
        if not self.dist.main:
            return
        checkpoint.save(checkpoint.pack(self, model_state, optimizer_state, rng), self.job.run_dir / files.STATE)

    def save_best(self, module=None, which: str | None = None) -> bool:
        """Save `module` (default: the EMA when kept, else the model) as the run's model, saying which
        weights it holds."""
        if module is None:
            which, module = list(self.candidates().items())[-1]
        if not distributed.all_true(
            self.finite() and checkpoint.outputs_finite(module, self.probe, self.rt), self.dist
        ):  # every rank agrees (each checked its own images)
            self.display.message(
                f"step {self.tally.step}: the weights or their outputs are not finite: not kept as the model"
            )
            return False
        with fsdp.full_state(module):  # every rank: a sharded model is gathered onto rank 0
            if self.dist.main:
                block = {**self.job.model_block, "weights": which} if self.ema is not None else self.job.model_block
                runs.save_model(self.job.run_dir, module, self.job.label_names, block)
        return True

    def finish(self) -> dict:
        """The summary; the selected model (no held-out split: the final one) evaluated on test."""
        t, job = self.tally, self.job
        if (
            t.bad_steps
            or (self.selection is None or t.best_top1 is None)
            and not self.save_best()
            and not (job.run_dir / files.WEIGHTS).exists()
        ):
            kept = f"; the best model before it is kept in {job.run_dir}" if t.best_top1 is not None else ""
            raise Diverged(
                f"the run diverged: {f'its last {t.bad_steps} step(s) were' if t.bad_steps else 'the model'}"
                f" not finite{kept}",
                "lower --lr, check the data, or use --precision fp32",
            )
        distributed.barrier(self.dist)
        summary = {
            "run_dir": str(job.run_dir),
            "steps": self.total,
            "seconds": round(t.elapsed + time.time() - self.started, 1),
            "selection_split": self.selection,
            "val_top1": t.best_top1,
            "best_step": t.best_step,
            "img_s": round(t.images_seen / max(t.train_seconds, 1e-9), 2),
            "images_seen": t.images_seen,
            "skipped_images": job.source.skipped_count,
            "epochs": round(t.images_seen / max(self.plan.epoch_images, 1), 3),
        }
        if self.ema is not None:
            summary["weights"] = t.best_weights or "ema"
        if self.stopped_early is not None:
            summary["stopped_early_at"] = self.stopped_early
        if "test" in job.eval_sets:
            from safetensors.torch import load_file

            fsdp.load_model(self.model, load_file(str(job.run_dir / files.WEIGHTS)))
            test = self.evaluate_split("test", confusion=True)  # the reporter writes confusion.png, per_class.csv
            summary["test_top1"] = test["top1"]
            self.metrics.log({"step": self.total, **test})
        summary.update(job.extra_summary)
        return summary
