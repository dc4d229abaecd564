"""The plain timm fine-tuning loop a user would otherwise write (the baseline for `vit finetune` in
benchmarks/bench_commands.py): timm model with a new head, timm's optimizer factory and training
transform, torchvision ImageFolder, the same recipe as `vit finetune --recipe quick` (SGD momentum 0.9,
no weight decay, clip 1.0, warmup + cosine, RandomResizedCrop 25-100 % + flip), one evaluation on val/ at
the end. Prints one JSON line: steps, training img/s (loop only), val top-1, seconds.

    python benchmarks/timm_finetune.py --model vit_tiny_patch16_224.augreg_in21k_ft_in1k --data hymenoptera
"""

import argparse
import json
import time

import timm
import torch
from timm.data import create_transform, resolve_data_config
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler
from torchvision.datasets import ImageFolder


def main():
    parser = argparse.ArgumentParser(description="fine-tune a timm model on an ImageFolder")
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True, help="folder with train/ and val/ class folders")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    start = time.time()

    train_set = ImageFolder(f"{args.data}/train")
    model = timm.create_model(args.model, pretrained=True, num_classes=len(train_set.classes))
    cfg = resolve_data_config({}, model=model)
    train_set.transform = create_transform(
        **cfg, is_training=True, scale=(0.25, 1.0), hflip=0.5, color_jitter=None, auto_augment=None
    )
    val_set = ImageFolder(f"{args.data}/val", transform=create_transform(**cfg))
    loader = torch.utils.data.DataLoader(
        train_set, batch_size=args.batch_size, shuffle=True, drop_last=True, num_workers=args.workers
    )
    optimizer = create_optimizer_v2(model, "momentum", lr=args.lr, momentum=0.9, weight_decay=0.0)
    scheduler = CosineLRScheduler(
        optimizer, t_initial=args.steps - args.warmup, warmup_t=args.warmup, warmup_prefix=True, t_in_epochs=False
    )
    criterion = torch.nn.CrossEntropyLoss()

    model.train()
    step, images, train_seconds = 0, 0, 0.0
    while step < args.steps:
        t0 = time.time()
        for x, y in loader:
            loss = criterion(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            step += 1
            scheduler.step_update(step)
            images += len(y)
            print(f"step {step} loss {loss.item():.4f}", flush=True)
            train_seconds += time.time() - t0
            t0 = time.time()
            if step == args.steps:
                break

    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in torch.utils.data.DataLoader(val_set, batch_size=2 * args.batch_size, num_workers=args.workers):
            correct += (model(x).argmax(-1) == y).sum().item()
            total += len(y)
    print(
        json.dumps(
            {
                "steps": step,
                "img_s": round(images / train_seconds, 2),
                "val_top1": round(100 * correct / total, 2),
                "seconds": round(time.time() - start, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
