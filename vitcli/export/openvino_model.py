"""A model as an OpenVINO IR file pair (`model.xml` + `model.bin`, written by `vit export --format openvino`),
run by OpenVINO on the CPU: no torch to open or run it.

The `.xml` carries what predicting needs in its runtime info (`vitcli`: the same JSON an ONNX file keeps in
its metadata: architecture, preprocessing, label names, origin, precision); a `model.json` beside the
file is read when the IR has none (an IR made by another tool). `OpenVinoModel` has the shape of
vitcli.export.onnx_model.OnnxModel (numpy batches in, logits out), so predict's torch-free path, the
resolver's module wrapper and `vit serve` take either.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from vitcli.errors import ModelError
from vitcli.output import display

META_KEY = "vitcli"


def is_openvino(spec: str) -> bool:
    return str(spec).lower().endswith(".xml") and Path(spec).expanduser().is_file()


def _core():
    try:
        import openvino as ov
    except ImportError:
        raise ModelError(
            "running an OpenVINO model needs the openvino package", "pip install 'vitcli[openvino]'"
        ) from None
    return ov.Core()


def read_meta(path: Path, model) -> dict | None:
    """The vitcli metadata of an IR: its runtime info, else `<name>.json` beside it."""
    if model.has_rt_info([META_KEY]):
        return json.loads(model.get_rt_info([META_KEY]).astype(str))
    beside = path.with_suffix(".json")
    if beside.is_file():
        try:
            return json.loads(beside.read_text())
        except (OSError, ValueError) as e:
            raise ModelError(f"cannot read {display(beside)}: {e}") from None
    return None


class OpenVinoModel:
    """A compiled OpenVINO model (CPU) with the model's metadata; quacks like OnnxModel."""

    backend = "openvino"

    def __init__(self, path: str | os.PathLike):
        core = _core()
        self.path = Path(path).expanduser()
        if not self.path.with_suffix(".bin").is_file():
            raise ModelError(
                f"{display(self.path)} has no {self.path.with_suffix('.bin').name} beside it",
                "an OpenVINO model is two files, .xml and .bin: keep them together",
            )
        try:
            model = core.read_model(str(self.path))
            info = read_meta(self.path, model)
            self.compiled = core.compile_model(model, "CPU")
        except ModelError:
            raise
        except Exception as e:  # noqa: BLE001 - OpenVINO raises RuntimeError with its own text
            raise ModelError(
                f"{display(self.path)} is not a readable OpenVINO model "
                f"({str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__})",
                "export it again with `vit export --format openvino`",
            ) from None
        if info is None:
            raise ModelError(
                f"{display(self.path)} has no vitcli metadata (preprocessing and label names)",
                "export the model with `vit export --format openvino`, which stores them in the file",
            )
        self.architecture: str = info["architecture"]
        self.data_config: dict = info["data_config"]
        self.label_names: list[str] = info["label_names"]
        self.source: str = info.get("source", str(self.path))
        self.model_args: dict = info.get("model_args") or {}
        self.config: dict = info.get("config") or {}
        # what the CPU plugin computes in (f32 here; bf16 on CPUs with AMX), not how the weights are stored
        hint = self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()  # "f32"
        self.precision = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}.get(hint, hint)
        self.weights = info.get("precision") or "fp32"  # as stored: fp16 with --half

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    def describe(self) -> str:
        return f"openvino cpu {self.precision}"

    def __call__(self, batch):
        """(B, 3, H, W) float32 array -> (B, classes) logits array."""
        return self.compiled(batch)[0]
