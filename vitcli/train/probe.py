"""LP-FT's first step (Kumar et al. 2022, "Fine-Tuning can Distort Pretrained Features"): the new head
starts as a linear probe of the frozen pre-trained features, then everything is fine-tuned.

The features are the pre-logits of the training split (and of the selection split) through the eval
transform, computed and cached by the few-shot code (vitcli.eval.fewshot: `<vit cache>/features/`,
keyed by the weights, the data, the split and the preprocessing), so a rerun on the same data costs no
forward pass. The probe is a multinomial logistic regression (softmax cross-entropy + L2 on the
weights) fitted by L-BFGS in float64 on standardised features; its L2 strength is the one of `L2_GRID`
with the lowest cross-entropy on the selection split (the run's own minival or val, never test), and
the standardisation is folded into the head's weights and bias.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from vitcli import output

L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1)  # x ||W||^2 beside the mean cross-entropy, on standardised features
DEFAULT_L2 = 1e-2  # without a selection split


def fit_logistic(x, y, num_classes: int, l2: float, iters: int = 200):
    """(W (D, K), b (K,)) minimising mean CE(x W + b, y) + l2 ||W||^2 (x: (N, D) float64)."""
    import torch

    x = torch.as_tensor(x, dtype=torch.float64)
    y = torch.as_tensor(y, dtype=torch.long)
    w = torch.zeros(x.shape[1], num_classes, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=iters, tolerance_grad=1e-9, tolerance_change=1e-12,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ w + b, y) + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def _features(loaded, runtime, split, cfg):
    """(features (N, D) float64 tensor, targets) of the readable images of `split` (cached on disk)."""
    import torch

    from vitcli.eval import fewshot
    from vitcli.train.evaluation import eval_batch_size

    digest = fewshot.weights_digest(loaded.model)
    path = fewshot.features_dir() / f"{fewshot.cache_key(digest, split.identity, split.split, loaded.data_config)}.pt"
    store = fewshot.FeatureStore.open(path)
    indices = list(range(len(split.targets)))
    fewshot.extract(store, loaded, runtime, split, indices, batch_size=eval_batch_size(cfg), workers=cfg.workers)
    x, kept = store.gather(indices)
    return x.to(torch.float64), np.asarray(split.targets)[kept]


def probe_head(model, data_config: dict, source, cfg, runtime, selection: str | None) -> dict | None:
    """Set the model's linear head to the linear probe of its frozen features on the training split;
    returns what was fitted (None when the head is not one nn.Linear: it stays as it is)."""
    import torch

    from vitcli.eval.splits import dataset_split

    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    if not isinstance(head, torch.nn.Linear) or not hasattr(model, "forward_head"):
        output.warn(f"--head-init probe: {cfg.model} has no single linear head on pre-logit features; "
                    "the head stays zero-initialised")
        return None
    loaded = SimpleNamespace(model=model, data_config=data_config)
    k = source.num_classes
    x, y = _features(loaded, runtime, dataset_split(source, "train"), cfg)
    mean, std = x.mean(0, keepdim=True), x.std(0, keepdim=True, unbiased=False) + 1e-6
    z = (x - mean) / std
    chosen, scores = DEFAULT_L2, {}
    if selection is not None:
        xs, ys = _features(loaded, runtime, dataset_split(source, selection), cfg)
        zs, ys_t = (xs - mean) / std, torch.as_tensor(ys)
        for l2 in L2_GRID:
            w, b = fit_logistic(z, y, k, l2)
            logits = zs @ w + b
            scores[l2] = (torch.nn.functional.cross_entropy(logits, ys_t).item(),
                          100.0 * (logits.argmax(1) == ys_t).double().mean().item())
        chosen = min(scores, key=lambda v: scores[v][0])
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
        info[f"{selection}_top1"] = round(scores[chosen][1], 2)
        info[f"{selection}_loss"] = round(scores[chosen][0], 4)
    shown = f", {selection} top-1 {scores[chosen][1]:.2f} %" if scores else ""
    output.info(f"head: linear probe of the frozen features (LP-FT), {len(y)} images, L2 {chosen:g}{shown}")
    return info
