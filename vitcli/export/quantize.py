"""int8 and fp16 copies of an exported ONNX file, for `vit export --quantize int8` and `--half`.

int8 is ONNX Runtime's quantization: static (`quantize_static`, QDQ, activations uint8 calibrated by MinMax
on the calibration images through the one eval transform, weights int8 per channel with reduce_range,
which AVX2 CPUs without VNNI need to avoid saturating their u8 x s8 products) when images are given,
dynamic (`quantize_dynamic`, the activation range taken per batch) without. Only the linear layers are
quantized (MatMul / Gemm with a weight); LayerNorm, Softmax, GELU (Erf), the patch embedding and the head
stay in float. Which linears also stay float is measured, not guessed: each one's int8 error alone is
simulated on the calibration batch (its input and weight rounded as ONNX Runtime rounds them) and the
worst are kept in float, a few more at a time, until the file's top-1 agreement with the fp32 file on the
check images reaches the target (on the real ViT-Ti/16 the MLP's second linear, after GELU, is the
sensitive one: docs/deploy-formats.md).

fp16 is onnxconverter-common's float16 converter with float32 inputs and outputs (for GPU targets).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

QUANTIZED_OPS = ("MatMul", "Gemm")


@dataclass
class Int8Report:
    mode: str  # static | dynamic
    quantized: int  # linears in int8
    kept_float: list[str] = field(default_factory=list)  # linears kept in float (besides the head)
    head: str | None = None
    agreement: float | None = None  # top-1 agreement with the fp32 file on the check images

    def to_json(self) -> dict:
        return {"mode": self.mode, "quantized_linears": self.quantized, "kept_float": self.kept_float,
                "head": self.head, "agreement_with_fp32_file": self.agreement}


def weight_linears(proto) -> tuple[list[tuple[str, str, str]], str | None]:
    """[(node name, input name, weight name)] of the MatMul / Gemm nodes with a weight, in graph order,
    and the head (the last of them: it writes the logits)."""
    inits = {i.name for i in proto.graph.initializer}
    found = []
    for node in proto.graph.node:
        if node.op_type in QUANTIZED_OPS and len(node.input) >= 2 and node.input[1] in inits \
                and node.input[0] not in inits:
            found.append((node.name, node.input[0], node.input[1]))
    return found, (found[-1][0] if found else None)


def _session(path_or_bytes):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(path_or_bytes, options, providers=["CPUExecutionProvider"])


def sensitivity(proto, linears, batch) -> list[str]:
    """The linears' names, worst first, by the relative error of their output when only their input
    (uint8, range of the batch) and weight (int8, per output channel) are rounded."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    probe = onnx.ModelProto()
    probe.CopyFrom(proto)
    del probe.graph.output[:]
    names = sorted({x for _, x, _ in linears})
    for name in names:
        probe.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    values = dict(zip(names, _session(probe.SerializeToString()).run(names, {proto.graph.input[0].name: batch})))
    weights = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    errors = {}
    for node, x_name, w_name in linears:
        x = values[x_name].reshape(-1, values[x_name].shape[-1]).astype(np.float32)
        w = weights[w_name].astype(np.float32)
        w = w.T if w.shape[0] != x.shape[1] else w  # Gemm with transB
        lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
        scale = (hi - lo) / 255 or 1.0
        xq = (np.clip(np.round((x - lo) / scale), 0, 255) * scale + lo).astype(np.float32)
        wscale = np.abs(w).max(axis=0, keepdims=True) / 63 + 1e-12  # 7-bit weights (reduce_range)
        wq = (np.round(w / wscale) * wscale).astype(np.float32)
        exact = x @ w
        errors[node] = float(np.linalg.norm(xq @ wq - exact) / (np.linalg.norm(exact) + 1e-12))
    return sorted(errors, key=errors.get, reverse=True)


class _Reader:
    """onnxruntime's CalibrationDataReader over an (N, 3, H, W) float32 array, in batches of 8."""

    def __init__(self, input_name: str, images):
        self.batches = [{input_name: images[i:i + 8]} for i in range(0, len(images), 8)]
        self.at = 0

    def get_next(self):
        self.at += 1
        return self.batches[self.at - 1] if self.at <= len(self.batches) else None

    def rewind(self):
        self.at = 0

    def __len__(self):
        return len(self.batches)


def _reader(input_name: str, images):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(_Reader, CalibrationDataReader):
        pass

    return Reader(input_name, images)


def top1(run, images, batch_size: int = 25):
    import numpy as np

    return np.concatenate([run(images[i:i + batch_size]).argmax(1) for i in range(0, len(images), batch_size)])


def quantize_int8(fp32_file: Path, output: Path, meta: dict, *, calib=None, check=None, target: float = 0.95,
                  log=lambda m: None) -> Int8Report:
    """Write the int8 copy of `fp32_file` to `output` (see the module docstring). `calib`: images to
    calibrate on (static) or None (dynamic); `check`: images the kept-float set is chosen on."""
    import tempfile

    import onnx
    from onnxruntime.quantization import (
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from vitcli.output import atomic_write

    with tempfile.TemporaryDirectory(prefix="vit-int8-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32_file), str(pre), skip_symbolic_shape=True)
        proto = onnx.load(str(pre))
        input_name = proto.graph.input[0].name
        linears, head = weight_linears(proto)
        body = [name for name, _, _ in linears if name != head]
        reference = top1(_runner(str(fp32_file), input_name), check) if check is not None else None
        ranked = sensitivity(proto, linears, (calib if calib is not None else check)[:16]) \
            if (calib is not None or check is not None) else []
        ranked = [n for n in ranked if n != head]
        cache = Path(tmp) / "calibration.json"
        trial = Path(tmp) / "int8.onnx"

        def make(excluded: list[str]):
            nodes = [n for n in body if n not in excluded]
            if calib is not None:
                quantize_static(str(pre), str(trial), _reader(input_name, calib), quant_format=QuantFormat.QDQ,
                                op_types_to_quantize=list(QUANTIZED_OPS), nodes_to_quantize=nodes,
                                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                                reduce_range=True, **_cache_arg(cache))
            else:  # uint8 weights: measured 86 against 82 (int8) and 77 (int8, reduce_range) of 100 on ViT-Ti
                quantize_dynamic(str(pre), str(trial), op_types_to_quantize=list(QUANTIZED_OPS),
                                 nodes_to_quantize=nodes, weight_type=QuantType.QUInt8)

        steps = _exclusion_steps(len(ranked))
        agreement = None
        for count in steps:
            excluded = ranked[:count]
            make(excluded)
            if reference is None:
                break
            agreement = float((top1(_runner(str(trial), input_name), check) == reference).mean())
            log(f"int8 with {len(body) - count} of {len(body)} linears quantized: top-1 agreement with fp32 "
                f"{agreement:.2%} on {len(check)} images")
            if agreement >= target:
                break
        quantized = onnx.load(str(trial))
        set_metadata(quantized, meta)
        atomic_write(output, lambda tmp_path: onnx.save(quantized, str(tmp_path)))
    return Int8Report("static" if calib is not None else "dynamic", len(body) - len(excluded), excluded, head,
                      agreement)


def _runner(path: str, input_name: str):
    session = _session(path)
    return lambda batch: session.run(None, {input_name: batch})[0]


def _exclusion_steps(n: int) -> list[int]:
    """0, then 1/8, 1/4, 3/8 ... of the ranked linears, up to all of them."""
    return sorted({0, *(round(n * k / 8) for k in range(1, 9))})


def _cache_arg(cache: Path) -> dict:
    """Calibrate once for all trials where this onnxruntime can keep the ranges (calibration_cache_path)."""
    import inspect

    from onnxruntime.quantization import quantize_static

    return {"calibration_cache_path": str(cache)} \
        if "calibration_cache_path" in inspect.signature(quantize_static).parameters else {}


def set_metadata(proto, meta: dict) -> None:
    """The file's `vitcli` metadata (vitcli.export.onnx_model.META_KEY) set to `meta`."""
    import json

    for prop in list(proto.metadata_props):
        if prop.key == "vitcli":
            proto.metadata_props.remove(prop)
    entry = proto.metadata_props.add()
    entry.key, entry.value = "vitcli", json.dumps(meta)


def to_fp16(fp32_file: Path, output: Path, meta: dict) -> None:
    """The fp16 copy of an ONNX file, inputs and outputs kept float32 (onnxconverter-common)."""
    import warnings

    import onnx

    from vitcli.errors import ModelError
    from vitcli.output import atomic_write

    try:
        from onnxconverter_common import float16
    except ImportError:
        raise ModelError("--half needs onnxconverter-common", "pip install 'vitcli[fp16]'") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "the value was truncated": fp16's range, checked below by agreement
        half = float16.convert_float_to_float16(onnx.load(str(fp32_file)), keep_io_types=True)
    set_metadata(half, meta)
    atomic_write(output, lambda tmp: onnx.save(half, str(tmp)))
