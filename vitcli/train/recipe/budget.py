"""How long a fine-tune runs when the user leaves it to vitcli: the auto budget cut by what the LP-FT probe
left to gain, and the time a run is expected to take (`--dry-run`).

The probe (vitcli.train.recipe.probe) reports its stratified k-fold cross-validated top-1 on the training split:
an estimate of the probe's error on unseen images, measured before any fine-tuning step. Fine-tuning can
at best fix what the probe gets wrong, so the auto budget (vitcli.train.recipe.recipes.auto_steps, "the cap")
is spent in proportion to that error:

    steps = max(MIN_STEPS, ceil(cap x min(1, cross-validated error / FULL_AT)))    (never above the cap)

A probe at 99.72 % cross-validated (flowers12: 2 of 720 images wrong) leaves 0.28 % to gain and gets 9 of
160 steps; one at 95 % or below gets the whole cap. The warmup shrinks with the budget (a tenth of it,
at most the recipe's), so a short run is not all warmup. The cut applies only to the auto budget
(`--steps` / `--epochs` are the duration) and only when the probe cross-validated (2+ images per class).
The guarantee stays the selection's: with a minival the probed head is the step-0 candidate, so the run
keeps it unless fine-tuning beats it there.

The estimate: images per second of training and of evaluation (the probe's feature pass) measured by
this machine's last run of the same model, resolution, batch and precision (`record`, kept in vitcli's
cache as `throughput.json`, one entry per machine and setting), times the run's images; none before
such a run.
"""

from __future__ import annotations

import math
import time

FULL_AT = 5.0  # % cross-validated error at (and above) which the probe leaves the whole auto budget to fine-tuning
MIN_STEPS = 8  # the fewest steps the cut leaves: a few updates of every layer, the warmup and its decay
THROUGHPUT = "train-throughput"  # the measurement's name in vitcli.accel.cache (dry-run estimates only)


def is_auto(cfg) -> bool:
    return cfg.budget == "auto" and cfg.steps is None and cfg.epochs is None


def probed_steps(cap: int, cv_top1: float | None) -> int:
    """The auto budget after a probe that cross-validated at `cv_top1` % (None: the whole cap)."""
    if cv_top1 is None:
        return cap
    share = min(1.0, max(0.0, 100.0 - float(cv_top1)) / FULL_AT)
    return min(cap, max(MIN_STEPS, math.ceil(cap * share - 1e-9)))


def warmup_for(cfg, steps: int) -> int:
    return min(cfg.warmup, max(1, steps // 10))


def cap_steps(cfg, n_train: int, num_classes: int) -> int:
    from vitcli.train.run.plan import total_steps

    return total_steps(cfg, n_train, num_classes, max(n_train // max(cfg.batch_size, 1), 1))


def after_probe(cfg, probe: dict | None, source):
    """`cfg` with the auto budget fixed by the probe's cross-validated top-1 (steps and warmup), or as it is
    (a duration given, another head, no cross-validation)."""
    if not is_auto(cfg) or not probe or probe.get("cv_top1") is None:
        return cfg
    from vitcli import output

    cap = cap_steps(cfg, source.size("train"), source.num_classes)
    steps = probed_steps(cap, probe["cv_top1"])
    warmup = warmup_for(cfg, steps)
    output.info(
        f"budget: {steps} of the auto budget's {cap} steps (the probe leaves {100 - probe['cv_top1']:.2f} % "
        f"cross-validated error; all {cap} from {FULL_AT:g} %), warmup {warmup}"
    )
    return cfg.replace(steps=steps, warmup=warmup)


# ------------------------------------------------------------------------------------------ the estimate
def _key(cfg, img_size) -> str:
    """The measurement's detail in vitcli.accel.cache (the machine key is the cache's own)."""
    return f"|{cfg.model}|{img_size or 'own'}px|batch {cfg.batch_size}|{cfg.device}|{cfg.precision}"


def record(cfg, summary: dict) -> None:
    """Keep what a finished single-process run measured, for the estimates of later `--dry-run`s: its
    training img/s and, when its probe computed features, their img/s (an evaluation's forward pass)."""
    from vitcli.accel import cache

    if not summary.get("img_s") or summary.get("world_size", 1) != 1 or "stopped_at" in summary:
        return
    eval_img_s = (summary.get("probe") or {}).get("features_img_s") or (measured(cfg) or {}).get("eval_img_s")
    cache.record(
        THROUGHPUT,
        _key(cfg, cfg.img_size),
        {
            "train_img_s": summary["img_s"],
            "eval_img_s": eval_img_s,
            "measured": time.strftime("%Y-%m-%d %H:%M"),
            "run": summary.get("run_dir"),
        },
    )


def measured(cfg) -> dict | None:
    from vitcli.accel import cache

    found = cache.lookup(THROUGHPUT, _key(cfg, cfg.img_size))
    return found if isinstance(found, dict) and found.get("train_img_s") else None


def plan_of(cfg) -> dict:
    """What `--dry-run` says of the duration: the steps (for the probe-dependent auto budget, the range),
    the warmup, the evaluations, and the estimated seconds when this machine has run the setting before."""
    from vitcli.errors import VitError
    from vitcli.train.run import plan as plans
    from vitcli.train.run.build import open_run_dataset

    try:
        source = open_run_dataset(cfg, download=False)
    except VitError as e:
        return {
            "steps": cfg.steps,
            "note": f"the dataset is not here yet ({e.message}): the budget is fixed when the run opens it",
        }
    n_train, k = source.size("train"), source.num_classes
    cap = cap_steps(cfg, n_train, k)
    probed = is_auto(cfg) and getattr(cfg, "head_init", None) == "probe"
    low = probed_steps(cap, 100.0) if probed else cap
    out = {
        "steps": cap,
        "train_images": n_train,
        "classes": k,
        "batch_size": cfg.batch_size,
        "per_epoch": max(n_train // max(cfg.batch_size, 1), 1),
    }
    if probed:
        out.update(
            steps_min=low,
            warmup=[warmup_for(cfg, low), warmup_for(cfg, cap)],
            rule=f"the auto budget max(3 epochs, 100 + 5 x classes) = {cap} steps, cut in proportion to "
            f"the LP-FT probe's cross-validated error (all of it from {FULL_AT:g} %; at least "
            f"{low}); fixed once the probe is fitted",
        )
    else:
        out["warmup"] = cfg.warmup if cfg.warmup_epochs is None else round(cfg.warmup_epochs * out["per_epoch"])
    held = [s for s in ("minival", "val") if s in source.splits][:1]
    evals = (plans.EVALUATIONS if not cfg.eval_every else math.ceil(cap / cfg.eval_every)) if held else 0
    eval_images = evals * source.size(held[0]) if held else 0
    eval_images += source.size("test") if "test" in source.splits else 0
    speed = measured(cfg)
    if speed is None:
        out["estimate"] = None
        out["estimate_note"] = "no run of this model, resolution, batch and precision on this machine yet"
        return out

    def seconds(steps: int) -> float:
        total = steps * cfg.batch_size / speed["train_img_s"]
        if speed.get("eval_img_s"):
            total += eval_images / speed["eval_img_s"]
        if probed and speed.get("eval_img_s"):
            total += n_train / speed["eval_img_s"]  # the probe's feature pass (none when cached)
        return round(total)

    out["estimated_seconds"] = [seconds(low), seconds(cap)] if probed else seconds(cap)
    out["estimate_from"] = (
        f"this machine's run of {speed['measured']}: {speed['train_img_s']} img/s training"
        + (f", {speed['eval_img_s']} img/s evaluating" if speed.get("eval_img_s") else "")
        + " (start-up not included)"
    )
    return out


def _clock(seconds) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}:{seconds % 60:02d}"


def describe(plan: dict) -> str:
    """One line for people: `plan: 9-160 steps (...); estimated 1:05-6:10 on this machine`."""
    if "train_images" not in plan:
        return f"plan: {plan.get('note')}"
    steps = f"{plan['steps_min']}-{plan['steps']}" if "steps_min" in plan else f"{plan['steps']}"
    text = (
        f"plan: {steps} steps of {plan['batch_size']} images ({plan['train_images']} training images, "
        f"{plan['classes']} classes)"
    )
    if "rule" in plan:
        text += f": {plan['rule']}"
    est = plan.get("estimated_seconds")
    if est is None:
        return text + f"; no time estimate: {plan.get('estimate_note')}"
    shown = "-".join(map(_clock, est)) if isinstance(est, list) else _clock(est)
    return text + f"; estimated {shown} (min:s) from {plan['estimate_from']}"
