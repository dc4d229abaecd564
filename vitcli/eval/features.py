"""The feature cache: the pre-logit features, `model.forward_head(model.forward_features(x),
pre_logits=True)`, of the images of a split that a caller needs (`extract`), kept by image index on
disk under `<vit cache>/features/` (`FeatureStore`) together with the images that could not be read
(never retried). An entry is keyed by the model's weights, the dataset, the split, the preprocessing and
the precision (`cache_key`). The few-shot probes (vitcli.eval.fewshot) and the recipes' linear probe
(vitcli.train.recipe.probe) read it, so a sweep over shots, seeds and L2 strengths costs no further
forward passes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from vitcli import env
from vitcli.output import atomic_write

FEATURE_CACHE_VERSION = 1


def weights_digest(model) -> str:
    """A hash of the model's parameters and buffers (names, shapes, dtypes and bytes)."""
    import torch

    h = hashlib.blake2b(digest_size=16)
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def cache_key(model_digest: str, dataset_identity: str, split: str, data_config: dict, precision: str = "fp32") -> str:
    """Features differ by model, images, preprocessing and precision (fp32 keys stay as they were)."""
    fields = {
        "v": FEATURE_CACHE_VERSION,
        "model": model_digest,
        "dataset": dataset_identity,
        "split": split,
        "preprocessing": _jsonable(data_config),
    }
    if precision != "fp32":
        fields["precision"] = precision
    payload = json.dumps(fields, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


def features_dir() -> Path:
    return Path(env.vit_cache_dir()) / "features"


@dataclass
class FeatureStore:
    """Features of some images of one split, by index; failures remembered so they are not retried."""

    path: Path | None
    features: dict[int, object] = field(default_factory=dict)  # index -> (D,) float32 tensor
    failed: dict[int, str] = field(default_factory=dict)  # index -> reason

    @classmethod
    def open(cls, path: Path | None) -> FeatureStore:
        import torch

        store = cls(path)
        if path is None or not path.is_file():
            return store
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
            feats = data["features"]
            store.features = {int(i): feats[j] for j, i in enumerate(data["indices"].tolist())}
            store.failed = {int(i): str(r) for i, r in zip(data["failed_indices"].tolist(), data["failed_reasons"])}
        except Exception:  # noqa: BLE001 - a damaged cache is recomputed, never trusted
            store.features, store.failed = {}, {}
        return store

    def missing(self, indices) -> list[int]:
        return [int(i) for i in indices if int(i) not in self.features and int(i) not in self.failed]

    def save(self) -> None:
        import torch

        if self.path is None:
            return
        indices = sorted(self.features)
        data = {
            "indices": torch.tensor(indices, dtype=torch.long),
            "features": torch.stack([self.features[i] for i in indices]) if indices else torch.zeros(0, 0),
            "failed_indices": torch.tensor(sorted(self.failed), dtype=torch.long),
            "failed_reasons": [self.failed[i] for i in sorted(self.failed)],
        }
        atomic_write(self.path, lambda tmp: torch.save(data, tmp))

    def gather(self, indices) -> tuple[object, list[int]]:
        """(features of the readable ones, the indices they belong to), in the order given."""
        import torch

        kept = [int(i) for i in indices if int(i) in self.features]
        if not kept:
            return torch.zeros(0, 0), kept
        return torch.stack([self.features[i] for i in kept]), kept


def extract(
    store: FeatureStore,
    loaded,
    runtime,
    split,
    indices,
    *,
    batch_size: int,
    workers: int | None,
    progress=lambda n=1: None,
) -> int:
    """Run the images of `indices` that the store lacks through the model; returns how many ran."""
    from vitcli import accel
    from vitcli.data.transforms import eval_transform
    from vitcli.inference.forward import forward

    todo = store.missing(indices)
    if not todo:
        return 0
    model = loaded.model
    accel.prepare(model, runtime, "inference")  # in place, idempotent: what open_model already applied

    def pre_logits(x):
        return model.forward_head(model.forward_features(x), pre_logits=True)

    dataset = split.make_dataset(eval_transform(loaded.data_config)).select(todo)
    for batch, outputs in forward(pre_logits, dataset, runtime, batch_size=batch_size, workers=workers):
        for s in batch.skipped:
            store.failed[s.position] = s.reason
        if outputs is not None:
            for pos, row in zip(batch.positions, outputs.float().cpu()):
                store.features[pos] = row.clone()
        progress(len(batch.positions) + len(batch.skipped))
    store.save()
    return len(todo)
