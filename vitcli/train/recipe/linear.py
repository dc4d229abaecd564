"""The solver of LP-FT's probes: a linear head on frozen features, fitted by full-batch L-BFGS.

`fit_linear` minimises `data_loss(x W + b) + l2 ||W||^2` from a given start; the single-label probe
(vitcli.train.recipe.probe.fit_logistic: cross-entropy) and the multi-label one
(vitcli.train.recipe.multilabel.fit_ovr: one-vs-rest BCE) differ only in the loss and the start.
"""

from __future__ import annotations


def fit_linear(x, w, b, data_loss, l2: float, iters: int = 200):
    """(W, b) detached, after L-BFGS (strong Wolfe line search) on data_loss(x @ w + b) + l2 * ||w||^2;
    x (N, D) float64, w (D, K) and b (K,) float64 leaf tensors that require grad."""
    import torch

    opt = torch.optim.LBFGS(
        [w, b],
        lr=1.0,
        max_iter=iters,
        tolerance_grad=1e-9,
        tolerance_change=1e-12,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure():
        opt.zero_grad()
        loss = data_loss(x @ w + b) + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()
