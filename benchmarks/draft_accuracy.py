"""Does JPEG draft decoding (PIL `draft`, DCT-domain downscaling) change predictions?

`vit predict` lets PIL decode a JPEG at 1/2, 1/4 or 1/8 scale when the result stays at least twice
the resize target (vitcli.data.transforms.EvalTransform.draft_size). The 100 ImageNet val images of
../shared/assets are about 500x375, too small for any draft, so this script also re-encodes them
2x, 3x and 4x upscaled (Lanczos, JPEG quality 92, in a temporary folder) and compares, per scale:
top-1 accuracy and per-image top-1 agreement for no draft, draft to 1x the target, draft to 2x (the
choice), and the decode + preprocess time per image.

    python benchmarks/draft_accuracy.py [--assets ../shared/assets]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "assets")
    args = parser.parse_args()

    import torch
    from PIL import Image

    from vitcli.data.images import load_image
    from vitcli.data.transforms import EvalTransform
    from vitcli.models.resolver import load_model

    val = args.assets / "images" / "imagenet-val-100"
    labels = dict(line.split() for line in (val / "labels.txt").read_text().splitlines() if line.strip())
    loaded = load_model(str(args.assets / "models" / "vit_tiny_patch16_224.augreg_in21k_ft_in1k"))
    transform = EvalTransform(loaded.data_config)
    target = transform.draft_size // 2
    sources = sorted((val / "images").iterdir())
    print(
        f"model ViT-Ti/16, resize target {target} px (short side), {len(sources)} images, "
        f"torch threads {torch.get_num_threads()}"
    )
    print(f"{'images':>12} {'draft to':>9} {'top-1':>6} {'same top-1 as no draft':>23} {'ms/img':>7}")
    with tempfile.TemporaryDirectory() as tmp:
        for scale in (1, 2, 3, 4):
            paths = []
            for src in sources:
                path = Path(tmp) / f"x{scale}" / src.name
                path.parent.mkdir(exist_ok=True)
                im = Image.open(src).convert("RGB")
                if scale > 1:
                    im = im.resize((im.width * scale, im.height * scale), Image.LANCZOS)
                im.save(path, quality=92)
                paths.append(path)
            reference = None
            for name, draft in (("none", None), ("1x", target), ("2x", 2 * target)):
                start = time.perf_counter()
                xs = [transform(load_image(p, draft_size=draft)) for p in paths]
                ms = (time.perf_counter() - start) / len(paths) * 1000
                with torch.inference_mode():
                    top1 = torch.cat(
                        [loaded.model(torch.stack(xs[i : i + 25])).argmax(-1) for i in range(0, len(xs), 25)]
                    ).tolist()
                correct = sum(int(labels[p.name]) == c for p, c in zip(paths, top1))
                reference = reference or top1
                same = sum(a == b for a, b in zip(reference, top1))
                size = Image.open(paths[0]).size
                print(f"{f'x{scale} {size[0]}x{size[1]}':>12} {name:>9} {correct:>5}% {same:>20}/100 {ms:>7.1f}")


if __name__ == "__main__":
    main()
