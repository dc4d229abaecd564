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
            raise ModelError(
                "serving an ONNX model needs onnxruntime",
                "onnxruntime is one of vitcli's dependencies: pip install onnxruntime",
            ) from None
        self.path = Path(path).expanduser()
        options = ort.SessionOptions()
        options.log_severity_level = 3  # warnings of the graph optimiser are not the user's
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
            meta = self.session.get_modelmeta().custom_metadata_map
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own Fail/InvalidProtobuf types
            raise ModelError(
                f"{display(self.path)} is not a readable ONNX model ({str(e).splitlines()[0][:160]})",
                "export it again with `vit export`",
            ) from None
        if META_KEY not in meta:
            raise ModelError(
                f"{display(self.path)} has no vitcli metadata (preprocessing and label names)",
                "export the model with `vit export --format onnx`, which stores them in the file",
            )
        info = _check_metadata(meta[META_KEY], self.session, display(self.path))
        self.architecture: str = info["architecture"]
        self.data_config: dict = info["data_config"]
        self.label_names: list[str] = info["label_names"]
        self.source: str = info.get("source", str(self.path))
        self.model_args: dict = info.get("model_args") or {}  # what rebuilds the architecture in timm
        self.input_name = self.session.get_inputs()[0].name
        # e.g. multi_label and its thresholds, from the model folder's config.json
        self.config: dict = {
            **{k: info[k] for k in ("multi_label", "thresholds") if k in info},
            **(info.get("config") or {}),
        }
        self.precision: str = info.get("precision") or "fp32"  # int8 / fp16 files say so (vit export)
        self.backend = "onnxruntime"

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    def describe(self) -> str:
        return f"onnxruntime cpu {self.precision}"

    def __call__(self, batch):
        """(B, 3, H, W) float32 array -> (B, classes) logits array."""
        return self.session.run(None, {self.input_name: batch})[0]


def _check_metadata(text: str, session, shown: str) -> dict:
    """vitcli's metadata, checked against the graph when the file is opened (not in a forward pass): the
    preprocessing it names, one label per output, the input size the graph takes."""

    def bad(why: str) -> ModelError:
        return ModelError(f"{shown}: its vitcli metadata {why}", "export the model again with `vit export`")

    try:
        info = json.loads(text)
    except ValueError:
        raise bad("is not valid JSON") from None
    config = info.get("data_config") if isinstance(info, dict) else None
    if not isinstance(info, dict) or not isinstance(info.get("architecture"), str):
        raise bad("names no architecture")
    size = config.get("input_size") if isinstance(config, dict) else None
    if not (
        isinstance(size, (list, tuple))
        and len(size) == 3
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)
    ):
        raise bad(f"has no valid data_config (input_size {size!r})")
    for key in ("mean", "std"):
        values = config.get(key)
        if not (
            isinstance(values, (list, tuple))
            and len(values) == size[0]
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
            and (key != "std" or all(v > 0 for v in values))
        ):
            raise bad(f"has no valid data_config ({key} {values!r})")
    labels = info.get("label_names")
    if not isinstance(labels, list) or not labels or not all(isinstance(v, str) for v in labels):
        raise bad("has no list of label names")
    outputs = session.get_outputs()[0].shape
    if outputs and isinstance(outputs[-1], int) and outputs[-1] != len(labels):
        raise bad(f"names {len(labels)} labels but the graph gives {outputs[-1]} outputs")
    inputs = session.get_inputs()[0].shape
    fixed = [v for v in inputs[1:] if isinstance(v, int)] if inputs else []
    if len(inputs or []) == 4 and len(fixed) == 3 and list(fixed) != list(size):
        raise bad(f"says input {list(size)} but the graph takes {fixed}")
    return info


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
