"""The model `vit serve` runs: any model spec, opened once, as a function of a numpy batch.

A torch model comes from vitcli.inference.opened.open_model (the runtime and speed choices `vit eval`
uses); a file `vit export` wrote runs in its own runtime (onnxruntime, OpenVINO: vitcli.export; pt2: torch).
Images go through the one eval transform (vitcli.data.transforms), so a served answer is the answer of
`vit predict`. Scores: softmax, or with `"multi_label": true` in the model's config.json a sigmoid per
label, every label above the threshold returned. Attention rollout (vitcli.analysis) for torch ViTs.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ServedModel:
    architecture: str
    label_names: list
    data_config: dict
    backend: str
    device: str
    precision: str
    multi_label: bool
    run: object  # (B, 3, H, W) float32 numpy -> (B, classes) numpy logits
    torch_model: object | None = None  # for the rollout: a torch ViT on `runtime`
    runtime: object | None = None

    def info(self) -> dict:
        return {
            "architecture": self.architecture,
            "backend": self.backend,
            "device": self.device,
            "precision": self.precision,
            "classes": len(self.label_names),
            "multi_label": self.multi_label,
            "input_size": list(self.data_config["input_size"]),
            "crop_pct": 1.0 if self.data_config.get("crop_mode") == "squash" else self.data_config.get("crop_pct"),
            "rollout": self.can_rollout(),
        }

    def can_rollout(self) -> bool:
        if self.torch_model is None:
            return False
        from vitcli.analysis.attention import NotAViTError, token_layout

        try:
            token_layout(self.torch_model)
            return True
        except NotAViTError:
            return False

    def preprocess(self, image):
        """RGB PIL image -> (3, H, W) float32 array, as `vit predict` makes it."""
        import numpy as np

        from vitcli.data.transforms import eval_transform

        transform = self.__dict__.setdefault("_transform", eval_transform(self.data_config))
        out = transform.array(image) if hasattr(transform, "array") else transform(image).numpy()
        return np.ascontiguousarray(out, dtype=np.float32)

    @property
    def draft_size(self) -> int | None:
        from vitcli.data.transforms import eval_transform

        transform = self.__dict__.setdefault("_transform", eval_transform(self.data_config))
        return getattr(transform, "draft_size", None)

    def answer(self, logits, k: int, threshold: float) -> list[dict]:
        """One image's logits -> [{"label", "index", "score"}], best first, as `vit predict --json`."""
        import numpy as np

        logits = np.asarray(logits, dtype=np.float64)
        if self.multi_label:
            scores = 1 / (1 + np.exp(-logits))
            order = [int(i) for i in np.argsort(-scores, kind="stable") if scores[i] >= threshold]
        else:
            exp = np.exp(logits - logits.max())
            scores = exp / exp.sum()
            order = [
                int(i)
                for i in np.argsort(-scores, kind="stable")[: max(1, min(k, len(scores)))]
                if scores[i] >= threshold
            ]
        return [{"label": self.label_names[i], "index": i, "score": round(float(scores[i]), 6)} for i in order]

    def rollout(self, array) -> dict:
        """Attention rollout of one preprocessed image: {"grid": [rows, cols], "values": row-major, 0..1}."""
        import torch

        from vitcli.analysis.attention import attention_maps, token_layout
        from vitcli.analysis.maths import rollout

        layout = token_layout(self.torch_model)
        x = torch.from_numpy(array[None]).to(self.runtime.device)
        with torch.inference_mode(), self.runtime.autocast():
            maps = attention_maps(self.torch_model, x)
        weights = rollout(maps, layout.num_prefix, layout.has_class_token)[0].float()
        weights = (weights - weights.min()) / (weights.max() - weights.min() + 1e-12)
        return {"grid": list(layout.grid), "values": [round(float(v), 4) for v in weights.cpu()]}


def open_served(spec: str, *, device: str = "auto", precision: str = "auto") -> ServedModel:
    """Open `spec` for serving (see the module docstring)."""
    from vitcli.models.resolver import file_kind

    kind = file_kind(spec)
    if kind in ("onnx", "openvino"):  # numpy in, numpy out: no torch on the request path
        from vitcli.inference.opened import onnx_runtime_flags_ok

        onnx_runtime_flags_ok(
            device,
            precision,
            f"a{'n ONNX' if kind == 'onnx' else ' openvino'} model runs in "
            f"{'onnxruntime' if kind == 'onnx' else 'openvino'}",
        )
        if kind == "onnx":
            from vitcli.export.onnx_model import OnnxModel

            model = OnnxModel(spec)
        else:
            from vitcli.export.openvino_model import OpenVinoModel

            model = OpenVinoModel(spec)
        return ServedModel(
            model.architecture,
            list(model.label_names),
            model.data_config,
            model.backend,
            "cpu",
            model.precision,
            bool(model.config.get("multi_label")),
            model,
        )
    import torch

    from vitcli.inference.opened import open_model

    opened = open_model(spec, device=device, precision=precision)
    loaded, rt = opened.loaded, opened.runtime
    module = loaded.model

    def run(batch):
        with torch.inference_mode(), rt.autocast():
            return module(torch.from_numpy(batch).to(rt.device)).float().cpu().numpy()

    is_torch = opened.backend == "torch"
    return ServedModel(
        loaded.architecture,
        list(loaded.label_names),
        dict(loaded.data_config),
        opened.backend,
        str(rt.device),
        opened.precision,
        bool((loaded.config or {}).get("multi_label")),
        run,
        module if is_torch else None,
        rt if is_torch else None,
    )
