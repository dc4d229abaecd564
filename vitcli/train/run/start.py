"""`vit finetune` and `vit train`: build the data, the model and the run folder, then run the loop.

    from vitcli.train.run.config import resolve
    from vitcli.train.run.start import finetune
    summary = finetune(resolve("finetune", {"dataset": "pets", "recipe": "quick", "name": "pets-a"}))
    summary["val_top1"], summary["test_top1"], summary["run_dir"]

What the model and data are made of is vitcli.train.run.build; the steps are vitcli.train.run.loop.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from vitcli import output
from vitcli.data.source import describe
from vitcli.errors import UsageError, VitError
from vitcli.train import files
from vitcli.train.recipe import budget, multilabel
from vitcli.train.report import reporting
from vitcli.train.run import build, loop, plan, runs
from vitcli.train.run import resume as resume_point
from vitcli.train.run.config import CONFIGS, FinetuneConfig, RunConfig, TrainConfig, from_dict
from vitcli.train.run.resume import ResumePoint
from vitcli.train.scale import distributed


def finetune(
    cfg: FinetuneConfig | None = None,
    *,
    resume: str | Path | ResumePoint | None = None,
    run_dir: str | Path | None = None,
    test: bool = True,
    stop_after: int | None = None,
) -> dict:
    """Fine-tune a pre-trained model; returns the summary (run_dir, steps, seconds, val_top1, ...).

    resume: a run folder to continue, or its `resume.locate` (cfg None: its saved config). run_dir: train
    into exactly this folder instead of `<cfg.project>/finetune/<cfg.name or auto>`. test: evaluate the
    selected model on the test split at the end. stop_after: save and return after this step, as if
    interrupted.
    """
    return _run("finetune", cfg, resume, run_dir, test, stop_after)


def train(
    cfg: TrainConfig | None = None,
    *,
    resume: str | Path | ResumePoint | None = None,
    run_dir: str | Path | None = None,
    test: bool = True,
    stop_after: int | None = None,
) -> dict:
    """Train from scratch; the same arguments and summary as `finetune`."""
    return _run("train", cfg, resume, run_dir, test, stop_after)


def resume_config(command: str, run: str | Path, changes: dict | None = None) -> RunConfig:
    """The saved config of the run folder `run`, with the settings a resumed run may change."""
    return resume_point.config(resume_point.locate(command, run), command, changes)


@contextmanager
def _tf32(device):
    """TF32 matrix multiplies on CUDA for the run, as the previous setting was afterwards."""
    if device.type != "cuda":
        yield
        return
    import torch

    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _run(command: str, cfg: RunConfig | None, resume, run_dir, test: bool, stop_after) -> dict:
    from vitcli.accel.runtime import runtime

    point = resume if isinstance(resume, ResumePoint) or resume is None else resume_point.locate(command, resume)
    if cfg is None:
        if point is None:
            raise UsageError("no config given")
        cfg = from_dict(command, point.config)
    state = resume_point.load_state(point, command) if point is not None else None
    if not isinstance(cfg, CONFIGS[command]):
        raise UsageError(f"{command} needs a {CONFIGS[command].__name__}")
    reporting.check(cfg.report_to)  # a missing TensorBoard / W&B package, before any work
    dist, device_spec = distributed.setup(cfg.device)
    try:
        rt = runtime(device_spec, cfg.precision)
        with _tf32(rt.device):
            job = _prepare(command, cfg, state, point, run_dir, test, stop_after, dist, rt)
            return _execute(job)
    finally:
        distributed.teardown(dist)


def _prepare(command, cfg, state, point, run_dir, test, stop_after, dist, rt) -> loop.Job:
    """Data, model and run folder of a run (rank 0 downloads what is missing, the others wait)."""
    from timm.utils import random_seed

    from vitcli.data.transforms import eval_transform, train_transform
    from vitcli.models.resolver import data_config_for

    if dist.main:
        source = build.open_run_dataset(cfg)
    distributed.barrier(dist)
    if not dist.main:  # after rank 0 has downloaded what was missing
        source = build.open_run_dataset(cfg, download=False)
    cfg, source = multilabel.resolve(cfg, source)  # --multi-label, from the data when not given

    random_seed(cfg.seed)
    make = build.build_finetune_model if command == "finetune" else build.build_scratch_model
    loaded, model = make(cfg, source.num_classes, rt.device)
    random_seed(cfg.seed, dist.rank)  # per-rank streams (drop-path) from here on
    data_config = data_config_for(model)
    img_size = data_config["input_size"][-1]
    probe = None
    if command == "finetune" and cfg.head_init == "probe" and state is None:  # LP-FT: the head first
        from vitcli.train.recipe.probe import probe_head

        probe = probe_head(model, data_config, source, cfg, rt)
        cfg = budget.after_probe(cfg, probe, source)  # the auto budget cut by what the probe left to gain
    crop_scale, hflip = plan.augmentation(cfg, plan.epoch_images(source), source.num_classes)
    if (crop_scale, hflip) != (cfg.crop_scale, cfg.hflip) and dist.main:
        output.info(
            f"augmentation for the budget: crops of {100 * crop_scale[0]:.0f}-{100 * crop_scale[1]:.0f} % "
            f"of the image, flips {hflip:g}"
        )
    train_set = source.subset(
        "train",
        train_transform(data_config, crop_scale=crop_scale, hflip=hflip, aa=cfg.aa, reprob=cfg.reprob),
        augment_seed=cfg.seed,
    )
    eval_tf = eval_transform(data_config)
    eval_sets = {
        s: source.subset(s, eval_tf) for s in ("minival", "val", "test") if s in source.splits and (test or s != "test")
    }

    if state is not None:
        run_dir = point.run_dir
        if dist.main:
            from vitcli.train.run import checkpoint

            runs.claim(run_dir)  # two resumes of one run at once: the second is refused
            checkpoint.clean_stale(run_dir)
    else:
        if dist.main:
            run_dir = (
                runs.create_at(Path(run_dir))
                if run_dir is not None
                else runs.create(cfg.project, command, cfg.name, cfg.dataset)
            )
        run_dir = Path(distributed.broadcast_object(str(run_dir) if run_dir else None, dist))

    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    versions = runs.versions()
    if dist.main:
        output.info(
            f"{command} {cfg.model}: {params / 1e6:.2f} M params ({trainable / 1e6:.2f} M trained), "
            f"{img_size} px, {rt.describe()}{f' x {dist.world} processes' if dist.enabled else ''}"
        )
        output.info(f"data {describe(source)}")
        if source.minival_too_small:
            output.info(
                f"no minival: the default one would hold {source.minival_too_small} images, too few to "
                f"choose a model by; training on all of train/ and keeping the last model "
                f"(--val-split 0.1 carves one anyway)",
                style="dim",
            )
        output.info(f"run folder {run_dir}")
        runs.write_run_json(
            run_dir,
            command=command,
            config=cfg.to_dict(),
            versions=versions,
            environment=runs.environment(rt, dist.world),
            status="running",
            dataset={
                "name": source.name,
                "classes": source.classes,
                "splits": {s: source.size(s) for s in source.splits},
            },
        )
        if probe:
            reporting.log_probe(run_dir, probe)  # its cross-validated top-1 in curves.png
    block = {"command": command, "config": cfg.to_dict(), "versions": versions}
    return loop.Job(
        cfg=cfg,
        model=model,
        source=source,
        train_set=train_set,
        eval_sets=eval_sets,
        runtime=rt,
        dist=dist,
        run_dir=run_dir,
        label_names=list(source.classes),
        model_block=block,
        resume_state=state,
        stop_after=stop_after,
        workers=cfg.workers,
        evaluate_first=probe is not None,
        extra_summary={
            "model": cfg.model,
            "dataset": cfg.dataset,
            "params": params,
            "img_size": img_size,
            "world_size": dist.world,
            **({"probe": probe} if probe else {}),
        },
    )


def _execute(job: loop.Job) -> dict:
    try:
        return _record(job)
    finally:  # the run folder is free for a --resume (the process ending frees it too)
        runs.release(job.run_dir)


def _record(job: loop.Job) -> dict:
    try:
        summary = _fit_with_memory_retry(job)
        if job.cfg.multi_label and job.dist.main and "stopped_at" not in summary:
            summary = multilabel.finish(job, summary)  # per-class thresholds into config.json
    except BaseException as e:  # whatever ends the run, run.json says so (never "running" for ever)
        if job.dist.main:
            status = (
                type(e).__name__.lower()
                if isinstance(e, VitError)
                else "interrupted"
                if isinstance(e, KeyboardInterrupt)
                else "failed"
            )
            message = e.message if isinstance(e, VitError) else f"{type(e).__name__}: {e}"
            runs.write_run_json(job.run_dir, status=status, error=message)
            if isinstance(e, KeyboardInterrupt) and not (job.run_dir / files.STATE).exists():
                output.warn(
                    "stopped before the first step: no training state was saved, so there is "
                    "nothing to --resume; run the same command again to start over"
                )
        raise
    if job.dist.main:
        runs.write_run_json(job.run_dir, status="stopped" if "stopped_at" in summary else "finished", summary=summary)
        budget.record(job.cfg, summary)  # this machine's img/s: the estimate of a later --dry-run
    return summary


def _fit_with_memory_retry(job: loop.Job) -> dict:
    """On a CUDA out-of-memory error before the first step, with --accum left to us, double the
    accumulation (halving the micro-batch, keeping the global batch) and try again."""
    import torch

    while True:
        try:
            return loop.fit(job)
        except torch.OutOfMemoryError:
            micro = job.cfg.batch_size // job.dist.world // job.accum
            auto = job.cfg.accum is None and job.resume_state is None and micro > 1
            started = (job.run_dir / files.STATE).exists()
            job.model.zero_grad(set_to_none=True)
            if job.runtime.device.type == "cuda":
                torch.cuda.empty_cache()
            if not auto or started:
                raise VitError(
                    f"the GPU ran out of memory with micro-batches of {micro} images "
                    f"(global batch {job.cfg.batch_size} = {job.dist.world} process(es) x {job.accum} x {micro})",
                    f"raise --accum (now {job.accum}) to keep the global batch with smaller micro-batches, or "
                    "lower --batch-size or --img-size",
                ) from None
            job.accum *= 2
            output.warn(f"out of GPU memory: accumulating {job.accum} micro-batches of {micro // 2} per step")
