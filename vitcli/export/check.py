"""Is an exported file the model it came from? Top-1 agreement with the torch model on images.

`vit export` checks every file it writes this way, on the calibration images or the images given with
`--check` (read through the one eval transform, as `vit predict` reads them), or on random inputs when
none are given (a weaker check, said in the result); `vit benchmark --formats` reports the same number.
An export below the threshold (`--min-agreement`: 0.95 for int8, 0.99 otherwise) is refused with the
numbers, or kept with `--force` and a warning.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MIN_AGREEMENT = {"int8": 0.95}  # by precision; anything else: DEFAULT_MIN_AGREEMENT
DEFAULT_MIN_AGREEMENT = 0.99
RANDOM_INPUTS = 32
CALIB_LIMIT = 64  # calibration images used, spread evenly over the folder's sorted list (every class of a tree)


@dataclass
class Agreement:
    agree: int
    images: int
    on: str  # "images" | "random inputs"

    @property
    def rate(self) -> float:
        return self.agree / self.images if self.images else 0.0

    def to_json(self) -> dict:
        return {"top1_agreement": round(self.rate, 4), "agree": self.agree, "images": self.images, "on": self.on}

    def describe(self) -> str:
        return f"{self.agree}/{self.images} {self.on} ({self.rate:.1%})"


def min_agreement(precision: str, given: float | None) -> float:
    return given if given is not None else MIN_AGREEMENT.get(precision, DEFAULT_MIN_AGREEMENT)


def read_images(where: Path | str, data_config: dict, limit: int | None = None):
    """(N, 3, H, W) float32 array of the images in a folder (or one file), through the one eval
    transform; unreadable files are left out; at most `limit`, spread evenly over the sorted list. An
    error when none can be read."""
    import numpy as np

    from vitcli.data.images import load_image
    from vitcli.data.inputs import expand_inputs
    from vitcli.data.transforms import eval_transform
    from vitcli.errors import DataError, ImageError

    paths, _ = expand_inputs([str(where)], None)
    transform = eval_transform(data_config)
    draft = getattr(transform, "draft_size", None)
    arrays = []
    paths = sorted(paths, key=str)
    if limit and len(paths) > limit:
        paths = [paths[round(i * (len(paths) - 1) / (limit - 1))] for i in range(limit)]
    for path in paths:
        try:
            arrays.append(np.asarray(transform(load_image(path, draft)), dtype=np.float32))
        except ImageError:
            continue
    if not arrays:
        raise DataError(
            f"{where}: no readable image to calibrate or check the export on",
            "give a folder of images the model is meant for",
        )
    return np.stack(arrays)


def random_inputs(data_config: dict, n: int = RANDOM_INPUTS):
    import numpy as np

    _, h, w = data_config["input_size"]
    return np.random.default_rng(0).standard_normal((n, 3, int(h), int(w)), dtype=np.float32)


def torch_top1(model, images, batch_size: int = 25):
    import numpy as np
    import torch

    out = []
    with torch.inference_mode():
        for i in range(0, len(images), batch_size):
            out.append(model(torch.from_numpy(images[i : i + batch_size])).float().argmax(1).numpy())
    return np.concatenate(out)


def file_top1(run, images, batch_size: int = 25):
    """Top-1 of a file model: `run` maps a float32 batch to logits (numpy or torch)."""
    import numpy as np

    out = []
    for i in range(0, len(images), batch_size):
        logits = run(images[i : i + batch_size])
        out.append(np.asarray(logits.detach() if hasattr(logits, "detach") else logits).argmax(1))
    return np.concatenate(out)


def agreement(reference, ours, on: str) -> Agreement:
    return Agreement(int((reference == ours).sum()), len(reference), on)


def open_file_model(path: Path, fmt: str):
    """A file `vit export` wrote, as a callable on float32 batches."""
    if fmt == "openvino":
        from vitcli.export.openvino_model import OpenVinoModel

        return OpenVinoModel(path)
    if fmt == "pt2":
        import torch

        from vitcli.export.pt2_model import load

        module = load(path)[0]
        return lambda batch: module(torch.from_numpy(batch))
    from vitcli.export.onnx_model import OnnxModel

    return OnnxModel(path)
