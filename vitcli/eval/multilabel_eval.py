"""`vit eval` of a multi-label model or on multi-label data: mAP, per-class AP, micro / macro precision,
recall and F1 at the thresholds, and the files of `--out-dir` (metrics.json, per_class.csv,
predictions.csv, pr_curves.png).

The images go through the one image path and the one batched forward (vitcli.data, vitcli.inference),
as single-label evaluation does; the dataset's class names are mapped onto the model's by name
(vitcli.eval.splits.class_mapping), so a multi-hot row is re-ordered into the model's classes. The
thresholds are `--threshold`, else the model's chosen ones (config.json), else 0.5
(vitcli.inference.multilabel). The maths are vitcli.eval.multilabel.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vitcli.errors import DataError
from vitcli.eval import multilabel as ml
from vitcli.eval.splits import Split, class_mapping


@dataclass
class MultiLabelResult:
    summary: dict  # the --json summary (percentages)
    class_names: list
    per_class: list = field(default_factory=list)
    predictions: list = field(default_factory=list)  # per readable image: path, true labels, predicted labels
    scores: np.ndarray | None = None  # (N, K) sigmoid scores, in the model's classes
    targets: np.ndarray | None = None  # (N, K) 0/1
    multi_label = True  # vit eval renders it as such (vitcli.eval.evaluate.EvalResult says False)


def model_targets(loaded, split: Split) -> np.ndarray:
    """The split's targets as multi-hot rows in the model's classes (a single-label split: one-hot)."""
    mapping = class_mapping(loaded, split)
    targets = np.asarray(split.targets)
    k = loaded.num_classes
    out = np.zeros((len(targets), k), dtype=np.uint8)
    if targets.ndim == 1:
        out[np.arange(len(targets)), targets if mapping is None else mapping[targets]] = 1
    else:
        out[:, np.arange(targets.shape[1]) if mapping is None else mapping] = targets
    return out


def run(
    loaded,
    runtime,
    split: Split,
    *,
    batch_size: int,
    workers: int | None,
    threshold: float | None,
    progress=lambda n=1: None,
) -> MultiLabelResult:
    from vitcli import accel, output
    from vitcli.data.transforms import eval_transform
    from vitcli.inference.forward import Throughput, forward
    from vitcli.inference.multilabel import is_multi_label, thresholds_of

    if not is_multi_label(loaded.config):
        output.warn(f"{loaded.source.spec} is not a multi-label model: its logits are read as sigmoid scores")
    targets = model_targets(loaded, split)
    thresholds = thresholds_of(loaded.config, loaded.num_classes, threshold)
    accel.prepare(loaded.model, runtime, "inference")  # in place, idempotent: what open_model already applied
    dataset = split.make_dataset(eval_transform(loaded.data_config))
    model = loaded.model
    logits, order, failed = [], [], []
    throughput = Throughput()
    started = time.perf_counter()
    for batch, out in forward(model, dataset, runtime, batch_size=batch_size, workers=workers, throughput=throughput):
        failed += [{"path": split.describe(s.position), "error": s.reason} for s in batch.skipped]
        if out is not None:
            logits.append(out.float().cpu().numpy())
            order.extend(batch.positions)
        progress(len(batch.positions) + len(batch.skipped))
    seconds = time.perf_counter() - started
    if not order:
        raise DataError(
            f"none of the {len(split)} images of {split.name} could be read",
            f"first failure: {failed[0]['path']}: {failed[0]['error']}" if failed else None,
        )
    logits = np.concatenate(logits)
    scores, truth = ml.sigmoid(logits), targets[order]
    ap = ml.per_class_ap(scores, truth)
    at = ml.threshold_scores(scores, truth, thresholds)
    names = list(loaded.label_names)
    summary = {
        "model": loaded.source.spec,
        "architecture": loaded.architecture,
        "dataset": split.name,
        "split": split.split,
        "multi_label": True,
        "num_images": len(order),
        "mAP": round(100 * ml.mean_ap(ap), 4),
        "loss": round(ml.bce(logits, truth), 6),
        **{k: v for k, v in at.items() if k != "per_class"},
        "thresholds": "given" if threshold is not None else "chosen" if loaded.config.get("thresholds") else "0.5",
        "num_classes": loaded.num_classes,
        "num_failed": len(failed),
        "failed": failed,
        "seconds": round(seconds, 2),
        "images_per_second": round(len(order) / seconds, 1) if seconds else None,
        **throughput.to_json(),
        "device": runtime.describe(),
        "precision": runtime.precision,
    }
    c = at["per_class"]
    per_class = [
        {
            "index": k,
            "name": names[k],
            "support": int(c["support"][k]),
            "predicted": int(c["predicted"][k]),
            "ap": None if np.isnan(ap[k]) else round(100 * float(ap[k]), 4),
            "threshold": thresholds[k],
            "precision": round(100 * float(c["precision"][k]), 4),
            "recall": round(100 * float(c["recall"][k]), 4),
            "f1": round(100 * float(c["f1"][k]), 4),
        }
        for k in range(loaded.num_classes)
    ]
    predicted = scores >= np.asarray(thresholds)[None, :]
    predictions = [
        {
            "path": split.describe(pos),
            "true": " ".join(names[k] for k in np.flatnonzero(truth[i])),
            "predicted": " ".join(names[k] for k in np.flatnonzero(predicted[i])),
        }
        for i, pos in enumerate(order)
    ]
    return MultiLabelResult(summary, names, per_class, predictions, scores, truth)


# ----------------------------------------------------------------------------- --out-dir


def pr_curves_png(result: MultiLabelResult, path: Path, title: str = "", most: int = 20) -> Path:
    """Precision-recall curves of (up to `most`) classes, labelled with their AP."""
    from matplotlib.figure import Figure

    from vitcli.output import atomic_write

    rows = sorted((r for r in result.per_class if r["ap"] is not None), key=lambda r: -r["support"])[:most]
    fig = Figure(figsize=(7, 5.5))
    ax = fig.subplots()
    for r in rows:
        recall, precision = ml.pr_curve(result.scores[:, r["index"]], result.targets[:, r["index"]])
        ax.step(
            np.r_[0.0, recall],
            np.r_[1.0, precision],
            where="post",
            linewidth=1.2,
            label=f"{str(r['name'])[:20]} (AP {r['ap']:.1f})",
        )
    ax.set_xlim(0, 1.0)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(title or f"precision-recall, mAP {result.summary['mAP']:.2f} %", fontsize=9)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120))


def write_artefacts(result: MultiLabelResult, out_dir: Path) -> list[Path]:
    """metrics.json, per_class.csv, predictions.csv and pr_curves.png in `out_dir`."""
    import csv
    import io

    from vitcli.output import atomic_write, dumps

    def table(rows) -> str:
        buffer = io.StringIO()
        csv.writer(buffer).writerows(rows)
        return buffer.getvalue()

    out_dir = Path(out_dir)
    cols = ["index", "name", "support", "predicted", "ap", "threshold", "precision", "recall", "f1"]
    files = {
        "metrics.json": dumps({**result.summary, "per_class": result.per_class}, indent=2) + "\n",
        "per_class.csv": table([cols] + [["" if r[c] is None else r[c] for c in cols] for r in result.per_class]),
        "predictions.csv": table(
            [["path", "true", "predicted"]] + [[p["path"], p["true"], p["predicted"]] for p in result.predictions]
        ),
    }
    written = [atomic_write(out_dir / name, text) for name, text in files.items()]
    s = result.summary
    title = f"{s['architecture']} on {s['dataset']} ({s['split']}): mAP {s['mAP']:.2f} %"
    written.append(pr_curves_png(result, out_dir / "pr_curves.png", title))
    return written
