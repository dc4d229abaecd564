"""`vit eval`: a model's accuracy and diagnostics on a labelled split (vitcli.eval.splits), with timm's
exact numbers.

Images go through the one image path and the one eval transform (vitcli.data) and the one batched
forward (vitcli.inference.forward), so top-1/top-5 equal timm's validate.py and every image gets the
label `vit predict` gives it. An unreadable image is counted and named, never replaced by another
sample. Metrics are accumulated batch by batch (vitcli.eval.metrics); the files of `--out-dir` are
written by vitcli.eval.reports.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vitcli.errors import DataError, UsageError
from vitcli.eval.splits import Split, class_mapping


@dataclass(frozen=True)
class EvalOptions:
    """What `vit eval` was asked, in one value: the CLI fills it, the core reads it (no defaults here)."""

    model: str
    dataset: str | None
    data: Path | None
    labels: Path | None
    split: str | None
    data_dir: Path | None
    image_column: str | None
    label_column: str | None
    real_labels: Path | None
    batch_size: int
    workers: int | None
    device: str
    precision: str
    backend: str
    compile: bool
    # few-shot linear evaluation (vitcli.eval.fewshot) when `few_shot` is set
    few_shot: str | None
    seeds: int
    l2: str
    use_cache: bool
    threshold: float | None  # multi-label: every label at or above it counts (default: the run's thresholds)

    def split_args(self) -> dict:
        return {
            "dataset": self.dataset,
            "data": self.data,
            "labels": self.labels,
            "split": self.split,
            "data_dir": self.data_dir,
            "image_column": self.image_column,
            "label_column": self.label_column,
        }

    def model_args(self) -> dict:
        return {"device": self.device, "precision": self.precision, "backend": self.backend}


def evaluate(opts: EvalOptions, *, announce, progress_factory) -> EvalResult:
    """`vit eval`: open the split and the model, evaluate. `announce(text)` says what runs on what."""
    from vitcli.eval import splits
    from vitcli.inference.opened import open_model

    target = splits.open_split(**opts.split_args())
    opened = open_model(opts.model, **opts.model_args())
    announce(
        f"{opened.loaded.architecture} on {opened.describe()} ({opened.info()['accel']}): {target.name} "
        f"({target.split}), {len(target)} image(s)"
    )
    from vitcli.inference.multilabel import is_multi_label

    if is_multi_label(opened.loaded.config) or target.targets.ndim > 1:
        from vitcli.eval import multilabel_eval

        with progress_factory("eval", len(target)) as advance:
            result = multilabel_eval.run(
                opened.loaded,
                opened.runtime,
                target,
                batch_size=opts.batch_size,
                workers=opts.workers,
                threshold=opts.threshold,
                progress=advance,
            )
        result.summary.update(opened.info())
        return result
    with progress_factory("eval", len(target)) as advance:
        return run(
            opened,
            target,
            batch_size=opts.batch_size,
            workers=opts.workers,
            real_labels=opts.real_labels,
            compile=opts.compile,
            progress=advance,
        )


# ----------------------------------------------------------------------------- evaluation


@dataclass
class EvalResult:
    summary: dict  # the --json summary (percentages)
    confusion: np.ndarray  # (C, C) in the model's classes, rows = true
    class_names: list[str]
    per_class: list[dict] = field(default_factory=list)
    most_confused: list[dict] = field(default_factory=list)
    predictions: list[dict] = field(default_factory=list)  # per readable image: path, true, top-1, score
    multi_label = False  # vitcli.eval.multilabel_eval.MultiLabelResult says True


_IMAGENET_VAL = re.compile(r"ILSVRC2012_val_(\d{8})")


def read_real_labels(path: Path, split: Split) -> list[list[int]]:
    """ImageNet ReaL: a JSON list (one label list per ImageNet val image, in val-file order) -> one
    list per image of `split`, matched by the ILSVRC2012_val_NNNNNNNN file name, else by position."""
    import json

    try:
        real = json.loads(Path(path).expanduser().read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read ReaL labels {path}: {e}") from None
    if not isinstance(real, list) or not all(
        isinstance(r, list) and all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c < 2**31 for c in r)
        for r in real
    ):
        raise DataError(f"{path} is not a JSON list of lists of class indices", "use ImageNet ReaL's real.json")
    names = [split.describe(i) for i in range(len(split))]
    matches = [_IMAGENET_VAL.search(Path(n).name) for n in names]
    if all(matches):
        numbers = [int(m.group(1)) for m in matches]
        if max(numbers) > len(real):
            raise DataError(f"{path} has {len(real)} entries but the images go up to val image {max(numbers)}")
        return [real[n - 1] for n in numbers]
    if len(real) != len(names):
        raise DataError(
            f"{path} has {len(real)} entries for {len(names)} images and the file names are not "
            "ILSVRC2012_val_NNNNNNNN",
            "give the ReaL file that belongs to these images",
        )
    return real


def few_shot(opts: EvalOptions, *, announce, progress_factory) -> dict:
    """`vit eval --few-shot`: the paper's linear probes on frozen features (vitcli.eval.fewshot)."""
    from vitcli.eval import fewshot, splits
    from vitcli.inference.opened import open_model

    shots = fewshot.parse_int_list(opts.few_shot, "--few-shot")
    l2s = fewshot.parse_l2_list(opts.l2)
    train, test = splits.few_shot_splits(**opts.split_args())
    if train.targets.ndim > 1:
        raise UsageError(
            "--few-shot evaluates single-label classification; this dataset is multi-label",
            "fine-tune it with `vit finetune --multi-label` and evaluate the run folder",
        )
    opened = open_model(opts.model, **opts.model_args())
    announce(
        f"{opened.loaded.architecture} on {opened.describe()}: {train.name}, shots from train ({len(train)}), "
        f"evaluated on {test.split} ({len(test)})"
    )
    result = fewshot.run(
        opened.loaded,
        opened.runtime,
        train,
        test,
        shots=shots,
        seeds=opts.seeds,
        l2=l2s,
        batch_size=opts.batch_size,
        workers=opts.workers,
        use_cache=opts.use_cache,
        progress_factory=progress_factory,
    )
    return {**result, **opened.info()}


def run(
    opened,
    split: Split,
    *,
    batch_size: int,
    workers: int | None,
    real_labels: Path | None = None,
    compile: bool = False,
    progress=lambda n=1: None,
) -> EvalResult:
    """Evaluate the opened model (vitcli.inference.opened) on `split`: loss, top-1/5, ECE, macro P/R/F1,
    per-class accuracy, confusion."""
    from vitcli import output
    from vitcli.accel import compiled
    from vitcli.data.transforms import eval_transform
    from vitcli.eval import metrics
    from vitcli.inference.forward import Throughput, forward

    loaded, runtime = opened.loaded, opened.runtime
    mapping = class_mapping(loaded, split)
    targets = split.targets if mapping is None else mapping[split.targets]
    real = read_real_labels(real_labels, split) if real_labels else None
    acc = metrics.MetricAccumulator(loaded.num_classes)
    order: list[int] = []  # positions in the order the accumulator saw them
    failed: list[dict] = []
    dataset = split.make_dataset(eval_transform(loaded.data_config))
    model = compiled.wrap(
        loaded.model,
        runtime,
        compile=compile and opened.backend == "torch",
        batch_size=batch_size,
        log=lambda m: output.info(m, style="dim"),
    )
    started = time.perf_counter()
    throughput = Throughput()
    for batch, logits in forward(
        model, dataset, runtime, batch_size=batch_size, workers=workers, throughput=throughput
    ):
        for s in batch.skipped:
            failed.append({"path": split.describe(s.position), "error": s.reason})
        if logits is not None:
            acc.update(logits, targets[batch.positions])
            order.extend(batch.positions)
        progress(len(batch.positions) + len(batch.skipped))
    seconds = time.perf_counter() - started
    if acc.count == 0:
        raise DataError(
            f"none of the {len(split)} images of {split.name} could be read",
            f"first failure: {failed[0]['path']}: {failed[0]['error']}" if failed else None,
        )

    summary = {
        "model": loaded.source.spec,
        "architecture": loaded.architecture,
        "dataset": split.name,
        "split": split.split,
        **acc.compute(),
    }
    if real is not None:
        r = metrics.real_accuracy(acc.topk, [real[p] for p in order])
        summary.update({"real_top1": r["top1"], "real_top5": r["top5"], "real_num_images": r["num_images"]})
    summary.update(
        {
            "num_classes": loaded.num_classes,
            "num_failed": len(failed),
            "failed": failed,
            "seconds": round(seconds, 2),
            "images_per_second": round(acc.count / seconds, 1) if seconds else None,
            **throughput.to_json(),
            **opened.info(),
            "compiled": model is not loaded.model,
        }
    )
    if runtime.precision != "fp32":
        summary["precision_note"] = (
            f"{runtime.precision} autocast (the classifier in fp32): a label can differ "
            "from fp32's where two classes nearly tie; --precision fp32 gives exact "
            "fp32 numbers"
        )
    names = loaded.label_names
    per_class = metrics.per_class_rows(acc.confusion, names)
    confused = [
        {"true": names[t], "predicted": names[p], "true_index": t, "predicted_index": p, "count": n}
        for t, p, n in metrics.most_confused(acc.confusion, 20)
    ]
    predictions = [
        {
            "path": split.describe(pos),
            "true_index": int(targets[pos]),
            "top1_index": int(top[0]),
            "top1_score": round(float(score), 6),
        }
        for pos, top, score in zip(order, acc.topk, acc.confidence)
    ]
    return EvalResult(summary, acc.confusion, names, per_class, confused, predictions)


def _pct(x) -> float | None:
    return None if x is None or np.isnan(x) else round(100.0 * float(x), 4)
