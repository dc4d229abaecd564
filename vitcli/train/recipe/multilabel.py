"""Multi-label training: what `--multi-label` changes in a run of `vit finetune` / `vit train`.

    resolve(cfg, source)     --multi-label from the data when not given (a CSV folder, a Sequence(ClassLabel)
                             column), or single-label data as one-hot rows when asked for
    criterion(cfg)           the loss: binary cross-entropy of the logits (summed over classes, mean over
                             images, so its gradient has cross-entropy's scale), or timm's asymmetric loss
    fit_ovr / choose_l2      LP-FT's probe as one-vs-rest logistic regressions (vitcli.train.recipe.probe)
    finish(job, summary)     per-class thresholds chosen on the selection split, into config.json

The head is the model's ordinary linear head read through a sigmoid; mixup / cutmix mix the multi-hot
targets as they mix the images (timm's Mixup, `multi_label=True`: vitcli.train.recipe.regularise). The loop
selects on the evaluation's "top1" key, which for a multi-label run holds the mAP (and "mAP" says so).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from vitcli import output
from vitcli.errors import UsageError
from vitcli.train import files
from vitcli.train.recipe.linear import fit_linear

LOSSES = ("bce", "asl")


# ------------------------------------------------------------------------------------------ the run
def resolve(cfg, source):
    """(cfg with multi_label decided, source with multi-hot labels when it is a multi-label run)."""
    data = source.multi_label
    if cfg.multi_label is None:
        cfg = cfg.replace(multi_label=data)
    elif cfg.multi_label is False and data:
        raise UsageError(
            f"{cfg.dataset} is multi-label data (sets of labels per image): --no-multi-label cannot train it",
            "drop --no-multi-label",
        )
    elif cfg.multi_label and not data:
        source = as_multi_hot(source)
    if cfg.loss is not None and not cfg.multi_label:
        raise UsageError(f"--loss {cfg.loss} is a multi-label loss", "add --multi-label, or drop --loss")
    return cfg, source


def as_multi_hot(source):
    """A single-label source with its labels as one-hot rows (BCE on single-label data)."""
    from vitcli.data.multilabel import one_hot

    converted = {}
    for split, (records, indices) in source._parts.items():
        if id(records) not in converted:  # train and minival share their records
            converted[id(records)] = one_hot(records, source.num_classes)
        source._parts[split] = (converted[id(records)], indices)
    return source


def criterion(cfg):
    """The loss of (logits, soft or multi-hot targets)."""
    import torch

    if cfg.loss == "asl":
        from timm.loss import AsymmetricLossMultiLabel

        return AsymmetricLossMultiLabel()  # Ridnik et al. 2021: gamma- 4, gamma+ 1, clip 0.05 (timm's defaults)

    def bce(logits, targets):
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, targets.float(), reduction="sum") / max(
            len(logits), 1
        )

    return bce


def soft_targets(labels, smoothing: float):
    """Multi-hot labels as the float targets of the loss, smoothed towards 0.5 (timm's multi-label mixup_target)."""
    return labels.float() * (1.0 - smoothing) + 0.5 * smoothing


# ------------------------------------------------------------------------------------------ the probe
def fit_ovr(x, y, num_classes: int, l2: float, iters: int = 200):
    """(W (D, K), b (K,)) of K logistic regressions: mean over images of the summed BCE + l2 ||W||^2."""
    import torch

    x = torch.as_tensor(x, dtype=torch.float64)
    y = torch.as_tensor(np.asarray(y), dtype=torch.float64)
    w = torch.zeros(x.shape[1], num_classes, dtype=torch.float64, requires_grad=True)
    prior = y.mean(0).clamp(1e-3, 1 - 1e-3)
    b = torch.log(prior / (1 - prior)).detach().requires_grad_(True)  # start at the class frequencies

    def mean_summed_bce(logits):
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="sum") / len(x)

    return fit_linear(x, w, b, mean_summed_bce, l2, iters)


def choose_l2(z, y, num_classes: int, grid=(1e-4, 1e-3, 1e-2, 1e-1), folds: int = 5) -> tuple[float, dict]:
    """The L2 of `grid` with the lowest k-fold BCE (random folds), and each one's (loss, mAP %)."""
    import torch

    from vitcli.eval.multilabel import mean_ap, per_class_ap

    y = np.asarray(y)
    k = min(folds, len(y))
    if k < 2:
        return 1e-2, {}
    fold = torch.as_tensor(np.random.default_rng(0).permutation(len(y)) % k)
    scores = {}
    for l2 in grid:
        logits = torch.zeros(len(y), num_classes, dtype=torch.float64)
        for f in range(k):
            train, held = fold != f, fold == f
            w, b = fit_ovr(z[train], y[train.numpy()], num_classes, l2)
            logits[held] = z[held] @ w + b
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            logits, torch.as_tensor(y, dtype=torch.float64), reduction="sum"
        ).item() / len(y)
        scores[l2] = (loss, 100.0 * mean_ap(per_class_ap(logits.numpy(), y)))
    return min(scores, key=lambda v: scores[v][0]), scores


# ------------------------------------------------------------------------------------------ the end
def finish(job, summary: dict) -> dict:
    """The kept model's per-class thresholds (best F1 on the selection split, shrunk towards 0.5:
    vitcli.eval.multilabel.choose_thresholds; else 0.5) written into its config.json; the summary's top-1 keys named for what they hold (mAP)."""
    from safetensors.torch import load_file

    from vitcli.eval.multilabel import DEFAULT_THRESHOLD, choose_thresholds
    from vitcli.output import atomic_write, dumps
    from vitcli.train.run.evaluation import eval_batch_size, multilabel_scores

    for key in ("val_top1", "test_top1"):
        if key in summary:
            summary[key.replace("top1", "mAP")] = summary.pop(key)
    selection = summary.get("selection_split")
    path = Path(job.run_dir) / files.CONFIG
    thresholds = [DEFAULT_THRESHOLD] * job.source.num_classes
    if selection in job.eval_sets and path.is_file():
        job.model.load_state_dict(load_file(str(Path(job.run_dir) / files.WEIGHTS)))
        scores, targets = multilabel_scores(
            job.model,
            job.eval_sets[selection],
            job.runtime,
            batch_size=eval_batch_size(job.cfg, 1, job.accum),
            workers=job.workers,
        )
        if len(scores):
            thresholds = choose_thresholds(scores, targets)
            output.info(
                f"per-class thresholds (best F1 on {selection}, shrunk towards 0.5): "
                f"{', '.join(f'{n} {t:.2f}' for n, t in zip(job.label_names, thresholds))}",
                style="dim",
            )
    if path.is_file():
        config = json.loads(path.read_text())
        config.update({"multi_label": True, "thresholds": thresholds})
        atomic_write(path, dumps(config, indent=2) + "\n")
    summary["thresholds"] = thresholds
    return summary
