"""Few-shot linear evaluation (the paper's Figures 4 and 6; big_vision's `fewshot_lsr`).

Frozen pre-logit features, `model.forward_head(model.forward_features(x), pre_logits=True)`, of
`shots` images per class drawn from the training split are whitened (per-feature mean/std of those
samples), given a constant bias feature, and mapped onto {-1, +1}^K targets by closed-form
L2-regularised least squares; the argmax of the regression is the prediction on the test split.
As in big_vision, one eigendecomposition per draw serves every L2 strength.

Draws are nested: for a seed, each class's images are shuffled once and the first `shots` taken,
so the 5-shot sample is part of the 10-shot one. Only the images some draw needs (and the whole
test split) go through the model, and their features are cached on disk (vitcli.eval.features),
keyed by the model's weights, the dataset, the split and the preprocessing: a sweep over shots, seeds
and L2 strengths costs no further forward passes.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from vitcli.errors import DataError, UsageError
from vitcli.eval.features import FeatureStore, cache_key, extract, features_dir, weights_digest

DEFAULT_L2 = 2.0**10
BIAS_CONSTANT = 100.0  # big_vision: large, so the bias is almost unregularised


# ----------------------------------------------------------------------------- the solver (pure torch)


@dataclass
class RidgeCache:
    """What one draw of training features contributes, independent of the L2 strength."""

    mean: object  # (1, D)
    std: object  # (1, D)
    eigs: object  # (M,)
    lhs: object  # (D+1, M)
    rhs: object  # (M, K)


def ridge_cache(x, y, num_classes: int) -> RidgeCache:
    """Whiten x (N, D), add the bias feature, eigendecompose the smaller Gram matrix (float64)."""
    import torch

    x = torch.as_tensor(x, dtype=torch.float64)
    y = torch.as_tensor(y, dtype=torch.long)
    mean = x.mean(dim=0, keepdim=True)
    std = x.std(dim=0, keepdim=True, unbiased=False) + 1e-5
    x = torch.nn.functional.pad((x - mean) / std, (0, 1), value=BIAS_CONSTANT)  # (N, D+1)
    targets = 2.0 * torch.nn.functional.one_hot(y, num_classes).double() - 1.0  # (N, K) in {-1, +1}
    n, d = x.shape
    # (A) N >= D: w = (x^T x + l2 I)^-1 x^T y;  (B) D > N: w = x^T (x x^T + l2 I)^-1 y.
    # With q diag(eigs) q^T the eigendecomposition of the Gram matrix, both are lhs diag(1/(eigs+l2)) rhs.
    if n >= d:
        eigs, q = torch.linalg.eigh(x.T @ x)
        lhs, rhs = q, q.T @ (x.T @ targets)
    else:
        eigs, q = torch.linalg.eigh(x @ x.T)
        lhs, rhs = x.T @ q, q.T @ targets
    return RidgeCache(mean, std, eigs, lhs, rhs)


def ridge_weights(cache: RidgeCache, l2: float):
    """(D+1, K) regression weights for one L2 strength."""
    scaling = 1.0 / (cache.eigs + l2)
    return (cache.lhs * scaling.reshape(1, -1)) @ cache.rhs


def ridge_predict(cache: RidgeCache, x_test, l2: float):
    import torch

    x = torch.as_tensor(x_test, dtype=torch.float64)
    x = torch.nn.functional.pad((x - cache.mean) / cache.std, (0, 1), value=BIAS_CONSTANT)
    return (x @ ridge_weights(cache, l2)).argmax(dim=1)


def ridge_accuracy(cache: RidgeCache, x_test, y_test, l2: float) -> float:
    """Test accuracy (fraction) of the least-squares classifier."""
    import torch

    preds = ridge_predict(cache, x_test, l2)
    return float((preds == torch.as_tensor(y_test, dtype=torch.long)).double().mean())


def sample_shots(labels, shots: int, seed: int, num_classes: int) -> np.ndarray:
    """Indices of `shots` examples per class (fewer when a class has fewer), nested across shot counts."""
    labels = np.asarray(labels)
    picked = []
    for c in range(num_classes):
        members = np.flatnonzero(labels == c)
        rng = np.random.default_rng([seed, c])
        picked.append(rng.permutation(members)[:shots])
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=np.int64)


def parse_int_list(text: str, what: str) -> list[int]:
    try:
        values = [int(v) for v in str(text).replace(" ", "").split(",") if v]
    except ValueError:
        raise UsageError(f"{what} {text!r}: expected whole numbers separated by commas", "e.g. 1,5,10,25") from None
    if not values or any(v < 1 for v in values):
        raise UsageError(f"{what} {text!r}: expected positive whole numbers", "e.g. 1,5,10,25")
    return values


def parse_l2_list(text: str) -> list[float]:
    """'1024', '256,1024,4096' or '2**10' -> floats."""
    values = []
    for part in str(text).replace(" ", "").split(","):
        if not part:
            continue
        try:
            if "**" in part or "^" in part:
                base, exp = part.replace("^", "**").split("**")
                values.append(float(base) ** float(exp))
            else:
                values.append(float(part))
        except (ValueError, OverflowError):
            raise UsageError(
                f"--l2 {text!r}: expected numbers separated by commas", "e.g. 1024 or 256,1024,4096"
            ) from None
    if not values or any(not math.isfinite(v) or v < 0 for v in values):
        raise UsageError(f"--l2 {text!r}: expected finite non-negative numbers", "e.g. 1024 or 256,1024,4096")
    return values


# ----------------------------------------------------------------------------- the evaluation


def run(
    loaded,
    runtime,
    train,
    test,
    *,
    shots,
    seeds: int,
    l2,
    batch_size: int,
    workers: int | None,
    use_cache: bool,
    progress_factory=None,
) -> dict:
    """Few-shot accuracy (percent) per shot count: mean and std over `seeds` draws, for each L2 strength.

    `train` and `test` are `vitcli.eval.splits.Split`s of one dataset (same classes).
    `progress_factory(description, total)` returns a context manager yielding `advance(n)`.
    """
    import contextlib

    shots = sorted(set(int(s) for s in shots))
    l2 = [float(v) for v in l2]
    if seeds < 1:
        raise UsageError("--seeds must be at least 1")
    classes = train.classes
    if not classes or len(classes) < 2:
        raise DataError(f"few-shot evaluation needs at least 2 classes; {train.name} has {len(classes or [])}")
    if test.classes != classes:
        raise DataError(f"{train.name}: the {train.split} and {test.split} splits have different classes")
    if not hasattr(loaded.model, "forward_head"):
        raise UsageError(
            f"few-shot evaluation needs the model's pre-logit features, which {loaded.source.spec} does not expose",
            "use the torch model (timm name, hf-hub: id or folder), not an export",
        )
    num_classes = len(classes)
    largest = int(np.bincount(np.asarray(train.targets), minlength=num_classes).max())
    reduced = {str(k): largest for k in shots if k > largest}  # more shots than any class has: all of them
    shots = sorted(set(min(k, largest) for k in shots))
    progress_factory = progress_factory or (lambda description, total: contextlib.nullcontext(lambda n=1: None))

    started = time.perf_counter()
    digest = weights_digest(loaded.model)
    stores = {}
    for split in (train, test):
        path = (
            features_dir()
            / f"{cache_key(digest, split.identity, split.split, loaded.data_config, runtime.precision)}.pt"
            if use_cache
            else None
        )
        stores[split.split] = FeatureStore.open(path)
    train_store, test_store = stores[train.split], stores[test.split]

    draws = {seed: sample_shots(train.targets, max(shots), seed, num_classes) for seed in range(seeds)}
    needed_train = sorted(set(np.concatenate(list(draws.values())).tolist()))
    needed_test = list(range(len(test.targets)))
    todo = len(train_store.missing(needed_train)) + len(test_store.missing(needed_test))
    computed = 0
    with progress_factory("features", todo) as advance:
        computed += extract(
            train_store, loaded, runtime, train, needed_train, batch_size=batch_size, workers=workers, progress=advance
        )
        computed += extract(
            test_store, loaded, runtime, test, needed_test, batch_size=batch_size, workers=workers, progress=advance
        )

    x_test, kept_test = test_store.gather(needed_test)
    if not kept_test:
        raise DataError(f"no image of the {test.split} split of {test.name} could be read")
    y_test = np.asarray(test.targets)[kept_test]
    results = {value: {} for value in l2}
    capped = {}
    for k in shots:
        per_l2 = {value: [] for value in l2}
        for seed in range(seeds):
            subset = sample_shots(train.targets, k, seed, num_classes)  # a prefix of draws[seed]
            x, kept = train_store.gather(subset)
            if not kept:
                raise DataError(f"no image of the {train.split} split of {train.name} could be read")
            counts = np.bincount(np.asarray(train.targets)[kept], minlength=num_classes)
            if counts.min() < k:
                capped[k] = int(counts.min())
            cache = ridge_cache(x, np.asarray(train.targets)[kept], num_classes)
            for value in l2:
                per_l2[value].append(100.0 * ridge_accuracy(cache, x_test, y_test, value))
        for value in l2:
            accs = np.asarray(per_l2[value])
            results[value][str(k)] = {
                "mean": round(float(accs.mean()), 2),
                "std": round(float(accs.std(ddof=1)) if len(accs) > 1 else 0.0, 2),
                "seeds": seeds,
                "l2": value,
                "accuracies": [round(float(a), 2) for a in accs],
            }

    used = set(needed_train)
    failed = [
        {"split": train.split, "path": train.describe(i), "error": r}
        for i, r in sorted(train_store.failed.items())
        if i in used
    ]
    failed += [
        {"split": test.split, "path": test.describe(i), "error": r} for i, r in sorted(test_store.failed.items())
    ]
    summary = {
        "model": loaded.source.spec,
        "architecture": loaded.architecture,
        "dataset": train.name,
        "train_split": train.split,
        "test_split": test.split,
        "num_classes": num_classes,
        "num_train": len(train.targets),
        "num_test": len(kept_test),
        "feature_dim": int(x_test.shape[1]),
        "l2": l2[0] if len(l2) == 1 else l2,
        "few_shot": results[l2[0]],
        "forward_passes": computed,
        "num_failed": len(failed),
        "failed": failed,
        "seconds": round(time.perf_counter() - started, 2),
        "backend": "torch",
        "device": str(runtime.device),
        "precision": runtime.precision,
    }
    if len(l2) > 1:
        summary["l2_sweep"] = {_l2_key(value): results[value] for value in l2}
    if capped:
        summary["shots_capped"] = {str(k): v for k, v in capped.items()}
    if reduced:
        summary["shots_reduced"] = reduced
    return summary


def _l2_key(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)
