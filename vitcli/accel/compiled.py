"""torch.compile for inference jobs, when asked (`--compile`, or VIT_COMPILE=1).

Compiling is a choice the user makes, as with timm's `--torchcompile`: it costs 10-60 s up front
(figures: docs/info.md), and the compiled graph rounds differently from the eager model,
so turning it on by a timing would let two runs of one command disagree. `wrap(model, runtime, ...)`
returns a callable for vitcli.inference.forward that compiles on its first batch (inductor, with
freezing on CPU: the weights become constants, prepacked for oneDNN, with the bias, GELU, LayerNorm
and the casts of autocast fused). Batches are padded to the full batch size so one graph serves the
whole job. Inductor's own cache lives in vitcli's cache (VIT_CACHE/inductor), so a second job compiles
from it. A compile that fails (no C++ compiler, an unsupported model) warns once and stays eager.
"""

from __future__ import annotations

import time

from vitcli.accel.torch_private import inductor_default_cache_dir, inductor_freezing


def use_cache() -> str:
    """Inductor's cache in vitcli's (VIT_CACHE/inductor) unless TORCHINDUCTOR_CACHE_DIR was set."""
    from vitcli import env

    return env.use_compile_cache(inductor_default_cache_dir())


class Compiled:
    """model(images), compiled on the first batch; eager if compiling fails."""

    def __init__(self, model, runtime, *, batch_size: int, log=None):
        self.model, self.runtime, self.batch_size = model, runtime, batch_size
        self.log = log or (lambda message: None)
        self.compiled = None
        self.failed = False
        self.compile_s: float | None = None

    @property
    def active(self) -> bool:
        return self.compiled is not None

    def __call__(self, images):
        if self.compiled is None and not self.failed:
            self._compile(images.shape)
        if self.compiled is None:
            return self.model(images)
        import torch

        n = len(images)
        if n < self.batch_size:  # one graph for the whole job: pad the last (or a short) batch
            pad = images.new_zeros((self.batch_size - n, *images.shape[1:]))
            images = torch.cat([images, pad])
        return self.compiled(images)[:n]

    def _compile(self, shape) -> None:
        import torch

        from vitcli import env

        use_cache()
        self.log("compiling the model (--compile; inductor's cache makes the next job's compile shorter)")
        try:
            compiled = torch.compile(self.model, dynamic=False)
            example = torch.zeros((self.batch_size, *shape[1:]), device=self.runtime.device)
            start = time.perf_counter()
            with inductor_freezing(self.runtime.device.type == "cpu"):
                compiled(example)  # compiles here, under the caller's inference mode and autocast
            if self.runtime.device.type == "cuda":
                torch.cuda.synchronize(self.runtime.device)
            self.compile_s = time.perf_counter() - start
        except Exception as e:  # noqa: BLE001 - an optimisation must never fail a command
            if env.debug():
                raise
            from vitcli import output

            self.failed = True
            output.warn(f"torch.compile failed, staying eager ({type(e).__name__}: {str(e).splitlines()[0][:200]})")
            return
        self.compiled = compiled


def wrap(model, runtime, *, compile: bool, batch_size: int, log=None):
    """The model as `forward`'s fn: compiled when `compile` (or VIT_COMPILE=1) asks for it, else itself."""
    import torch

    from vitcli import env

    if not (compile or env.compile_requested()) or isinstance(model, torch.jit.ScriptModule):
        return model
    return Compiled(model, runtime, batch_size=batch_size, log=log)
