"""`vit finetune` and `vit train`: build the model, data and run folder, then run vitcli.loop.

    from vitcli.train.config import FinetuneConfig, resolve
    from vitcli.train.run import finetune
    summary = finetune(resolve("finetune", {"dataset": "pets", "recipe": "quick", "name": "pets-a"}))
    summary["val_top1"], summary["test_top1"], summary["run_dir"]

Fine-tuning follows the paper: the pre-trained head is replaced by a zero-initialised one for the
dataset's classes, and position embeddings are resampled in 2-D (bicubic, timm's checkpoint filter)
when the resolution changes. Training from scratch takes a timm name or a paper code (`S/16`) with the
paper's ablations: learned-1D, 2-D sincos or no position embedding; class-token or average pooling.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

from vitcli.data import datasets as data
from vitcli.train import distributed
from vitcli.train import loop
from vitcli import output
from vitcli.train import runs
from vitcli.errors import ModelError, UsageError, VitError
from vitcli.train.config import CONFIGS, FinetuneConfig, RunConfig, TrainConfig, from_dict

# settings a resumed run may change; everything else is the run's recipe
RESUMABLE = ("steps", "epochs", "workers", "device", "precision", "eval_every", "save_every", "log_every",
             "max_bad_steps")


def finetune(cfg: FinetuneConfig | None = None, *, resume: str | Path | None = None,
             run_dir: str | Path | None = None, test: bool = True, stop_after: int | None = None) -> dict:
    """Fine-tune a pre-trained model; returns the summary (run_dir, steps, seconds, val_top1, ...).

    resume: a run folder to continue (cfg None: its saved config). run_dir: train into exactly this
    folder instead of `<cfg.project>/finetune/<cfg.name or auto>`. test: evaluate the selected model
    on the test split at the end. stop_after: save and return after this step, as if interrupted.
    """
    return _run("finetune", cfg, resume, run_dir, test, stop_after)


def train(cfg: TrainConfig | None = None, *, resume: str | Path | None = None,
          run_dir: str | Path | None = None, test: bool = True, stop_after: int | None = None) -> dict:
    """Train from scratch; the same arguments and summary as `finetune`."""
    return _run("train", cfg, resume, run_dir, test, stop_after)


def resume_config(command: str, run: str | Path, changes: dict | None = None) -> RunConfig:
    """The saved config of `run`, with the settings a resumed run may change."""
    state_path = runs.find_state(run)
    saved = runs.read_run_json(state_path.parent.parent).get("config")
    if saved is None:
        from vitcli.train import checkpoint

        saved = checkpoint.load(state_path)["config"]
    cfg = from_dict(command, saved)
    changes = {k: v for k, v in (changes or {}).items() if v is not None}
    fixed = sorted(k for k, v in changes.items() if k not in RESUMABLE and _differs(getattr(cfg, k, None), v))
    if fixed:
        raise UsageError(f"--resume keeps the run's recipe; cannot change {', '.join(fixed)}",
                         f"a resumed run may change only {', '.join(RESUMABLE)}; start a new run otherwise")
    changes = {k: v for k, v in changes.items() if k in RESUMABLE}
    if changes.get("steps") is not None:
        changes["epochs"] = None
    elif changes.get("epochs") is not None:
        changes["steps"] = None
    return cfg.replace(**changes)


def _differs(a, b) -> bool:
    return (list(a) if isinstance(a, tuple) else a) != (list(b) if isinstance(b, tuple) else b)


def say(message: str) -> None:
    """A progress message on stderr, never wrapped (paths stay whole in logs)."""
    output.err().print(message, highlight=False, soft_wrap=True)


def default_workers(device) -> int:
    cores = os.cpu_count() or 1
    if device.type == "cuda":
        return min(8, cores)
    return 0 if cores <= 4 else min(4, cores // 4)  # on a small CPU, workers steal the model's cores


# ----------------------------------------------------------------------------------------- models
def _create(spec: str, pretrained: bool, device, overrides: dict):
    """load_model, retried without img_size for models that take any input size (CNNs, PoolFormer)."""
    from vitcli.models.resolver import load_model

    try:
        return load_model(spec, pretrained=pretrained, device=device, **overrides)
    except ModelError as e:
        cause = str(e.__cause__ or "")
        if "img_size" in overrides and "img_size" in cause and "unexpected keyword" in cause:
            rest = {k: v for k, v in overrides.items() if k != "img_size"}
            return load_model(spec, pretrained=pretrained, device=device, **rest)
        raise


def _mixers(cfg) -> dict:
    out = {}
    if cfg.token_mixer:
        out["token_mixer"] = cfg.token_mixer
    if cfg.token_mixers:
        out["token_mixers"] = cfg.token_mixers
    return out


def _checkpoint_grid(weights: Path | None, model) -> tuple[int, int] | None:
    """The checkpoint's position-embedding grid, read from the safetensors header (no weights loaded)."""
    if weights is None or not str(weights).endswith(".safetensors") or getattr(model, "pos_embed", None) is None:
        return None
    try:
        from safetensors import safe_open

        with safe_open(str(weights), framework="pt") as f:
            if "pos_embed" not in f.keys():
                return None
            length = f.get_slice("pos_embed").get_shape()[1]
    except Exception:  # noqa: BLE001 - only for the log line
        return None
    gh, gw = model.patch_embed.grid_size
    prefix = model.pos_embed.shape[1] - gh * gw
    side = int(round((length - prefix) ** 0.5))
    return (side, side) if side * side == length - prefix else None


def _set_input_size(model, size: int) -> None:
    cfg = dict(getattr(model, "pretrained_cfg", {}) or {})
    cfg["input_size"] = (3, size, size)
    model.pretrained_cfg = cfg


def build_finetune_model(cfg: FinetuneConfig, num_classes: int, device):
    import torch

    overrides = {"num_classes": num_classes, **_mixers(cfg)}
    if cfg.img_size:
        overrides["img_size"] = cfg.img_size
    loaded = _create(cfg.model, True, device, overrides)
    model = loaded.model
    head = model.get_classifier()
    if isinstance(head, torch.nn.Linear):  # the paper: a zero-initialised D x K head
        with torch.no_grad():
            head.weight.zero_()
            if head.bias is not None:
                head.bias.zero_()
    if cfg.img_size:
        old = _checkpoint_grid(loaded.source.weights, model)
        new = tuple(model.patch_embed.grid_size) if hasattr(model, "patch_embed") else None
        if old and new and tuple(old) != new:
            say(f"pos-embed {old[0]}x{old[1]} -> {new[0]}x{new[1]} (2-D bicubic)")
        _set_input_size(model, cfg.img_size)
    if cfg.freeze:
        head_params = {id(p) for p in head.parameters()}
        for p in model.parameters():
            p.requires_grad_(id(p) in head_params)
    return loaded, model


def build_scratch_model(cfg: TrainConfig, num_classes: int, device):
    import torch

    overrides: dict = {"num_classes": num_classes, **_mixers(cfg)}
    if cfg.img_size:
        overrides["img_size"] = cfg.img_size
    if cfg.patch_size:
        overrides["patch_size"] = cfg.patch_size
    if cfg.pool != "token":
        overrides["global_pool"] = cfg.pool
    if cfg.pos_embed == "none":
        overrides["pos_embed"] = "none"
    if cfg.drop_path:
        overrides["drop_path_rate"] = cfg.drop_path
    loaded = _create(cfg.model, False, device, overrides)
    model = loaded.model
    if cfg.pos_embed == "sincos":
        if getattr(model, "pos_embed", None) is None or not hasattr(model, "patch_embed"):
            raise UsageError(f"--pos-embed sincos needs a ViT with a position embedding, not {cfg.model}")
        from timm.layers import build_sincos2d_pos_embed

        gh, gw = model.patch_embed.grid_size
        dim = model.pos_embed.shape[-1]
        table = build_sincos2d_pos_embed([gh, gw], dim=dim)  # (gh*gw, D), fixed
        prefix = model.pos_embed.shape[1] - gh * gw  # the class token's slot (zeros) when embedded
        with torch.no_grad():
            model.pos_embed.copy_(torch.cat([table.new_zeros(prefix, dim), table])[None].to(model.pos_embed))
        model.pos_embed.requires_grad_(False)  # a constant, not learned (the paper's 2-D variant)
    if cfg.img_size:
        _set_input_size(model, cfg.img_size)
    return loaded, model


def train_transform(cfg: RunConfig, data_config: dict):
    from timm.data import create_transform

    return create_transform(input_size=data_config["input_size"], is_training=True, scale=tuple(cfg.crop_scale),
                            hflip=cfg.hflip, color_jitter=None, auto_augment=None,
                            interpolation=data_config.get("interpolation", "bicubic"),
                            mean=data_config["mean"], std=data_config["std"])


# ----------------------------------------------------------------------------------------- the run
def _seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def _run(command: str, cfg: RunConfig | None, resume, run_dir, test: bool, stop_after) -> dict:
    import torch

    from vitcli.train import checkpoint
    from vitcli.devices import runtime
    from vitcli.models.resolver import data_config_for, eval_transform

    state = None
    if resume is not None:
        state_path = runs.find_state(resume)
        state = checkpoint.load(state_path)
        if state.get("command") != command:
            raise UsageError(f"--resume {resume} is a {state.get('command')} run, not a {command} run",
                             f"continue it with `vit {state.get('command')} --resume {resume}`")
        cfg = cfg or from_dict(command, state["config"])
    if cfg is None:
        raise UsageError("no config given")
    if not isinstance(cfg, CONFIGS[command]):
        raise UsageError(f"{command} needs a {CONFIGS[command].__name__}")

    dist, device_spec = distributed.setup(cfg.device)
    try:
        rt = runtime(device_spec, cfg.precision)
        if rt.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        if dist.main:
            source = data.open_dataset(cfg.dataset, data_dir=cfg.data_dir and Path(cfg.data_dir),
                                       val_split=cfg.val_split, download=cfg.download)
        distributed.barrier(dist)
        if not dist.main:  # after rank 0 has downloaded what was missing
            source = data.open_dataset(cfg.dataset, data_dir=cfg.data_dir and Path(cfg.data_dir),
                                       val_split=cfg.val_split, download=False)

        _seed_everything(cfg.seed)
        if command == "finetune":
            loaded, model = build_finetune_model(cfg, source.num_classes, rt.device)
        else:
            loaded, model = build_scratch_model(cfg, source.num_classes, rt.device)
        _seed_everything(cfg.seed + dist.rank)  # per-rank streams (drop-path) from here on
        data_config = data_config_for(model)
        img_size = data_config["input_size"][-1]

        train_set = source.subset("train", train_transform(cfg, data_config), augment_seed=cfg.seed)
        eval_tf = eval_transform(data_config)
        eval_sets = {s: source.subset(s, eval_tf) for s in ("minival", "val", "test")
                     if s in source.splits and (test or s != "test")}

        if state is not None:
            run_dir = runs.find_state(resume).parent.parent
            from vitcli.train import checkpoint as ckpt

            if dist.main:
                ckpt.clean_stale(run_dir)
        else:
            if dist.main:
                run_dir = runs.create_at(Path(run_dir)) if run_dir is not None else \
                    runs.create(cfg.project, command, cfg.name, cfg.dataset)
            run_dir = Path(distributed.broadcast_object(str(run_dir) if run_dir else None, dist))

        params = sum(p.numel() for p in model.parameters())
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        versions = runs.versions()
        if dist.main:
            say(f"{command} {cfg.model}: {params / 1e6:.2f} M params ({trainable / 1e6:.2f} M trained), "
                        f"{img_size} px, {rt.describe()}{f' x {dist.world} processes' if dist.enabled else ''}")
            say(f"data {data.describe(source)}")
            say(f"run folder {run_dir}")
            runs.write_run_json(run_dir, command=command, config=cfg.to_dict(), versions=versions,
                                environment=runs.environment(rt, dist.world), status="running",
                                dataset={"name": source.name, "classes": source.classes,
                                         "splits": {s: source.size(s) for s in source.splits}})
        block = {"command": command, "config": cfg.to_dict(), "versions": versions}
        workers = cfg.workers if cfg.workers is not None else default_workers(rt.device)
        job = loop.Job(cfg=cfg, model=model, source=source, train_set=train_set, eval_sets=eval_sets,
                       runtime=rt, dist=dist, run_dir=run_dir, label_names=list(source.classes),
                       model_block=block, resume_state=state, stop_after=stop_after, workers=workers,
                       extra_summary={"model": cfg.model, "dataset": cfg.dataset, "params": params,
                                      "img_size": img_size, "world_size": dist.world})
        try:
            summary = _fit_with_memory_retry(job)
        except VitError as e:
            if dist.main:
                runs.write_run_json(run_dir, status=type(e).__name__.lower(), error=e.message)
            raise
        if dist.main:
            runs.write_run_json(run_dir, status="stopped" if "stopped_at" in summary else "finished",
                                summary=summary)
        return summary
    finally:
        distributed.teardown(dist)


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
            started = (job.run_dir / runs.STATE).exists()
            job.model.zero_grad(set_to_none=True)
            if job.runtime.device.type == "cuda":
                torch.cuda.empty_cache()
            if not auto or started:
                raise VitError(
                    f"the GPU ran out of memory with micro-batches of {micro} images "
                    f"(global batch {job.cfg.batch_size} = {job.dist.world} process(es) x {job.accum} x {micro})",
                    f"raise --accum (now {job.accum}) to keep the global batch with smaller micro-batches, or "
                    "lower --batch-size or --img-size") from None
            job.accum *= 2
            output.warn(f"out of GPU memory: accumulating {job.accum} micro-batches of {micro // 2} per step")
