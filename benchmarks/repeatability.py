"""Issue 23's acceptance, on the real assets: one `vit predict --json` over the 100 ImageNet val images,
run three times with `vit download` and `vit export` in between, prints identical answers; and
`vit predict` and `vit eval` agree on every image's top-1 at the default precision.

The model is served from the local Hub (tests/hubserver.py) under its timm name, as a user's first
download would get it. Each command runs as a fresh process (`python -m vitcli`), with its own empty
vitcli cache and Hugging Face cache.

    python benchmarks/repeatability.py [--assets ../shared/assets] > benchmarks/repeatability.txt
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
NAME = "vit_tiny_patch16_224.augreg_in21k_ft_in1k"


def vit(*args, env) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "vitcli", *args], cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"vit {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    return done


def header(stderr: str) -> str:
    return next((line for line in stderr.splitlines() if " on " in line), "").strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", type=Path, default=ROOT.parent / "shared" / "assets")
    args = parser.parse_args()
    from tests.hubserver import LocalHub

    images = args.assets / "images" / "imagenet-val-100" / "images"
    labels = args.assets / "images" / "imagenet-val-100" / "labels.txt"
    model_dir = args.assets / "models" / NAME
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}, {os.uname().machine}, load {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp, LocalHub({f"timm/{NAME}": model_dir}) as hub:
        env = {
            **os.environ,
            "HF_ENDPOINT": hub.endpoint,
            "HF_HOME": f"{tmp}/hf",
            "VIT_CACHE": f"{tmp}/vit",
            "VIT_PROGRESS": "0",
        }
        env.pop("VIT_BACKEND", None)
        env.pop("VIT_COMPILE", None)
        predict = ["predict", "--model", NAME, "--json", "-k", "5", str(images)]
        runs, headers = [], []
        for step in ("first run", "after vit download", "after vit export"):
            if step == "after vit download":
                print(
                    "$ vit download",
                    NAME,
                    "->",
                    json.loads(vit("download", NAME, "--json", env=env).stdout)["fast_start"],
                )
            if step == "after vit export":
                vit("export", "--model", NAME, "-o", f"{tmp}/m.onnx", env=env)
                print(f"$ vit export --model {NAME} -o m.onnx")
            done = vit(*predict, env=env)
            runs.append(done.stdout)
            headers.append(header(done.stderr))
            print(f"{step}: {len(done.stdout.splitlines())} lines, header: {headers[-1]}")
        identical = runs[0] == runs[1] == runs[2]
        print(f"three predict runs print identical answers: {identical}")

        out_dir = Path(tmp) / "eval"
        done = vit(
            "eval",
            "--model",
            NAME,
            "--data",
            str(images),
            "--labels",
            str(labels),
            "--json",
            "--out-dir",
            str(out_dir),
            env=env,
        )
        summary = json.loads(done.stdout)
        print(
            f"eval: top-1 {summary['top1']:.2f} %, backend {summary['backend']}, device {summary['device']}, "
            f"precision {summary['precision']}, accel {summary['accel']}"
        )
        predicted = {Path(r["path"]).name: r["predictions"][0]["index"] for r in map(json.loads, runs[0].splitlines())}
        rows = (out_dir / "predictions.csv").read_text().splitlines()[1:]
        evaluated = {Path(r.split(",")[0]).name: int(r.split(",")[2]) for r in rows}
        agree = sum(predicted[name] == evaluated.get(name) for name in predicted)
        print(f"predict and eval agree on top-1: {agree}/{len(predicted)}")
        ok = identical and agree == len(predicted) == 100
        print("PASS" if ok else "FAIL")
        sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
