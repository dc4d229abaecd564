"""Deletion and insertion (Petsiuk, Das & Saenko 2018, "RISE", sec. 4.1): is a saliency map faithful to the
model it explains?

Deletion removes the pixels from the most to the least salient in `steps` equal steps and follows the
softmax probability of the explained class (its sigmoid probability for a multi-label model, whose
labels are each their own yes/no): a faithful map makes it fall fast, a low area under the
curve (AUC). Insertion starts from a blurred copy of the image and puts the pixels back in the same
order: a faithful map makes the probability rise fast, a high AUC. The choices, RISE's own where it
made one:

- deletion sets pixels to 0 in the model's normalised input, i.e. to the normalisation mean colour (grey
  for mean = std = 0.5); insertion starts from a Gaussian blur of the image (kernel 11, sigma 5);
- the pixel order comes from the map at input resolution (maps on the patch grid are upsampled
  bilinearly, as pytorch-grad-cam upsamples its own); pixels of equal saliency (Grad-CAM's ReLU makes
  many zeros) are taken in a seeded random order, so each step changes exactly 1/steps of the pixels;
- the baseline is a random map: uniform noise on the model's feature grid (the patch grid of a ViT),
  upsampled the same way and seeded per image, so it is as smooth as the maps it is compared with
  (pytorch-grad-cam's RandomCAM is not model-free: random weights on the layer's activations);
- AUC by the trapezoid rule over the fraction of pixels changed (0 to 1), averaged over the images.

The perturbed batches go through pytorch-grad-cam's `PerturbationConfidenceMetric` (one batched forward
per step, here under inference mode and the runtime's autocast) with the rank-based perturbations below.
Its `RemoveMostRelevantFirst` thresholds at a percentile, which removes every tied pixel at once (asked
for 50 % of a map whose lower 55 % are zeros, it removes all of it), and ROAD's imputer solves a sparse
system per image and step (0.23 s for one 224 px image on the 2-core dev machine: about 9 minutes for
the README's run, whose forward passes take about one).
"""

from __future__ import annotations

from pathlib import Path

from vitcli.analysis.gradcam import probabilities
from vitcli.errors import VitError
from vitcli.output import atomic_write, display, dumps

BLUR_KERNEL, BLUR_SIGMA = 11, 5.0  # RISE's insertion substrate


def auc(curve) -> float:
    """Area under a curve sampled at equal steps over [0, 1] (trapezoid rule)."""
    import numpy as np

    c = np.asarray(curve, dtype=np.float64)
    return float((c.sum() - (c[0] + c[-1]) / 2) / (len(c) - 1))


def salience_ranks(saliency, seed: int = 0):
    """(H, W) map -> (H, W) float32 ranks: 0 for the most salient pixel; ties in a seeded random order."""
    import numpy as np

    s = np.asarray(saliency, dtype=np.float64).ravel()
    tiebreak = np.random.default_rng(seed).random(s.size)
    order = np.lexsort((tiebreak, -s))  # by saliency, descending; then by the random key
    ranks = np.empty(s.size, dtype=np.float32)  # exact up to 2**24 pixels
    ranks[order] = np.arange(s.size, dtype=np.float32)
    return ranks.reshape(np.shape(saliency))


def random_map(grid: tuple[int, int], position: int, seed: int = 0):
    """The baseline: uniform noise on `grid`, seeded by (seed, the image's position)."""
    import numpy as np

    return np.random.default_rng([seed, position]).random(grid).astype(np.float32)


def at_size(saliency, size: tuple[int, int]):
    """A map on any grid -> (H, W) float32, bilinear (half-pixel centres, as cv2.resize and the overlays)."""
    import numpy as np
    import torch

    m = np.asarray(saliency, dtype=np.float32)
    if m.shape == tuple(size):
        return m
    t = torch.from_numpy(m)[None, None]
    return torch.nn.functional.interpolate(t, size=tuple(size), mode="bilinear", align_corners=False)[0, 0].numpy()


def blur(x):
    from torchvision.transforms.functional import gaussian_blur

    return gaussian_blur(x, [BLUR_KERNEL, BLUR_KERNEL], [BLUR_SIGMA, BLUR_SIGMA])


class RankPerturbation:
    """A perturbation for PerturbationConfidenceMetric, which calls it with (image (C, H, W), ranks (H, W)):
    the `count` highest-ranked pixels are deleted (set to 0) or, for insertion, the only ones not blurred."""

    def __init__(self, count: int, mode: str):
        self.count, self.mode = count, mode

    def __call__(self, image, ranks):
        changed = ranks < self.count  # (H, W) bool
        if self.mode == "deletion":
            return image.masked_fill(changed, 0.0)
        return image.where(changed, blur(image[None])[0])


class ClassProbability:
    """A pytorch-grad-cam target: the probability of one class (`probabilities`)."""

    def __init__(self, category: int, multi_label: bool = False):
        self.category, self.multi_label = category, multi_label

    def __call__(self, output):
        return probabilities(output, self.multi_label)[..., self.category]


def curves(model, x, ranks, categories, steps: int, ends: dict, multi_label: bool = False):
    """Deletion and insertion curves of a batch: (B, steps + 1) each. `ranks` (B, H, W) from
    salience_ranks; `ends` the scores shared by every map (clean, zero, blurred), each (B,)."""
    import numpy as np
    from pytorch_grad_cam.metrics.perturbation_confidence import PerturbationConfidenceMetric

    n = ranks.shape[-1] * ranks.shape[-2]
    targets = [ClassProbability(c, multi_label) for c in categories]
    deletion, insertion = [ends["clean"]], [ends["blurred"]]
    for k in range(1, steps):
        count = round(n * k / steps)
        for mode, into in (("deletion", deletion), ("insertion", insertion)):
            metric = PerturbationConfidenceMetric(RankPerturbation(count, mode))
            into.append(np.asarray(metric(x, ranks, targets, model, return_diff=False), dtype=np.float64))
    deletion.append(ends["zero"])
    insertion.append(ends["clean"])
    return np.stack(deletion, axis=1), np.stack(insertion, axis=1)


def faithfulness_figures(
    loaded,
    rt,
    paths,
    maps: dict,
    out: Path,
    *,
    grid,
    targets: dict | None,
    target: int | None,
    steps: int,
    batch_size: int,
    arch: str,
    result: dict,
    seed: int = 0,
) -> dict:
    """Deletion and insertion AUCs of each map in `maps` (name -> {image position -> map}) and of a random
    map, averaged over the readable `paths`; writes faithfulness.{png,json}. The class explained is
    `targets[position]` (Grad-CAM's), else `target`, else the predicted class."""
    import numpy as np
    import torch

    from vitcli import output as sink
    from vitcli.analysis import figures
    from vitcli.analysis.gradcam import engine
    from vitcli.data.loader import ImageDataset, Records, make_loader
    from vitcli.data.transforms import eval_transform
    from vitcli.inference.multilabel import is_multi_label

    engine()
    model, multi = loaded.model, is_multi_label(loaded.config)
    dataset = ImageDataset(Records.of_paths(paths), transform=eval_transform(loaded.data_config))
    names = [*maps, "random"]
    found = {name: ([], []) for name in names}  # name -> (deletion curves, insertion curves), (B, steps+1) each
    images = []
    with sink.progress("deletion/insertion", total=len(paths), unit="img") as advance:
        for batch in make_loader(dataset, batch_size=batch_size, device=rt.device):
            result["errors"] += [{"path": s.path, "error": s.reason} for s in batch.skipped]
            if batch.images is not None:
                x = batch.images.to(rt.device)
                size = tuple(x.shape[-2:])
                with torch.inference_mode(), rt.autocast():
                    clean = probabilities(model(x), multi)
                    cats = [
                        targets[i]
                        if targets and i in targets
                        else target
                        if target is not None
                        else int(clean[j].argmax())
                        for j, i in enumerate(batch.positions)
                    ]
                    rows = torch.arange(len(x), device=x.device)
                    idx = torch.tensor(cats, device=x.device)
                    ends = {
                        "clean": clean[rows, idx],
                        "zero": probabilities(model(torch.zeros_like(x[:1])), multi)[0, idx],
                        "blurred": probabilities(model(blur(x)), multi)[rows, idx],
                    }
                    ends = {k: v.cpu().double().numpy() for k, v in ends.items()}
                    for name in names:
                        per_image = [
                            random_map(grid, i, seed) if name == "random" else maps[name][i] for i in batch.positions
                        ]
                        ranks = np.stack([salience_ranks(at_size(m, size), seed) for m in per_image])
                        d, ins = curves(model, x, ranks, cats, steps, ends, multi)
                        found[name][0].append(d)
                        found[name][1].append(ins)
                images += [display(paths[i]) for i in batch.positions]
            advance(len(batch.positions) + len(batch.skipped))
    if not images:
        raise VitError("none of the images could be read, so there is no faithfulness to measure")
    fractions = [k / steps for k in range(steps + 1)]
    scores, table = {}, {}
    for name in names:
        d, ins = (np.concatenate(found[name][0]), np.concatenate(found[name][1]))
        d_auc, i_auc = [auc(c) for c in d], [auc(c) for c in ins]
        scores[name] = {
            "deletion_auc": round(float(np.mean(d_auc)), 4),
            "insertion_auc": round(float(np.mean(i_auc)), 4),
        }
        table[name] = {
            **scores[name],
            "deletion_curve": [round(v, 5) for v in d.mean(0).tolist()],
            "insertion_curve": [round(v, 5) for v in ins.mean(0).tolist()],
            "per_image": [
                {"image": im, "deletion_auc": round(a, 4), "insertion_auc": round(b, 4)}
                for im, a, b in zip(images, d_auc, i_auc)
            ],
        }
    setup = {
        "num_images": len(images),
        "steps": steps,
        "score": f"{'sigmoid' if multi else 'softmax'} probability of the explained class",
        "deletion": "pixels set to 0 in the normalised input (the mean colour), most salient first",
        "insertion": f"pixels put back into a Gaussian blur (kernel {BLUR_KERNEL}, sigma {BLUR_SIGMA:g}), "
        "most salient first",
        "random": f"uniform noise on the {grid[0]}x{grid[1]} grid, upsampled bilinearly, seed {seed}",
        "json": str(out / "faithfulness.json"),
        "plot": str(out / "faithfulness.png"),
    }
    atomic_write(
        out / "faithfulness.json",
        dumps({"model": loaded.architecture, **setup, "fractions": fractions, "maps": table}, indent=1) + "\n",
    )
    figures.faithfulness_curves(
        fractions,
        table,
        out / "faithfulness.png",
        title=f"Deletion and insertion: {arch}, {len(images)} images, {steps} steps",
    )
    result["files"] += [setup["plot"], setup["json"]]
    result["faithfulness_setup"] = setup
    return scores
