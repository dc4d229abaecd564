"""The plain timm/torchvision loops a user would write instead of `vit finetune` / `vit train`, and the
backbone's linear probe: the baselines of benchmarks/recipes.py. One JSON line on stdout.

    finetune  timm model with a new head (timm's init), torchvision ImageFolder, timm's training
              transform (random-resized crop 25-100 % + flip, as benchmarks/timm_finetune.py), SGD
              momentum 0.9, lr 0.01, no weight decay, 10 warmup steps then cosine, clip 1.0, batch 32
    scratch   the 30-line loop of the issue: AdamW lr 1e-3, weight decay 0.1, batch 64, 10 warmup steps
              then linear decay, clip 1.0, no augmentation (the eval transform for training too)
    probe     frozen pre-logit features (eval transform) -> scikit-learn LogisticRegressionCV on
              standardised features (C from 10 values by stratified k-fold on the training split)

Every loop trains on all of train/ and reports top-1 on test/ once, at the end.

    python benchmarks/plain_loop.py finetune --model local-dir:M --data D --steps 110
    python benchmarks/plain_loop.py scratch --model vit_tiny_patch16_224 --img-size 16 --patch-size 4 --data D --epochs 2
"""

import argparse
import json
import math
import time

import timm
import torch
from timm.data import create_transform, resolve_data_config
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler, PolyLRScheduler
from torchvision.datasets import ImageFolder


def features(model, dataset, batch_size=64):
    xs, ys = [], []
    with torch.inference_mode():
        for x, y in torch.utils.data.DataLoader(dataset, batch_size=batch_size):
            xs.append(model.forward_head(model.forward_features(x), pre_logits=True))
            ys.append(y)
    return torch.cat(xs).numpy(), torch.cat(ys).numpy()


def probe(args, start):
    import numpy as np
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.preprocessing import StandardScaler

    model = timm.create_model(args.model, pretrained=True).eval()
    tf = create_transform(**resolve_data_config({}, model=model))
    x, y = features(model, ImageFolder(f"{args.data}/train", transform=tf))
    xt, yt = features(model, ImageFolder(f"{args.data}/test", transform=tf))
    scaler = StandardScaler().fit(x)
    folds = int(min(5, np.bincount(y).min()))
    clf = LogisticRegressionCV(Cs=10, cv=folds, max_iter=5000).fit(scaler.transform(x), y)
    top1 = 100 * float((clf.predict(scaler.transform(xt)) == yt).mean())
    print(
        json.dumps(
            {
                "test_top1": round(top1, 2),
                "C": float(clf.C_[0]),
                "folds": folds,
                "seconds": round(time.time() - start, 1),
            }
        )
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("finetune", "scratch", "probe"))
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True, help="folder with train/ and test/ class folders")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--epochs", type=float)
    parser.add_argument("--img-size", type=int)
    parser.add_argument("--patch-size", type=int)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start = time.time()
    torch.manual_seed(args.seed)
    if args.mode == "probe":
        return probe(args, start)

    train_set = ImageFolder(f"{args.data}/train")
    classes = len(train_set.classes)
    if args.mode == "finetune":
        model = timm.create_model(args.model, pretrained=True, num_classes=classes)
        cfg = resolve_data_config({}, model=model)
        train_set.transform = create_transform(
            **cfg, is_training=True, scale=(0.25, 1.0), hflip=0.5, color_jitter=None, auto_augment=None
        )
        batch, warmup = 32, 10
    else:
        model = timm.create_model(args.model, num_classes=classes, img_size=args.img_size, patch_size=args.patch_size)
        cfg = resolve_data_config({"input_size": (3, args.img_size, args.img_size)}, model=model)
        train_set.transform = create_transform(**cfg)
        batch, warmup = 64, 10
    test_set = ImageFolder(f"{args.data}/test", transform=create_transform(**cfg))
    loader = torch.utils.data.DataLoader(train_set, batch_size=batch, shuffle=True, drop_last=True)
    steps = args.steps or math.ceil(args.epochs * len(loader))
    if args.mode == "finetune":  # as vitcli's probe-cut budget: a tenth of a short run (10 from 100 steps)
        warmup = min(warmup, max(1, steps // 10))
    if args.mode == "finetune":
        optimizer = create_optimizer_v2(model, "momentum", lr=0.01, momentum=0.9, weight_decay=0.0)
        scheduler = CosineLRScheduler(
            optimizer, t_initial=steps - warmup, warmup_t=warmup, warmup_prefix=True, t_in_epochs=False
        )
    else:
        optimizer = create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.1)
        scheduler = PolyLRScheduler(
            optimizer, t_initial=steps - warmup, warmup_t=warmup, warmup_prefix=True, power=1.0, t_in_epochs=False
        )
    criterion = torch.nn.CrossEntropyLoss()

    model.train()
    step = 0
    while step < steps:
        for x, y in loader:
            loss = criterion(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            step += 1
            scheduler.step_update(step)
            if step == steps:
                break

    model.eval()
    correct = total = 0
    with torch.inference_mode():
        for x, y in torch.utils.data.DataLoader(test_set, batch_size=2 * batch):
            correct += (model(x).argmax(-1) == y).sum().item()
            total += len(y)
    print(
        json.dumps(
            {"steps": step, "test_top1": round(100 * correct / total, 2), "seconds": round(time.time() - start, 1)}
        )
    )


if __name__ == "__main__":
    main()
