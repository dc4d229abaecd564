"""Multi-label fine-tuning: vitcli's default `vit finetune --multi-label` against a plain timm BCE loop, on
the same data, model and budget; then `vit predict` on the test mosaics (exact label-set accuracy).

The set is composed from the real images of ../shared/assets in a temporary folder (never in the repo):
2x2 mosaics of flowers12 photos at the model's 224 px (112 px tiles), each mosaic holding 1-3 species
(4 tiles), its labels the set of species in its tiles. Training and validation mosaics use disjoint
halves of flowers12's train/ images (50 and 10 per species), test mosaics its test/ images. Layout: the
CSV folder vitcli reads as multi-label (images/ + train.csv, val.csv, test.csv, header image,labels).

    vitcli   python -m vitcli finetune --multi-label --model M --dataset D --epochs E   (the default recipe
             otherwise: LP-FT's one-vs-rest probe, SGD, layer decay, selection and thresholds on val.csv),
             then `vit eval` (test mAP) and `vit predict` (label sets at the run's thresholds)
    plain    `plain_loop` below: timm model with a new head, timm's training transform, AdamW lr 1e-4,
             weight decay 0.05, 10 warmup steps then cosine, clip 1.0, batch 32, BCEWithLogitsLoss,
             the same number of steps; test mAP once at the end (the same AP as vitcli.eval.multilabel)

    python benchmarks/multilabel.py --assets ../shared/assets             # prints, and writes benchmarks/multilabel.txt
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's vitcli (its AP), not an installed one
TILE, SIZE = 112, 224
COUNTS = {"train": 256, "val": 64, "test": 120}


def compose(assets: Path, out: Path, seed: int = 0) -> list[str]:
    """images/ + train/val/test.csv of 2x2 flower mosaics; returns the species."""
    from PIL import Image

    rng = random.Random(seed)
    flowers = assets / "datasets" / "flowers12"
    species = sorted(d.name for d in (flowers / "train").iterdir() if d.is_dir())
    pools = {"train": {}, "val": {}, "test": {}}
    for s in species:
        train = sorted((flowers / "train" / s).glob("*.jpg"))
        rng.shuffle(train)
        pools["train"][s], pools["val"][s] = train[:50], train[50:]
        pools["test"][s] = sorted((flowers / "test" / s).glob("*.jpg"))
    (out / "images").mkdir(parents=True, exist_ok=True)
    for split, n in COUNTS.items():
        rows = ["image,labels"]
        for i in range(n):
            chosen = rng.sample(species, rng.choice((1, 2, 2, 3, 3)))
            tiles = chosen + [rng.choice(chosen) for _ in range(4 - len(chosen))]
            rng.shuffle(tiles)
            mosaic = Image.new("RGB", (SIZE, SIZE))
            for k, s in enumerate(tiles):
                photo = Image.open(rng.choice(pools[split][s])).convert("RGB").resize((TILE, TILE), Image.BICUBIC)
                mosaic.paste(photo, ((k % 2) * TILE, (k // 2) * TILE))
            name = f"{split}_{i:04d}.jpg"
            mosaic.save(out / "images" / name, quality=92)
            rows.append(f"{name},{' '.join(sorted(chosen))}")
        (out / f"{split}.csv").write_text("\n".join(rows) + "\n")
    return species


def read_split(data: Path, split: str):
    import csv

    with open(data / f"{split}.csv", newline="") as fh:
        return [(data / "images" / r["image"], r["labels"].split()) for r in csv.DictReader(fh)]


def plain_loop(model_dir: Path, data: Path, steps: int, seed: int = 0) -> dict:
    """The ~30-line timm BCE loop a user would write."""
    import numpy as np
    import timm
    import torch
    from PIL import Image
    from timm.data import create_transform, resolve_data_config
    from timm.optim import create_optimizer_v2
    from timm.scheduler import CosineLRScheduler

    from vitcli.eval.multilabel import mean_ap, per_class_ap

    torch.manual_seed(seed)
    train, test = read_split(data, "train"), read_split(data, "test")
    classes = sorted({c for _, labels in train for c in labels})

    class Set(torch.utils.data.Dataset):
        def __init__(self, rows, tf):
            self.rows, self.tf = rows, tf

        def __len__(self):
            return len(self.rows)

        def __getitem__(self, i):
            path, labels = self.rows[i]
            y = torch.tensor([float(c in labels) for c in classes])
            return self.tf(Image.open(path).convert("RGB")), y

    model = timm.create_model(f"local-dir:{model_dir}", pretrained=True, num_classes=len(classes))
    cfg = resolve_data_config({}, model=model)
    train_tf = create_transform(
        **cfg, is_training=True, scale=(0.25, 1.0), hflip=0.5, color_jitter=None, auto_augment=None
    )
    loader = torch.utils.data.DataLoader(Set(train, train_tf), batch_size=32, shuffle=True, drop_last=True)
    optimizer = create_optimizer_v2(model, "adamw", lr=1e-4, weight_decay=0.05)
    scheduler = CosineLRScheduler(optimizer, t_initial=steps - 10, warmup_t=10, warmup_prefix=True, t_in_epochs=False)
    criterion, step = torch.nn.BCEWithLogitsLoss(), 0
    model.train()
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
    scores, targets = [], []
    with torch.inference_mode():
        for x, y in torch.utils.data.DataLoader(Set(test, create_transform(**cfg)), batch_size=64):
            scores.append(model(x).sigmoid().numpy())
            targets.append(y.numpy())
    return {
        "steps": step,
        "test_mAP": round(100 * mean_ap(per_class_ap(np.concatenate(scores), np.concatenate(targets))), 2),
    }


def vit(*args: str, log: Path | None = None) -> dict | list:
    """`python -m vitcli ARGS --json` from the repo: its JSON output (one object, or a list of lines); its
    stderr appended to `log`."""
    done = subprocess.run(
        [sys.executable, "-m", "vitcli", *args, "--json"], cwd=REPO, capture_output=True, text=True, check=False
    )
    if log is not None:
        with open(log, "a") as fh:
            fh.write(f"$ vit {' '.join(args)} --json\n{done.stderr}{done.stdout}\n")
    if done.returncode != 0:
        sys.exit(f"vit {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    return lines[0] if len(lines) == 1 and args[0] != "predict" else lines


def load() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", type=Path, default=REPO.parent / "shared" / "assets")
    parser.add_argument("--epochs", type=float, default=4)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "multilabel.txt"), help="'-': print only")
    parser.add_argument(
        "--work",
        type=Path,
        help="keep the mosaics, the run folder and the commands' output here (default: a temporary folder, removed)",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="with --work: reuse what an earlier, time-boxed run left there (a finished run folder, "
        "plain.json) instead of measuring it again; the output says which",
    )
    args = parser.parse_args()
    model = args.assets / "models" / "vit_tiny_patch16_224.augreg_in21k_ft_in1k"
    started, load_before = time.time(), load()
    lines = [
        f"# benchmarks/multilabel.py, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        (
            f"# machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; Python "
            f"{platform.python_version()}"
        ),
        f"# load average (1/5/15 min) before: {load_before}",
    ]
    with tempfile.TemporaryDirectory(prefix="vit-multilabel-") as temp:
        work = args.work or Path(temp)
        data = work / "flower-mosaics"
        reused = []
        species = (
            compose(args.assets, data)
            if not (args.keep and (data / "test.csv").is_file())
            else sorted(d.name for d in (args.assets / "datasets" / "flowers12" / "train").iterdir() if d.is_dir())
        )
        lines.append(
            f"# data: 2x2 mosaics of flowers12 ({len(species)} species, 1-3 per mosaic) at {SIZE} px: "
            + ", ".join(f"{k} {v}" for k, v in COUNTS.items())
        )
        env_cache = {"VIT_CACHE": str(work / "cache")}  # an empty cache: the probe's features are computed
        os.environ.update(env_cache)
        t = time.time()
        log = work / "commands.log"
        done = (
            [json.loads(p.read_text()) for p in sorted((work / "runs").glob("finetune/*/run.json"))]
            if args.keep
            else []
        )
        done = [r for r in done if r.get("status") == "finished"]
        if done:
            summary, vit_s = done[-1]["summary"], done[-1]["summary"]["seconds"]
            reused.append(f"the finished run {summary['run_dir']} ({vit_s:.0f} s: its own time)")
        else:
            summary = vit(
                "finetune",
                "--multi-label",
                "--model",
                str(model),
                "--dataset",
                str(data),
                "--epochs",
                str(args.epochs),
                "--project",
                str(work / "runs"),
                log=log,
            )
            vit_s = time.time() - t
        run = summary["run_dir"]
        evaluated = vit("eval", "--model", run, "--dataset", str(data), "--out-dir", str(work / "eval"), log=log)
        truth = {p.name: set(labels) for p, labels in read_split(data, "test")}
        (work / "test.txt").write_text("".join(f"{p}\n" for p, _ in read_split(data, "test")))
        predicted = vit("predict", "--model", run, "--list", str(work / "test.txt"), "--batch-size", "64", log=log)
        sets = {Path(p["path"]).name: {q["label"] for q in p["predictions"]} for p in predicted}
        exact = sum(sets[name] == labels for name, labels in truth.items())
        kept = work / "plain.json"
        if args.keep and kept.is_file() and json.loads(kept.read_text())["steps"] == summary["steps"]:
            plain = json.loads(kept.read_text())
            plain_s = plain["seconds"]
            reused.append(
                f"plain.json (the same plain_loop on the same mosaics, in another process: "
                f"{plain.get('note') or ''}; load {plain.get('load_before')} -> {plain.get('load_after')})"
            )
        else:
            t = time.time()
            plain = plain_loop(model, data, summary["steps"])
            plain_s = time.time() - t
    ratio = evaluated["mAP"] / plain["test_mAP"]
    lines += [f"# reused (--keep): {r}" for r in reused]
    lines += [
        f"# load average after: {load()}; {(time.time() - started) / 60:.1f} min in all",
        "",
        "| method | steps | test mAP | micro F1 | exact label sets | seconds |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        (
            f"| vitcli finetune --multi-label (default recipe) | {summary['steps']} | {evaluated['mAP']:.2f} | "
            f"{evaluated['micro_f1']:.2f} | {exact}/{len(truth)} ({100 * exact / len(truth):.1f} %) | {vit_s:.0f} |"
        ),
        f"| plain timm BCE loop (AdamW 1e-4) | {plain['steps']} | {plain['test_mAP']:.2f} | - | - | {plain_s:.0f} |",
        "",
        (
            f"test mAP vitcli / plain: {ratio:.3f} ({evaluated['mAP'] - plain['test_mAP']:+.2f} points); "
            f"vit predict gives the exact label set for {exact} of {len(truth)} test mosaics; "
            f"val mAP (best) {summary.get('val_mAP')}, probe {summary.get('probe')}"
        ),
    ]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.out != "-":
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
