"""int8 and fp16 copies of an exported ONNX file, for `vit export --quantize int8` and `--half`.

int8 is ONNX Runtime's quantization: static (`quantize_static`, QDQ, activations uint8 calibrated by MinMax
on the calibration images through the one eval transform, weights int8 per channel with reduce_range,
which AVX2 CPUs without VNNI need to avoid saturating their u8 x s8 products) when images are given,
dynamic (`quantize_dynamic`, the activation range taken per batch) without. Only the linear layers are
quantized (MatMul / Gemm with a weight); LayerNorm, Softmax, GELU (Erf), the patch embedding and the head
stay in float. Which linears also stay float is measured, not guessed: the linears are grouped by weight
shape (in a transformer: one group per role, repeated in every block), each group alone is quantized and
its top-1 agreement with the fp32 file measured, and the costliest groups go back to float one at a time
until the agreement reaches the target (on the real ViT-Ti/16: the MLP's two linears, the second after
GELU costing most; the attention's qkv and proj stay int8: docs/deploy-formats.md).

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
        return {
            "mode": self.mode,
            "quantized_linears": self.quantized,
            "kept_float": self.kept_float,
            "head": self.head,
            "agreement_with_fp32_file": self.agreement,
        }


def weight_linears(proto) -> tuple[list[tuple[str, str, str]], str | None]:
    """[(node name, input name, weight name)] of the MatMul / Gemm nodes with a weight, in graph order,
    and the head (the last of them: it writes the logits)."""
    inits = {i.name for i in proto.graph.initializer}
    found = []
    for node in proto.graph.node:
        if (
            node.op_type in QUANTIZED_OPS
            and len(node.input) >= 2
            and node.input[1] in inits
            and node.input[0] not in inits
        ):
            found.append((node.name, node.input[0], node.input[1]))
    return found, (found[-1][0] if found else None)


def _session(path_or_bytes):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(path_or_bytes, options, providers=["CPUExecutionProvider"])


def groups_by_shape(proto, linears, head: str | None) -> dict[tuple, list[str]]:
    """The body's linears grouped by their weight's shape: in a transformer, one group per role (ViT-Ti:
    qkv 192x576, proj 192x192, fc1 192x768, fc2 768x192), each repeated in every block."""
    shapes = {i.name: tuple(i.dims) for i in proto.graph.initializer}
    groups: dict[tuple, list[str]] = {}
    for node, _, weight in linears:
        if node != head:
            groups.setdefault(shapes[weight], []).append(node)
    return groups


class _Reader:
    """onnxruntime's CalibrationDataReader over an (N, 3, H, W) float32 array, in batches of 8."""

    def __init__(self, input_name: str, images):
        self.batches = [{input_name: images[i : i + 8]} for i in range(0, len(images), 8)]
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

    return np.concatenate([run(images[i : i + batch_size]).argmax(1) for i in range(0, len(images), batch_size)])


def quantize_int8(
    fp32_file: Path, output: Path, meta: dict, *, calib=None, check=None, target: float = 0.95, log=lambda m: None
) -> Int8Report:
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
        cache = Path(tmp) / "calibration.json"
        trial = Path(tmp) / "int8.onnx"

        def make(excluded: list[str]):
            nodes = [n for n in body if n not in excluded]
            if calib is not None:
                quantize_static(
                    str(pre),
                    str(trial),
                    _reader(input_name, calib),
                    quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=list(QUANTIZED_OPS),
                    nodes_to_quantize=nodes,
                    activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    per_channel=True,
                    reduce_range=True,
                    **_cache_arg(cache),
                )
            else:  # uint8 weights: measured 86 against 82 (int8) and 77 (int8, reduce_range) of 100 on ViT-Ti
                quantize_dynamic(
                    str(pre),
                    str(trial),
                    op_types_to_quantize=list(QUANTIZED_OPS),
                    nodes_to_quantize=nodes,
                    weight_type=QuantType.QUInt8,
                )

        groups = groups_by_shape(proto, linears, head)

        def agree() -> float:
            return float((top1(_runner(str(trial), input_name), check) == reference).mean())

        excluded: list[str] = []
        agreement = None
        if reference is not None:
            make([])
            agreement = agree()
            log(f"int8, all {len(body)} linears: top-1 agreement with fp32 {agreement:.2%} on {len(check)} images")
        if agreement is not None and agreement < target and len(groups) > 1:
            cost = {}  # each group alone in int8: how much agreement it costs
            for shape, nodes in groups.items():
                make([n for n in body if n not in nodes])
                cost[shape] = agree()
                log(f"int8, only the {len(nodes)} linears of shape {'x'.join(map(str, shape))}: {cost[shape]:.2%}")
            for shape in sorted(cost, key=cost.get):  # the costliest group goes back to float first
                excluded += groups[shape]
                make(excluded)
                agreement = agree()
                log(
                    f"int8 with {len(body) - len(excluded)} of {len(body)} linears quantized "
                    f"({'x'.join(map(str, shape))} kept float): {agreement:.2%}"
                )
                if agreement >= target or len(excluded) == len(body):
                    break
        elif reference is None:
            make([])
        quantized = onnx.load(str(trial))
        set_metadata(quantized, meta)
        atomic_write(output, lambda tmp_path: onnx.save(quantized, str(tmp_path)))
    return Int8Report(
        "static" if calib is not None else "dynamic", len(body) - len(excluded), excluded, head, agreement
    )


def _runner(path: str, input_name: str):
    session = _session(path)
    return lambda batch: session.run(None, {input_name: batch})[0]


def _cache_arg(cache: Path) -> dict:
    """Calibrate once for all trials where this onnxruntime can keep the ranges (calibration_cache_path)."""
    import inspect

    from onnxruntime.quantization import quantize_static

    return (
        {"calibration_cache_path": str(cache)}
        if "calibration_cache_path" in inspect.signature(quantize_static).parameters
        else {}
    )


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
