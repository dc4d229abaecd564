"""A multi-label model's head as predicting reads it: sigmoid scores, and the labels at or above a threshold.

A model is multi-label when its config.json says so (`"multi_label": true`, written by `vit finetune|train
--multi-label`; an exported ONNX file carries the same keys in its metadata), with the per-class
`"thresholds"` the run chose on its held-out split (vitcli.eval.multilabel.choose_thresholds). A
`--threshold` given on the command line replaces them for every class; without either, 0.5.
Standard library and numpy only: the onnxruntime path uses it without torch.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_THRESHOLD = 0.5


def is_multi_label(config: dict | None) -> bool:
    return bool((config or {}).get("multi_label"))


def thresholds_of(config: dict | None, num_classes: int, override: float | None = None) -> list[float]:
    """The per-class thresholds: `override` for all, else the model's chosen ones, else 0.5."""
    from vitcli.errors import UsageError

    if override is not None:
        if not 0.0 <= override <= 1.0:
            raise UsageError(f"--threshold {override}: expected a probability in [0, 1]")
        return [float(override)] * num_classes
    chosen = (config or {}).get("thresholds")
    if isinstance(chosen, list) and len(chosen) == num_classes:
        return [float(t) for t in chosen]
    return [DEFAULT_THRESHOLD] * num_classes


@dataclass
class MultiLabelHead:
    """What turns a multi-label model's logits into its labels."""

    thresholds: list  # per class

    @classmethod
    def of(cls, config: dict | None, num_classes: int, override: float | None = None) -> MultiLabelHead | None:
        """The head of a multi-label model (None for a single-label one)."""
        if not is_multi_label(config):
            return None
        return cls(thresholds_of(config, num_classes, override))

    def labels(self, logits_row, names, limit: int | None = None) -> list[dict]:
        """[{"label", "index", "score"}] of every class whose sigmoid score is at or above its
        threshold, best first (an empty list: none of the classes); at most `limit` of them when given."""
        import numpy as np

        scores = 1.0 / (1.0 + np.exp(-np.asarray(logits_row, dtype=np.float64)))
        chosen = [c for c in np.argsort(-scores, kind="stable") if scores[c] >= self.thresholds[c]][:limit]
        return [{"label": names[c], "index": int(c), "score": round(float(scores[c]), 6)} for c in chosen]
