"""torch.compile for long inference jobs, where the gain is measured to pay for the compile.

`auto(model, runtime, ...)` returns a callable for vitcli.inference.forward: the eager model first; after
a few timed batches it knows this job's eager img/s, and it compiles (inductor, with freezing on CPU:
the weights become constants, prepacked for oneDNN, with the bias, GELU, LayerNorm and the casts of
autocast fused) only when the images left, at the measured eager rate, save more time than the
compile costs:

    left / eager_img_s * (1 - 1 / speedup) > compile_s

`compile_s` and `speedup` come from the last compile of this architecture here (compile.json in
vitcli's cache, per CPU, torch, threads, architecture, precision, batch and size); before the first one,
60 s and 1.3x (on the 2-core dev machine a ViT-S compile took 30-46 s cold and 11 s from inductor's
cache; the compiled ViT-S ran 1.7x eager bf16). Inductor's own cache lives in vitcli's cache too
(VIT_CACHE/inductor), so a second long job compiles from it. Batches are padded to the full batch size
so one graph serves the whole job (no recompiles for the last one). One image never compiles: the
probe alone is longer than the job. VIT_COMPILE=0 turns this off, =1 compiles every job from its first
batch; a compile that fails (no C++ compiler, an unsupported model) warns once and stays eager.
"""

from __future__ import annotations

import statistics
import time
from contextlib import contextmanager

DEFAULT_COMPILE_S = 60.0
DEFAULT_SPEEDUP = 1.3
PROBE_BATCHES = 3  # eager batches timed before deciding (the first is a warm-up, not counted)
RECORD = "compile.json"


@contextmanager
def freezing(on: bool):
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


def use_cache() -> str:
    """Inductor's cache in vitcli's (VIT_CACHE/inductor) unless TORCHINDUCTOR_CACHE_DIR was set."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    from vitcli import env

    return env.use_compile_cache(default_cache_dir())


def record_key(architecture: str, runtime, batch_size: int, size) -> str:
    from vitcli.devices import machine_key

    where = "" if runtime.device.type == "cpu" else f"{runtime.device.type}|"
    return f"{machine_key()}|{where}{architecture}|{runtime.precision}|batch {batch_size}|{size}"


def pays(left: int, eager_img_s: float, record: dict | None) -> bool:
    """Whether compiling now saves time over the `left` images (the rule in the module docstring)."""
    record = record or {}
    compile_s = float(record.get("compile_s", DEFAULT_COMPILE_S))
    speedup = float(record.get("speedup", DEFAULT_SPEEDUP))
    if speedup <= 1.0 or eager_img_s <= 0:
        return False
    return left / eager_img_s * (1.0 - 1.0 / speedup) > compile_s


class AutoCompile:
    """model(images), eager until compiling pays (or VIT_COMPILE says), then compiled."""

    def __init__(self, model, runtime, *, n_images: int, batch_size: int, architecture: str, log=None):
        from vitcli import env

        self.model, self.runtime, self.n_images, self.batch_size = model, runtime, n_images, batch_size
        self.architecture = architecture
        self.mode = env.compile_mode()
        self.log = log or (lambda message: None)
        self.seen = 0
        self.eager_s: list[float] = []  # per full batch, after the warm-up one
        self.compiled = None
        self.decided = self.mode == "off" or n_images <= batch_size  # one batch (or one image): never
        self.compile_s: float | None = None
        self.compiled_s: list[float] = []
        self.key: str | None = None

    def __call__(self, images):
        if self.compiled is not None:
            return self._compiled(images)
        if not self.decided and self.mode == "on":
            self._compile(images.shape)
            return self._compiled(images)
        start = time.perf_counter()
        out = self.model(images)
        self._sync()
        if len(images) == self.batch_size and self.seen > 0:
            self.eager_s.append(time.perf_counter() - start)
        self.seen += len(images)
        if not self.decided and len(self.eager_s) >= PROBE_BATCHES - 1:
            self.decided = True
            eager_img_s = self.batch_size / statistics.median(self.eager_s)
            self.key = record_key(self.architecture, self.runtime, self.batch_size, tuple(images.shape[1:]))
            from vitcli.devices import load_verdicts

            record = load_verdicts(RECORD).get(self.key)
            if pays(self.n_images - self.seen, eager_img_s, record):
                self.log(f"compiling the model for the {self.n_images - self.seen} images left (eager "
                         f"{eager_img_s:.1f} img/s here; VIT_COMPILE=0 turns this off)")
                self._compile(images.shape, eager_img_s)
        return out

    # ------------------------------------------------------------------------------------------
    def _compile(self, shape, eager_img_s: float | None = None) -> None:
        import torch

        from vitcli import env

        self.decided = True
        self.eager_img_s = eager_img_s
        use_cache()
        try:
            compiled = torch.compile(self.model, dynamic=False)
            example = torch.zeros((self.batch_size, *shape[1:]), device=self.runtime.device)
            start = time.perf_counter()
            with freezing(self.runtime.device.type == "cpu"):
                compiled(example)  # compiles here, under the caller's inference mode and autocast
            self._sync()
            self.compile_s = time.perf_counter() - start
        except Exception as e:  # noqa: BLE001 - an optimisation must never fail a command
            if env.debug():
                raise
            from vitcli import output

            output.warn(f"torch.compile failed, staying eager ({type(e).__name__}: {str(e).splitlines()[0][:200]})")
            return
        self.compiled = compiled

    def _compiled(self, images):
        import torch

        n = len(images)
        if n < self.batch_size:  # one graph for the whole job: pad the last (or a short) batch
            pad = images.new_zeros((self.batch_size - n, *images.shape[1:]))
            images = torch.cat([images, pad])
        start = time.perf_counter()
        out = self.compiled(images)
        self._sync()
        if n == self.batch_size:
            self.compiled_s.append(time.perf_counter() - start)
            if len(self.compiled_s) == PROBE_BATCHES and self.eager_img_s and self.key:
                self._remember()
        return out[:n]

    def _remember(self) -> None:
        """Keep what this compile cost and gained here, for the next job's decision."""
        from vitcli.devices import save_verdict

        compiled_img_s = self.batch_size / statistics.median(self.compiled_s)
        save_verdict(RECORD, self.key, {"compile_s": round(self.compile_s, 2), "eager_img_s": round(self.eager_img_s, 2),
                                        "compiled_img_s": round(compiled_img_s, 2),
                                        "speedup": round(compiled_img_s / self.eager_img_s, 3)})

    def _sync(self) -> None:
        if self.runtime.device.type == "cuda":
            import torch

            torch.cuda.synchronize(self.runtime.device)


def auto(model, runtime, *, n_images: int, batch_size: int, architecture: str, log=None):
    """The model as `forward`'s fn for a job of `n_images`: compiled when it pays (see above)."""
    import torch

    if isinstance(model, torch.jit.ScriptModule):
        return model
    return AutoCompile(model, runtime, n_images=n_images, batch_size=batch_size, architecture=architecture,
                       log=log)
