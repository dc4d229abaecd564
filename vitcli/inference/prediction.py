"""One image's prediction, as every predictor (torch or onnxruntime) gives it."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_TOP_K = 5  # labels per image of a single-label model when --top-k is not given
NON_FINITE = "the model's output is not finite (NaN or infinite): its weights are damaged or diverged"


@dataclass
class Prediction:
    path: str  # as shown (vitcli.output.display), a URL as given
    predictions: list[dict] | None = None  # [{"label", "index", "score"}], best first
    error: str | None = None

    def to_json(self) -> dict:
        if self.error is not None:
            return {"path": self.path, "error": self.error}
        return {"path": self.path, "predictions": self.predictions}
