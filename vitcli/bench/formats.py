"""`vit benchmark --formats torch,onnx,onnx-int8,openvino`: one model in each deployable form, side by side.

In one run: the torch model (fp32, eager, the reference), and each asked-for file made from it in a
temporary folder: the ONNX file once (the dynamo exporter, checked against torch by vitcli.export), its
int8 copy (vitcli.export.quantize: static when `--calib` images are given, else dynamic), its fp16 copy,
the OpenVINO IR converted from it, the pt2 program. For each: top-1 on `--data/--labels` (when given),
top-1 agreement with torch fp32 on the same images (random inputs when no data is given), latency at
batch 1 and img/s at batch `batch_size` (median of timed batches on synthetic input of the model's size;
formats alternated in rounds so a noisy machine slows all of them alike: vitcli.bench.timing), and the
file's size.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from vitcli.bench.timing import Side, alternate, r
from vitcli.errors import UsageError

FORMATS = ("torch", "onnx", "onnx-int8", "onnx-fp16", "openvino", "pt2")


@dataclass
class FormatRow:
    format: str
    backend: str
    precision: str
    top1: float | None
    agreement: float
    latency_ms: float  # batch 1, median
    img_s: float  # batch `batch_size`, from the median batch time
    size_mb: float | None  # the file(s); the torch row: its safetensors weights when known
    notes: str = ""

    def to_json(self) -> dict:
        return {
            "format": self.format,
            "backend": self.backend,
            "precision": self.precision,
            "top1": r(self.top1, 4),
            "agreement": r(self.agreement, 4),
            "latency_ms_b1": r(self.latency_ms),
            "img_s": r(self.img_s),
            "size_mb": r(self.size_mb),
            "notes": self.notes,
        }


@dataclass
class FormatsResult:
    model: str
    architecture: str
    images: int
    on: str  # "images" | "random inputs"
    batch_size: int
    threads: int
    rows: list[FormatRow] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "model": self.model,
            "architecture": self.architecture,
            "images": self.images,
            "on": self.on,
            "batch_size": self.batch_size,
            "threads": self.threads,
            "rows": [row.to_json() for row in self.rows],
        }


def parse_formats(text: str) -> list[str]:
    asked = [f.strip().lower() for f in text.split(",") if f.strip()]
    wrong = [f for f in asked if f not in FORMATS]
    if wrong or not asked:
        raise UsageError(
            f"--formats {text!r}: unknown {', '.join(wrong) or 'list'}", f"use some of {','.join(FORMATS)}"
        )
    return list(dict.fromkeys(asked))


def labelled_images(loaded, data: Path, labels: Path | None):
    """(images (N, 3, H, W) float32, targets as model class indices or None) through the one eval transform."""
    import numpy as np

    from vitcli.data.transforms import eval_transform
    from vitcli.eval.splits import class_mapping, open_split

    if labels is None:
        from vitcli.export.check import read_images

        return read_images(data, loaded.data_config), None
    split = open_split(data=data, labels=labels)
    mapping = class_mapping(loaded, split)
    dataset = split.make_dataset(eval_transform(loaded.data_config))
    images, targets = [], []
    for i in range(len(dataset)):
        item = dataset[i]
        if hasattr(item, "reason"):  # Skipped: an unreadable image is left out of every row alike
            continue
        images.append(np.asarray(item[1], dtype=np.float32))
        targets.append(int(mapping[item[2]]) if mapping is not None else int(item[2]))
    if not images:
        raise UsageError(f"--data {data}: no readable image")
    return np.stack(images), np.array(targets)


def _files(model, loaded, formats, folder: Path, calib, tune, log) -> dict:
    """format -> (callable on float32 batches, backend, precision, size in MB, notes)."""
    import torch

    from vitcli.export.check import open_file_model
    from vitcli.export.onnx_file import check_onnx, metadata, to_onnx

    _, h, w = loaded.data_config["input_size"]
    example = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(0))
    meta = metadata(loaded, loaded.data_config)
    made = {}
    fp32 = folder / "model.onnx"
    if any(f.startswith("onnx") or f == "openvino" for f in formats):
        log("exporting to ONNX (the dynamo exporter takes 10-40 s)")
        to_onnx(model, example, fp32, {**meta, "precision": "fp32"})
        log(f"ONNX fp32: max |logit difference| to torch {check_onnx(model, fp32, example, True):.2g}")
    for fmt in formats:
        notes = ""
        if fmt == "onnx":
            path, kind = fp32, "onnx"
        elif fmt == "onnx-int8":
            from vitcli.export.quantize import quantize_int8

            path, kind = folder / "model.int8.onnx", "onnx"
            log("quantizing to int8 (" + ("static, calibrated on --calib" if calib is not None else "dynamic") + ")")
            report = quantize_int8(
                fp32,
                path,
                {**meta, "precision": "int8"},
                calib=calib,
                check=calib if calib is not None else tune,
                target=0.95,
                log=log,
            )
            notes = f"{report.mode}, {report.quantized} linears int8, {len(report.kept_float)} kept float" + (
                "" if calib is not None else ", chosen on these images"
            )
        elif fmt == "onnx-fp16":
            from vitcli.export.quantize import to_fp16

            path, kind = folder / "model.fp16.onnx", "onnx"
            to_fp16(fp32, path, {**meta, "precision": "fp16"})
        elif fmt == "openvino":
            from vitcli.export.openvino_file import to_openvino

            path, kind = folder / "model.xml", "openvino"
            log("converting to OpenVINO")
            to_openvino(fp32, path, {**meta, "precision": "fp32"})
        elif fmt == "pt2":
            from vitcli.export.export import to_pt2

            path, kind = folder / "model.pt2", "pt2"
            log("exporting to pt2 (torch.export)")
            to_pt2(model, example, path, meta)
        else:
            continue
        size = path.stat().st_size + (path.with_suffix(".bin").stat().st_size if kind == "openvino" else 0)
        runner = open_file_model(path, kind)
        backend = {"onnx": "onnxruntime", "openvino": "openvino", "pt2": "torch.export"}[kind]
        precision = getattr(runner, "precision", "fp32")
        made[fmt] = (_numpy(runner), backend, precision, size / 1e6, notes)
    return made


def _numpy(run):
    """`run` (numpy or torch out) as float32 batch -> numpy logits."""
    import numpy as np

    def call(batch):
        out = run(batch)
        return np.asarray(out.detach() if hasattr(out, "detach") else out)

    return call


def run(
    spec: str,
    formats: list[str],
    *,
    data: Path | None = None,
    labels: Path | None = None,
    calib: Path | None = None,
    batch_size: int = 32,
    iters: int = 10,
    warmup_iters: int = 2,
    rounds: int = 4,
    log=lambda m: None,
) -> FormatsResult:
    """Benchmark `spec` in each of `formats` (see the module docstring)."""
    import numpy as np
    import torch

    from vitcli.export.check import random_inputs, read_images
    from vitcli.models.resolver import file_kind, load_model

    if file_kind(spec) is not None:
        raise UsageError("--formats starts from the torch model", "give the model the file was exported from")
    loaded = load_model(spec, device=torch.device("cpu"))
    model = loaded.model.eval()
    images, targets = labelled_images(loaded, data, labels) if data is not None else (None, None)
    on = "images" if images is not None else "random inputs"
    if images is None:
        images = random_inputs(loaded.data_config)
    calib_images = read_images(calib, loaded.data_config, limit=64) if calib is not None else None

    def torch_run(batch):
        with torch.inference_mode():
            return model(torch.from_numpy(batch)).float().numpy()

    with tempfile.TemporaryDirectory(prefix="vit-formats-") as tmp:
        made = _files(model, loaded, formats, Path(tmp), calib_images, images, log)
        runs = {"torch": (torch_run, "torch", "fp32", _weights_mb(loaded), "the reference")} | made
        order = [f for f in formats if f in runs]
        reference = _top1(torch_run, images)
        x1 = np.ascontiguousarray(random_inputs(loaded.data_config, 1))
        xb = np.ascontiguousarray(random_inputs(loaded.data_config, batch_size))
        cpu = torch.device("cpu")
        sides = {}
        for fmt in order:
            fn = runs[fmt][0]
            sides[fmt] = (
                Side(f"{fmt} b1", lambda fn=fn: fn(x1), cpu, 1, memory=False),
                Side(f"{fmt} b{batch_size}", lambda fn=fn: fn(xb), cpu, batch_size, memory=False),
            )
        log(
            f"timing {', '.join(order)}: {warmup_iters} warm-up + {iters} timed batches of 1 and of {batch_size} "
            "each, alternating"
        )
        for pair in sides.values():
            for side in pair:
                side.run(warmup_iters, record=False)
        alternate([s for pair in sides.values() for s in pair], iters, rounds)
        result = FormatsResult(spec, loaded.architecture, len(images), on, batch_size, torch.get_num_threads())
        for fmt in order:
            fn, backend, precision, size, notes = runs[fmt]
            ours = reference if fmt == "torch" else _top1(fn, images)
            b1, bn = sides[fmt]
            result.rows.append(
                FormatRow(
                    fmt,
                    backend,
                    precision,
                    float((ours == targets).mean()) if targets is not None else None,
                    float((ours == reference).mean()),
                    1000 * float(np.median(b1.latencies)),
                    batch_size / float(np.median(bn.latencies)),
                    size,
                    notes,
                )
            )
    return result


def _top1(run, images, batch_size: int = 25):
    import numpy as np

    return np.concatenate([run(images[i : i + batch_size]).argmax(1) for i in range(0, len(images), batch_size)])


def _weights_mb(loaded) -> float | None:
    weights = getattr(loaded.source, "weights", None)
    return Path(weights).stat().st_size / 1e6 if weights and Path(weights).is_file() else None
