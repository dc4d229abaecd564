"""The plain timm script a user would otherwise write for `vit predict` (the baseline that
benchmarks/bench_commands.py times against): imports at the top, timm's model, timm's eval transform,
PIL decode, batches of --batch-size, top-k labels as JSON lines.

    python benchmarks/timm_predict.py --model vit_tiny_patch16_224.augreg_in21k_ft_in1k cat.jpg photos/
"""

import argparse
import json
from pathlib import Path

import timm
import torch
from PIL import Image
from timm.data import ImageNetInfo, create_transform, infer_imagenet_subset, resolve_data_config

EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def main():
    parser = argparse.ArgumentParser(description="top-k ImageNet labels with timm")
    parser.add_argument("inputs", nargs="+", help="image files or folders")
    parser.add_argument("--model", required=True, help="timm name, hf-hub:org/name or local-dir:PATH")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--top-k", type=int, default=5)
    args = parser.parse_args()

    model = timm.create_model(args.model, pretrained=True).eval()
    transform = create_transform(**resolve_data_config({}, model=model))
    info = ImageNetInfo(infer_imagenet_subset(model) or "imagenet-1k")
    paths = []
    for item in map(Path, args.inputs):
        paths += sorted(p for p in item.rglob("*") if p.suffix.lower() in EXTENSIONS) if item.is_dir() else [item]

    with torch.no_grad():
        for start in range(0, len(paths), args.batch_size):
            chunk = paths[start : start + args.batch_size]
            batch = torch.stack([transform(Image.open(p).convert("RGB")) for p in chunk])
            probs = model(batch).softmax(dim=-1)
            scores, classes = probs.topk(args.top_k, dim=-1)
            for path, srow, crow in zip(chunk, scores.tolist(), classes.tolist()):
                print(
                    json.dumps(
                        {
                            "path": str(path),
                            "predictions": [
                                {"label": info.index_to_description(c), "index": c, "score": round(s, 6)}
                                for s, c in zip(srow, crow)
                            ],
                        }
                    )
                )


if __name__ == "__main__":
    main()
