"""The private torch APIs vitcli uses, each behind one function.

Nothing else in vitcli touches a private torch name. tests/test_accel.py calls every function here, so a
torch release that renames or changes one fails the suite loudly instead of slowing (or breaking) a
user's command quietly.

- oneDNN's fused linear (`torch.ops.mkldnn._linear_pointwise`): y = act(x @ W.T + b) in one call; the
  public `F.linear` runs MKL's sgemm after copying the bias, then the activation as another pass.
- inductor's `freezing` switch (`torch._inductor.config.freezing`): weights as constants while
  compiling for inference (prepacked for oneDNN, bias/GELU fused); torch.compile has no public argument.
- inductor's default cache folder (`torch._inductor.runtime.cache_dir_utils.default_cache_dir`), so
  vitcli can point TORCHINDUCTOR_CACHE_DIR into its own cache only when the user has not.
"""

from __future__ import annotations

from contextlib import contextmanager


def onednn_linear_available() -> bool:
    import torch

    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def onednn_linear(x, weight, bias, activation: str = "none"):
    """act(x @ weight.T + bias) in one oneDNN call; x (rows, in), weight (out, in), bias (out,) or None;
    activation "none" or "gelu" (exact)."""
    import torch

    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, activation, [], "none")


@contextmanager
def inductor_freezing(on: bool = True):
    """Inductor treats the weights as constants while compiling (inference only: no weight updates)."""
    if not on:
        yield
        return
    import torch._inductor.config as inductor_config

    old = inductor_config.freezing
    inductor_config.freezing = True
    try:
        yield
    finally:
        inductor_config.freezing = old


def inductor_default_cache_dir() -> str:
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    return default_cache_dir()
