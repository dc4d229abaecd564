"""A model as an ONNX file (written by `vit export`), served by onnxruntime: no torch to open or run it.

The file carries what predicting needs in its metadata (`vitcli`: architecture, preprocessing, label
names, where it came from). `OnnxModel` runs numpy batches (vit predict's torch-free path,
vitcli.inference.onnx); `OnnxModule` wraps it as a torch module, so `vit eval` and `vit benchmark` take
`--model FILE.onnx` through the resolver like any other model.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from vitcli.errors import ModelError
from vitcli.output import display

META_KEY = "vitcli"


def is_onnx(spec: str) -> bool:
    return str(spec).lower().endswith(".onnx") and Path(spec).expanduser().is_file()


class OnnxModel:
    """An onnxruntime session with the model's metadata; quacks like a LoadedModel for predict."""

    def __init__(self, path: str | os.PathLike):
        try:
            import onnxruntime as ort
        except ImportError:
            raise ModelError("serving an ONNX model needs onnxruntime", "pip install 'vitcli[onnx]'") from None
        self.path = Path(path).expanduser()
        options = ort.SessionOptions()
        options.log_severity_level = 3  # warnings of the graph optimiser are not the user's
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
            meta = self.session.get_modelmeta().custom_metadata_map
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own Fail/InvalidProtobuf types
            raise ModelError(f"{display(self.path)} is not a readable ONNX model ({str(e).splitlines()[0][:160]})",
                             "export it again with `vit export`") from None
        if META_KEY not in meta:
            raise ModelError(f"{display(self.path)} has no vitcli metadata (preprocessing and label names)",
                             "export the model with `vit export --format onnx`, which stores them in the file")
        info = json.loads(meta[META_KEY])
        self.architecture: str = info["architecture"]
        self.data_config: dict = info["data_config"]
        self.label_names: list[str] = info["label_names"]
        self.source: str = info.get("source", str(self.path))
        self.model_args: dict = info.get("model_args") or {}  # what rebuilds the architecture in timm
        self.input_name = self.session.get_inputs()[0].name
        self.config: dict = info.get("config") or {}  # e.g. multi_label, from the model folder's config.json
        self.precision: str = info.get("precision") or "fp32"  # int8 / fp16 files say so (vit export)
        self.backend = "onnxruntime"
        self.race: dict | None = None  # set by vitcli.export.faststart.lookup for a fast-start copy

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    def describe(self) -> str:
        return f"onnxruntime cpu {self.precision}"

    def __call__(self, batch):
        """(B, 3, H, W) float32 array -> (B, classes) logits array."""
        return self.session.run(None, {self.input_name: batch})[0]


def as_module(model):
    """`model` (an OnnxModel, or any file model with the same shape: vitcli.export.openvino_model) as a
    torch nn.Module: tensors in, logits out (computed by its runtime on the CPU)."""
    import torch

    class OnnxModule(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.onnx = model  # the file model (named for the ONNX case, which came first)
            self.num_classes = model.num_classes
            self.pretrained_cfg = {"architecture": model.architecture, **model.data_config}

        def forward(self, x):
            logits = model(x.detach().to("cpu", torch.float32).contiguous().numpy())
            return torch.from_numpy(logits).to(x.device)

    return OnnxModule()
