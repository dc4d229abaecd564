"""The one evaluation of a training run: top-1 and loss of a model on a held-out split (a multi-label
split: mAP, under the "top1" key the loop selects on, and "mAP", with the summed BCE as the loss).

The loop evaluates minival (to select the best model) and, at the end, test with it; a sweep tests its
winner with the same function, the same batch size and the same preprocessing, so a sweep winner's test
number is the number a single run with those settings reports. Under torchrun each rank evaluates its
shard and the totals are summed.
"""

from __future__ import annotations

from pathlib import Path

from vitcli.train.scale import distributed


def eval_batch_size(cfg, world: int = 1, accum: int | None = None) -> int:
    """No activations are kept for backward: twice the training micro-batch, at most 256."""
    micro = cfg.batch_size // world // (accum or cfg.accum or 1)
    return max(1, min(256, 2 * micro))


def evaluate(
    model, dataset, runtime, dist, *, batch_size: int, workers: int | None = None, source=None, confusion: bool = False
) -> dict:
    """{"top1": %, "loss": mean cross-entropy, "n": images} of `model` on `dataset` (an ImageDataset with
    the eval transform). Unreadable images are left out and handed to `source.note_skipped`. confusion:
    also "confusion", the (C, C) matrix of counts (rows = true class; every rank's summed)."""
    import torch

    from vitcli.inference.forward import forward
    from vitcli.train.scale.fsdp import unsharded

    shard = dataset.select(range(dist.rank, len(dataset), dist.world))
    if dataset.records.labels.ndim > 1:  # multi-label (vitcli.train.recipe.multilabel): mAP selects
        from vitcli.eval.multilabel import bce, mean_ap, per_class_ap

        logits, targets = multilabel_logits(
            model, shard, runtime, dist, batch_size=batch_size, workers=workers, source=source
        )
        m = round(100.0 * mean_ap(per_class_ap(logits, targets)), 4) if len(logits) else 0.0
        return {"top1": m, "mAP": m, "loss": round(bce(logits, targets), 6), "n": len(logits)}
    totals = torch.zeros(3, dtype=torch.float64)  # correct, loss sum, count
    matrix = None
    was_training = model.training
    model.eval()
    try:
        with unsharded(model):  # FSDP: the ranks' numbers of batches differ, so no collective per batch
            for batch, logits in forward(model, shard, runtime, batch_size=batch_size, workers=workers):
                if batch.skipped and source is not None:
                    source.note_skipped(batch.skipped)
                if logits is None:
                    continue
                logits, labels = logits.float(), batch.labels.to(logits.device)
                totals[0] += (logits.argmax(-1) == labels).sum().item()
                totals[1] += torch.nn.functional.cross_entropy(logits, labels, reduction="sum").item()
                totals[2] += len(labels)
                if confusion:
                    k = logits.shape[-1]
                    cells = torch.bincount((labels * k + logits.argmax(-1)).cpu(), minlength=k * k).reshape(k, k)
                    matrix = cells.double() if matrix is None else matrix + cells
    finally:
        model.train(was_training)
    distributed.all_sum(totals, dist)
    n = int(totals[2])
    result = {
        "top1": round(100.0 * totals[0].item() / max(n, 1), 4),
        "loss": round(totals[1].item() / max(n, 1), 6),
        "n": n,
    }
    if confusion:
        k = int(getattr(model, "num_classes", 0) or 0) or (matrix.shape[0] if matrix is not None else 0)
        matrix = torch.zeros(k, k, dtype=torch.float64) if matrix is None else matrix
        distributed.all_sum(matrix, dist)  # (a rank whose shard was unreadable adds zeros of the same shape)
        result["confusion"] = matrix.long().numpy()
    return result


def multilabel_logits(model, shard, runtime, dist, *, batch_size: int, workers: int | None = None, source=None):
    """(logits (N, K), multi-hot targets (N, K)) of a multi-label split's readable images, every rank's shard
    gathered (mAP needs every image's scores, not sums)."""
    import numpy as np

    from vitcli.inference.forward import forward

    logits, targets = [], []
    was_training = model.training
    model.eval()
    try:
        for batch, out in forward(model, shard, runtime, batch_size=batch_size, workers=workers):
            if batch.skipped and source is not None:
                source.note_skipped(batch.skipped)
            if out is not None:
                logits.append(out.float().cpu().numpy())
                targets.append(batch.labels.numpy())
    finally:
        model.train(was_training)
    k = shard.records.labels.shape[1]
    logits, targets = (np.concatenate(a) if a else np.zeros((0, k)) for a in (logits, targets))
    if dist.enabled:
        import torch.distributed as td

        parts = [None] * dist.world
        td.all_gather_object(parts, (logits, targets))
        logits, targets = (np.concatenate([p[i] for p in parts]) for i in (0, 1))
    return logits, targets


def multilabel_scores(model, dataset, runtime, *, batch_size: int, workers: int | None = None):
    """(sigmoid scores, multi-hot targets) of a multi-label split on this process (the thresholds' choice)."""
    from vitcli.eval.multilabel import sigmoid
    from vitcli.train.scale.distributed import Dist

    logits, targets = multilabel_logits(model, dataset, runtime, Dist(), batch_size=batch_size, workers=workers)
    return sigmoid(logits), targets


def held_out_split(source) -> str | None:
    """Where a selected model is tested: test, else val when minival (carved from train) selected it."""
    if "test" in source.splits:
        return "test"
    if source.selection_split == "minival" and "val" in source.splits:
        return "val"
    return None


def test_run(run_dir: Path, cfg) -> tuple[dict, str] | None:
    """The held-out evaluation of a finished run folder's model: (result, split), or None without one."""
    from vitcli import accel
    from vitcli.accel.runtime import runtime
    from vitcli.data.transforms import eval_transform
    from vitcli.models.resolver import load_model
    from vitcli.train.run.build import open_run_dataset
    from vitcli.train.scale.distributed import Dist

    source = open_run_dataset(cfg, download=False)
    split = held_out_split(source)
    if split is None:
        return None
    rt = runtime(cfg.device, cfg.precision)
    loaded = load_model(str(run_dir), device=rt.device)
    accel.prepare(loaded.model, rt, "training")  # the kernels the run's own evaluation used (decided alike here)
    dataset = source.subset(split, eval_transform(loaded.data_config))
    result = evaluate(
        loaded.model, dataset, rt, Dist(), batch_size=eval_batch_size(cfg), workers=cfg.workers, source=source
    )
    return result, split
