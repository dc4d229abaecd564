"""Writing a model as ONNX and checking the file against the torch model: for `vit export` and for the
fast-start copies (vitcli.export.faststart).

The dynamo exporter (`torch.onnx.export(dynamo=True)`, opset 18), a dynamic batch axis, and the model's
preprocessing, label names and origin in the file's metadata (`vitcli`), so the file alone is a model
(vitcli.export.onnx_model). The check runs the file in onnxruntime and the torch model on the same random
inputs (two batch sizes when the batch is dynamic), as timm's onnx_export check does.
"""

from __future__ import annotations

import json
from pathlib import Path

from vitcli.output import atomic_write

DEFAULT_OPSET = 18
TOLERANCE = 1e-4  # max |logit difference| against the torch model, fp32 on CPU


def metadata(loaded, data_config: dict) -> dict:
    """What a predictor needs besides the graph."""
    from vitcli import __version__

    return {
        "architecture": loaded.architecture,
        "data_config": json.loads(json.dumps(data_config, default=list)),
        "label_names": list(loaded.label_names),
        "source": loaded.source.spec if loaded.source else None,
        "model_args": json.loads(json.dumps((loaded.config or {}).get("model_args") or {}, default=list)),
        "vitcli": __version__,  # a multi-label head: its flag and chosen thresholds (vitcli.inference.multilabel)
        **{k: (loaded.config or {})[k] for k in ("multi_label", "thresholds") if k in (loaded.config or {})},
    }


def to_onnx(model, example, path: Path, meta: dict, *, dynamic_batch: bool = True, opset: int = DEFAULT_OPSET) -> Path:
    """The ONNX file of `model` with `meta` in its metadata, written atomically."""
    import logging
    import warnings

    import onnx
    import torch

    batch = torch.export.Dim("batch", min=1, max=4096) if dynamic_batch else None
    with warnings.catch_warnings(), _quiet(logging.getLogger("torch.onnx")):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model,
            (example,),
            dynamo=True,
            opset_version=opset,
            input_names=["input"],
            output_names=["logits"],
            verbose=False,
            dynamic_shapes=({0: batch},) if dynamic_batch else None,
        )
    proto = program.model_proto
    entry = proto.metadata_props.add()
    entry.key, entry.value = "vitcli", json.dumps(meta)
    return atomic_write(path, lambda tmp: onnx.save(proto, str(tmp)))


def check_onnx(model, path: Path, example, dynamic_batch: bool) -> float:
    """Max |logit difference| between the ONNX file (onnxruntime) and `model`, on random inputs."""
    import torch

    from vitcli.export.onnx_model import OnnxModel

    session = OnnxModel(path)
    inputs = [example, torch.randn(3, *example.shape[1:], generator=torch.Generator().manual_seed(1))]
    diff = 0.0
    with torch.inference_mode():
        for x in inputs if dynamic_batch else inputs[:1]:
            ours = torch.from_numpy(session(x.numpy()))
            diff = max(diff, float((ours - model(x)).abs().max()))
    return diff


class _quiet:
    """A logger silenced for a block (the exporter's progress lines are not the user's)."""

    def __init__(self, logger):
        self.logger = logger

    def __enter__(self):
        self.level, self.logger.disabled = self.logger.disabled, True

    def __exit__(self, *exc):
        self.logger.disabled = self.level
