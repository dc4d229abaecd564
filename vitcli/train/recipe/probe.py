"""LP-FT's first step (Kumar et al. 2022, "Fine-Tuning can Distort Pretrained Features"): the new head
starts as a linear probe of the frozen pre-trained features, then everything is fine-tuned.

The features are the pre-logits of the training split through the eval
transform, computed and cached as for few-shot evaluation (vitcli.eval.features: `<vit cache>/features/`,
keyed by the weights, the data, the split and the preprocessing), so a rerun on the same data costs no
forward pass. The probe is a multinomial logistic regression (softmax cross-entropy + L2 on the
weights) fitted by L-BFGS in float64 on standardised features; its L2 strength is the one of `L2_GRID`
with the lowest cross-entropy in stratified k-fold cross-validation on the training split (so the
held-out split stays an unbiased judge of the probe against the fine-tuned model), and the
standardisation is folded into the head's weights and bias.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np

from vitcli import output
from vitcli.train.recipe.linear import fit_linear

L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1)  # x ||W||^2 beside the mean cross-entropy, on standardised features
DEFAULT_L2 = 1e-2  # with fewer than 2 images in some class (no cross-validation)
FOLDS = 5


def fit_logistic(x, y, num_classes: int, l2: float, iters: int = 200):
    """(W (D, K), b (K,)) minimising mean CE(x W + b, y) + l2 ||W||^2 (x: (N, D) float64)."""
    import torch

    x = torch.as_tensor(x, dtype=torch.float64)
    y = torch.as_tensor(y, dtype=torch.long)
    w = torch.zeros(x.shape[1], num_classes, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    return fit_linear(x, w, b, lambda logits: torch.nn.functional.cross_entropy(logits, y), l2, iters)


def folds(y, k: int, seed: int = 0) -> np.ndarray:
    """A stratified fold number per sample: each class's samples dealt round-robin after a seeded shuffle."""
    y = np.asarray(y)
    fold = np.zeros(len(y), dtype=np.int64)
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        fold[np.random.default_rng([seed, int(c)]).permutation(members)] = np.arange(len(members)) % k
    return fold


def choose_l2(z, y, num_classes: int) -> tuple[float, dict]:
    """The L2 of L2_GRID with the lowest k-fold cross-entropy (and each one's (loss, top-1 %))."""
    import torch

    k = int(min(FOLDS, np.bincount(np.asarray(y), minlength=num_classes).min()))
    if k < 2:
        return DEFAULT_L2, {}
    fold, y_t = torch.as_tensor(folds(y, k)), torch.as_tensor(np.asarray(y))
    scores = {}
    for l2 in L2_GRID:
        loss = correct = 0.0
        for f in range(k):
            train, held = fold != f, fold == f
            w, b = fit_logistic(z[train], y_t[train], num_classes, l2)
            logits = z[held] @ w + b
            loss += torch.nn.functional.cross_entropy(logits, y_t[held], reduction="sum").item()
            correct += (logits.argmax(1) == y_t[held]).sum().item()
        scores[l2] = (loss / len(y), 100.0 * correct / len(y))
    return min(scores, key=lambda v: scores[v][0]), scores


def _features(loaded, runtime, split, cfg):
    """(features (N, D) float64 tensor, targets) of the readable images of `split` (cached on disk)."""
    import torch

    from vitcli.eval import features
    from vitcli.train.run.evaluation import eval_batch_size

    digest = features.weights_digest(loaded.model)
    path = features.features_dir() / f"{features.cache_key(digest, split.identity, split.split, loaded.data_config)}.pt"
    store = features.FeatureStore.open(path)
    indices = list(range(len(split.targets)))
    todo, started = len(store.missing(indices)), time.perf_counter()
    if todo:  # the longest start-up work of an LP-FT run: said even where no progress bar is drawn (logs)
        output.info(f"probe: features of {todo} training images (one forward pass, cached for later runs)", style="dim")
    with output.progress("probe: features of the training images", total=todo, unit="img") as advance:
        features.extract(
            store,
            loaded,
            runtime,
            split,
            indices,
            batch_size=eval_batch_size(cfg),
            workers=cfg.workers,
            progress=advance,
        )
    img_s = round(todo / (time.perf_counter() - started), 2) if todo else None
    x, kept = store.gather(indices)
    return x.to(torch.float64), np.asarray(split.targets)[kept], img_s


def probe_head(model, data_config: dict, source, cfg, runtime) -> dict | None:
    """Set the model's linear head to the linear probe of its frozen features on the training split;
    returns what was fitted (None when the head is not one nn.Linear, or no training image is readable:
    it stays as it is, and the loop reports the unreadable images)."""
    import torch

    from vitcli.eval.splits import dataset_split

    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    if not isinstance(head, torch.nn.Linear) or not hasattr(model, "forward_head"):
        output.warn(
            f"--head-init probe: {cfg.model} has no single linear head on pre-logit features; "
            "the head stays zero-initialised"
        )
        return None
    import copy

    # the features from a copy: the inference kernels the feature extraction swaps in (bf16 linears with
    # weight copies cast once, an fp32 head) must never reach the model that is then trained
    loaded = SimpleNamespace(model=copy.deepcopy(model), data_config=data_config)
    k = source.num_classes
    x, y, img_s = _features(loaded, runtime, dataset_split(source, "train"), cfg)
    if len(y) == 0:
        return None
    mean, std = x.mean(0, keepdim=True), x.std(0, keepdim=True, unbiased=False) + 1e-6
    z = (x - mean) / std
    if np.ndim(y) > 1:  # multi-label: one-vs-rest logistic regressions (vitcli.train.recipe.multilabel)
        from vitcli.train.recipe import multilabel

        with output.progress("probe: cross-validating its L2", total=None, unit=""):
            fitted = _fitted(multilabel.choose_l2, multilabel.fit_ovr, z, y, k)
        return _set_head(head, z, mean, std, *fitted, len(y), "mAP")
    with output.progress("probe: cross-validating its L2", total=None, unit=""):
        chosen, scores = choose_l2(z, y, k)
    w, b = fit_logistic(z, y, k, chosen)
    w_raw = w / std.T  # (D, K): logits = x w_raw + b_raw on the raw features the head sees
    b_raw = b - (mean / std) @ w
    with torch.no_grad():
        head.weight.copy_(w_raw.T.to(head.weight))
        if head.bias is not None:
            head.bias.copy_(b_raw.reshape(-1).to(head.bias))
    train_top1 = 100.0 * ((z @ w + b).argmax(1) == torch.as_tensor(y)).double().mean().item()
    info = {"l2": chosen, "train_images": int(len(y)), "train_top1": round(train_top1, 2)}
    if scores:
        info["cv_top1"], info["cv_loss"] = round(scores[chosen][1], 2), round(scores[chosen][0], 4)
    if img_s:
        info["features_img_s"] = img_s  # an evaluation's speed: the estimates of `--dry-run` (train.recipe.budget)
    shown = f", cross-validated top-1 {scores[chosen][1]:.2f} %" if scores else ""
    output.info(f"head: linear probe of the frozen features (LP-FT), {len(y)} images, L2 {chosen:g}{shown}")
    return info


def _fitted(choose, fit, z, y, k):
    chosen, scores = choose(z, y, k)
    return chosen, scores, *fit(z, y, k, chosen)


def _set_head(head, z, mean, std, chosen, scores, w, b, n: int, metric: str) -> dict:
    """The probe (fitted on standardised features) folded into the head, which sees the raw features."""
    import torch

    with torch.no_grad():
        head.weight.copy_((w / std.T).T.to(head.weight))
        if head.bias is not None:
            head.bias.copy_((b - (mean / std) @ w).reshape(-1).to(head.bias))
    info = {"l2": chosen, "train_images": int(n)}
    if scores:
        info[f"cv_{metric}"], info["cv_loss"] = round(scores[chosen][1], 2), round(scores[chosen][0], 4)
    shown = f", cross-validated {metric} {scores[chosen][1]:.2f} %" if scores else ""
    output.info(f"head: linear probe of the frozen features (LP-FT), {n} images, L2 {chosen:g}{shown}")
    return info
