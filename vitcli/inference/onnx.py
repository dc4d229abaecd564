"""`vit predict` in onnxruntime, with no torch import: `--model FILE.onnx` and the fast-start copies.

The model is a vitcli.export.onnx_model.OnnxModel (the file alone is enough: its metadata holds the
preprocessing and the label names). `predict` reads images through the same `Records` and eval transform as the torch path
(vitcli.data.loader, vitcli.data.transforms: the transform's numpy half), decodes them in threads
(PIL releases the GIL), and runs the batch in onnxruntime: importing torch (1.3 s here) is what a
one-image `vit predict` no longer pays.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

from vitcli.errors import ModelError
from vitcli.export.onnx_model import OnnxModel
from vitcli.output import display


def predict(
    paths: list,
    model: OnnxModel,
    *,
    top_k: int | None,
    batch_size: int,
    workers: int | None,
    threshold: float | None,
    progress=lambda n=1: None,
    throughput=None,
) -> Iterator:
    """One `Prediction` per path, in order, as vitcli.inference.predict.run gives them."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from vitcli.data.loader import Records
    from vitcli.data.transforms import EvalTransform, supports
    from vitcli.errors import ImageError
    from vitcli.inference.forward import Throughput
    from vitcli.inference.multilabel import MultiLabelHead
    from vitcli.inference.prediction import DEFAULT_TOP_K, NON_FINITE, Prediction

    if not supports(model.data_config):
        raise ModelError(
            f"{display(model.path)}: its preprocessing ({model.data_config}) needs timm's transform",
            "predict with the torch model instead",
        )
    transform = EvalTransform(model.data_config)
    records = Records.of_paths(paths)
    limit, top_k = top_k, max(1, min(top_k or DEFAULT_TOP_K, model.num_classes))
    head = MultiLabelHead.of(model.config, model.num_classes, threshold)

    def read(j):
        try:
            return transform.array(records.image(j, transform.draft_size)), None
        except ImageError as e:
            return None, e.reason

    tally = throughput if throughput is not None else Throughput()
    tally.workers = workers or min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=tally.workers) as pool:
        for start in range(0, len(paths), batch_size):
            began = time.perf_counter()
            batch = list(pool.map(read, range(start, min(start + batch_size, len(paths)))))
            ok = [i for i, (array, _) in enumerate(batch) if array is not None]
            scores = classes = None
            loaded = time.perf_counter()
            tally.loader_s += loaded - began
            if ok:
                logits = model(np.stack([batch[i][0] for i in ok])).astype(np.float64)
                tally.model_s += time.perf_counter() - loaded
                tally.images += len(ok)
                exp = np.exp(logits - logits.max(axis=1, keepdims=True))
                probs = exp / exp.sum(axis=1, keepdims=True)
                classes = np.argsort(-probs, axis=1, kind="stable")[:, :top_k]
                scores = np.take_along_axis(probs, classes, axis=1)
                finite = np.isfinite(logits).all(axis=1)
            row = {i: k for k, i in enumerate(ok)}
            for i, (array, reason) in enumerate(batch):
                name = records.name(start + i)
                if array is None:
                    yield Prediction(name, error=reason)
                elif not finite[row[i]]:
                    yield Prediction(name, error=NON_FINITE)
                else:
                    k = row[i]
                    yield Prediction(
                        name,
                        head.labels(logits[k], model.label_names, limit)
                        if head
                        else [
                            {"label": model.label_names[int(c)], "index": int(c), "score": round(float(s), 6)}
                            for s, c in zip(scores[k], classes[k])
                        ],
                    )
            progress(len(batch))
