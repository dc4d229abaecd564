"""Time whole `vit` commands against the plain timm scripts a user would otherwise write.

Each pair runs alternately (A B B A A B ...) in fresh processes, so that a machine whose load drifts
slows both alike; the report gives medians, the ratio of medians, and the load average around the run.

  help        `vit --help`                               vs  `python timm_predict.py --help`
  predict-1   `vit predict --model M one.jpg`            vs  `python timm_predict.py --model M one.jpg`
  predict-500 `vit predict --model M folder/ --json`     vs  `python timm_predict.py --model M folder/`
  finetune    `vit finetune --model M --dataset D ...`   vs  `python timm_finetune.py --model M --data D ...`

M is the ViT-Ti of ../shared/assets served by a local Hub (tests/hubserver.py) as the repo
timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k and downloaded once into a temporary HF cache (so
both sides load cached weights; HF_HUB_OFFLINE=1 during the timed runs, for both). The 500 JPEGs are
made at run time from the 100 val images (5 variants each: re-encoded at two qualities, flipped,
cropped) in a temporary folder. D is ../shared/assets/datasets/hymenoptera.

    python benchmarks/bench_commands.py                  # everything, writes benchmarks/RESULTS.md
    python benchmarks/bench_commands.py --only help predict-1 --repeats 3 --out -
    python benchmarks/bench_commands.py --precision fp32 --out benchmarks/RESULTS_fp32.md  # no native bf16

vit is `python -m vitcli` run in this checkout (its vitcli, not an installed `vit`), with the precision
`--precision auto` picks on this machine unless --precision is given (the report names it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
MODEL_NAME = "vit_tiny_patch16_224.augreg_in21k_ft_in1k"
TASKS = ("help", "predict-1", "predict-1-onnx", "predict-500", "finetune")


def sh(cmd: list[str], env: dict, stdout=subprocess.DEVNULL, check: bool = True, timeout: float = 900, cwd=REPO):
    """Run a command; (seconds, stdout text or None, stderr text)."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=timeout)
    seconds = time.perf_counter() - start
    if check and proc.returncode != 0:
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return seconds, proc.stdout if stdout is subprocess.PIPE else None, proc.stderr


def loadavg() -> str:
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_jpegs(val_dir: Path, out: Path, n_variants: int = 5) -> list[Path]:
    """5 variants of each val image: re-encoded (q90, q75), mirrored, 90 % center crop, mirrored crop."""
    from PIL import Image, ImageOps

    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for src in sorted(val_dir.iterdir()):
        im = Image.open(src).convert("RGB")
        w, h = im.size
        crop = im.crop((w // 20, h // 20, w - w // 20, h - h // 20))
        variants = [(im, 90), (im, 75), (ImageOps.mirror(im), 90), (crop, 90), (ImageOps.mirror(crop), 85)]
        for i, (variant, quality) in enumerate(variants[:n_variants]):
            path = out / f"{src.stem}_{i}.jpg"
            variant.save(path, quality=quality)
            paths.append(path)
    return paths


def start_hub(assets: Path, env: dict) -> subprocess.Popen | None:
    server = REPO / "tests" / "hubserver.py"
    if not server.is_file():
        return None
    port = free_port()
    folder = assets / "models" / MODEL_NAME
    proc = subprocess.Popen(
        [sys.executable, str(server), "--repo", f"timm/{MODEL_NAME}={folder}", "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            env["HF_ENDPOINT"] = f"http://127.0.0.1:{port}"
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    return None


BEFORE: Path | None = None  # --before DIR: another checkout's vitcli, timed as a third side in the same run


def alternate(name: str, a: list[str], b: list[str], env: dict, repeats: int, parse=None) -> dict:
    """ABBA... timing of two commands (three with --before: the same vit command run in that checkout);
    `parse(side, stdout, stderr) -> dict` collects figures a command prints."""
    sides = [("vit", a, REPO), ("timm", b, REPO)]
    if BEFORE is not None and a[:3] == [sys.executable, "-m", "vitcli"]:
        old = [x for i, x in enumerate(a) if x != "--backend" and (i == 0 or a[i - 1] != "--backend")]
        sides.append(("before", old, BEFORE))  # before --backend existed, the copy was picked by itself
    times = {side: [] for side, _, _ in sides}
    extra = {side: [] for side, _, _ in sides}
    for i in range(repeats):
        order = sides if i % 2 == 0 else sides[::-1]
        for side, cmd, cwd in order:
            seconds, out, err = sh(cmd, env, stdout=subprocess.PIPE if parse else subprocess.DEVNULL, cwd=cwd)
            times[side].append(seconds)
            if parse:
                extra[side].append(parse(side, out, err))
        print(
            f"  {name} {i + 1}/{repeats}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()),
            file=sys.stderr,
            flush=True,
        )
    result = {"name": name, **times, **{f"{k}_median": statistics.median(v) for k, v in times.items()}}
    if parse:
        result["extra"] = extra
    return result


def last_json(text: str) -> dict:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return {}


def throughput(stderr: str) -> dict:
    """vit predict's last line: 'N images: model X img/s, loader Y img/s (W workers)'."""
    import re

    m = re.search(r"model ([\d.]+) img/s, loader ([\d.]+) img/s \((\d+) worker", stderr or "")
    return (
        {"model_img_s": float(m.group(1)), "loader_img_s": float(m.group(2)), "workers": int(m.group(3))} if m else {}
    )


def loader_throughput(dataset: Path, env: dict, batches: int = 6) -> float:
    """img/s of `vit finetune`'s training data pipeline alone (decode + augment + collate), same workers."""
    code = f"""
import time, json
from vitcli.data.datasets import open_dataset
from vitcli.data.loader import default_workers, make_loader
from vitcli.data.transforms import train_transform
from vitcli.models.resolver import load_model
from vitcli.train.run.config import resolve
cfg = resolve("finetune", {{"dataset": {str(dataset)!r}, "model": "{MODEL_NAME}", "recipe": "quick"}})
loaded = load_model(cfg.model)
src = open_dataset(cfg.dataset)
ds = src.subset("train", train_transform(loaded.data_config, crop_scale=cfg.crop_scale, hflip=cfg.hflip),
                augment_seed=0)
workers = default_workers(len(ds))  # CPU
loader = make_loader(ds, batch_size=cfg.batch_size, shuffle=True, drop_last=True, workers=workers)
it = iter(loader); next(it)
t = time.perf_counter(); n = 0
for _ in range({batches}):
    b = next(it); n += len(b.labels)
print(json.dumps({{"img_s": n / (time.perf_counter() - t), "workers": workers}}))
"""
    _, out, _ = sh([sys.executable, "-c", code], env, stdout=subprocess.PIPE)
    return last_json(out)["img_s"]


def cpu() -> tuple[str, set]:
    """The CPU's model name and its flags, as /proc/cpuinfo says (the platform's name, no flags, elsewhere)."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        info = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return name, flags
    name = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), name)
    flags = next((set(line.split(":", 1)[1].split()) for line in info if line.startswith("flags")), set())
    return name, flags


def machine() -> str:
    name, flags = cpu()
    simd = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    import importlib.metadata as md

    versions = ", ".join(f"{p} {md.version(p)}" for p in ("torch", "timm", "torchvision", "pillow"))
    return f"{name} ({', '.join(simd) or 'no AVX2'}), {os.cpu_count()} cores; Python {platform.python_version()}; {versions}"


def native_bf16() -> bool:
    """Whether this CPU has native bf16 (AMX or avx512_bf16)."""
    return bool({"amx_bf16", "avx512_bf16"} & cpu()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", type=Path, default=REPO.parent / "shared" / "assets")
    parser.add_argument("--repeats", type=int, default=5, help="runs per side (finetune: --ft-repeats)")
    parser.add_argument("--ft-repeats", type=int, default=3)
    parser.add_argument("--ft-steps", type=int, default=8)
    parser.add_argument("--only", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--out", default=str(HERE / "RESULTS.md"), help="report file ('-': stdout only)")
    parser.add_argument(
        "--before",
        type=Path,
        default=None,
        help="another checkout (e.g. a git worktree of the previous commit): its `python -m vitcli` "
        "is timed as a third side of every vit command, in the same run",
    )
    parser.add_argument(
        "--precision",
        default=None,
        help="pass --precision to vit predict / finetune (fp32: vitcli as on a CPU without native bf16)",
    )
    args = parser.parse_args()
    global BEFORE
    BEFORE = args.before.resolve() if args.before else None

    assets = args.assets.resolve()
    if not (assets / "models" / MODEL_NAME / "model.safetensors").is_file():
        raise SystemExit(f"{assets} does not hold the assets (models/{MODEL_NAME})")
    vit = [sys.executable, "-m", "vitcli"]  # run in REPO: this checkout's vitcli, never an installed `vit`
    py = sys.executable
    prec = ["--precision", args.precision] if args.precision else []

    tmp = Path(tempfile.mkdtemp(prefix="vitbench-"))
    env = {
        **os.environ,
        "HF_HOME": str(tmp / "hf"),
        "VIT_CACHE": str(tmp / "vit"),
        "VIT_PROGRESS": "0",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "PYTHONWARNINGS": "ignore",
    }
    for key in ("HF_HUB_OFFLINE", "HF_HUB_CACHE", "VIT_EXPORT"):
        env.pop(key, None)
    hub = start_hub(assets, env)
    lines: list[str] = []
    try:
        if hub is not None:
            model_vit = model_timm = MODEL_NAME
            # into the temporary HF cache through the local Hub, with the fast-start ONNX copy
            prepare, _, _ = sh(vit + ["download", MODEL_NAME], env)
            served = f"served by a local Hub (tests/hubserver.py) as timm/{MODEL_NAME}, cached beforehand"
            prepared = f"`vit download {MODEL_NAME}` (weights + the fast-start ONNX copy)"
        else:
            folder = str(assets / "models" / MODEL_NAME)
            model_vit, model_timm = folder, f"local-dir:{folder}"
            served = f"loaded from the local folder {folder} (tests/hubserver.py not found)"
            prepare, _, _ = sh(vit + ["export", "--model", folder, "-o", str(tmp / "model.onnx")], env)
            prepared = "`vit export` of the folder (which also makes its fast-start copy)"
        env["HF_HUB_OFFLINE"] = "1"  # both sides: cached weights, no network

        one = sorted((assets / "images" / "imagenet-val-100" / "images").iterdir())[0]
        folder500 = tmp / "jpegs500"
        n_jpegs = len(make_jpegs(assets / "images" / "imagenet-val-100" / "images", folder500))
        dataset = assets / "datasets" / "hymenoptera"

        # the first run with the model (its header names what serves it and in which precision), warming
        # the file cache; not in the medians
        _, _, first_err = sh(vit + ["predict", "--model", model_vit, str(one)] + prec, env)
        header = next((line for line in first_err.splitlines() if " on " in line), "")
        _, where, _ = sh([py, "-c", "import vitcli; print(vitcli.__file__)"], env, stdout=subprocess.PIPE)
        sh([py, str(HERE / "timm_predict.py"), "--model", model_timm, str(one)], env)  # warm the file cache

        load_before = loadavg()
        started = time.time()
        results = []
        if "help" in args.only:
            results.append(
                alternate("help", vit + ["--help"], [py, str(HERE / "timm_predict.py"), "--help"], env, args.repeats)
            )
        if "predict-1" in args.only:
            results.append(
                alternate(
                    "predict-1",
                    vit + ["predict", "--model", model_vit, str(one)] + prec,
                    [py, str(HERE / "timm_predict.py"), "--model", model_timm, str(one)],
                    env,
                    args.repeats,
                )
            )
        if "predict-1-onnx" in args.only:  # the fast start, asked for (the default is the torch model)
            results.append(
                alternate(
                    "predict-1-onnx",
                    vit + ["predict", "--model", model_vit, str(one), "--backend", "onnx"],
                    [py, str(HERE / "timm_predict.py"), "--model", model_timm, str(one)],
                    env,
                    args.repeats,
                )
            )
        if "predict-500" in args.only:
            results.append(
                alternate(
                    "predict-500",
                    vit + ["predict", "--model", model_vit, str(folder500), "--json", "-b", "32"] + prec,
                    [py, str(HERE / "timm_predict.py"), "--model", model_timm, str(folder500), "--batch-size", "32"],
                    env,
                    max(3, args.repeats - 2),
                    parse=lambda side, out, err: throughput(err),
                )
            )
        loader_img_s = None
        if "finetune" in args.only:
            steps = str(args.ft_steps)
            results.append(
                alternate(
                    "finetune",
                    vit
                    + [
                        "finetune",
                        "--model",
                        model_vit,
                        "--dataset",
                        str(dataset),
                        "--steps",
                        steps,
                        "--batch-size",
                        "32",
                        "--eval-every",
                        steps,
                        "--json",
                        "--project",
                        str(tmp / "runs"),
                    ]
                    + prec,
                    [
                        py,
                        str(HERE / "timm_finetune.py"),
                        "--model",
                        model_timm,
                        "--data",
                        str(dataset),
                        "--steps",
                        steps,
                        "--batch-size",
                        "32",
                    ],
                    env,
                    args.ft_repeats,
                    parse=lambda side, out, err: last_json(out),
                )
            )
            loader_img_s = loader_throughput(dataset, env)
        load_after = loadavg()
        minutes = (time.time() - started) / 60

        lines += [
            "# Whole-command timings: vit vs the plain timm script",
            "",
            f"Produced by `python benchmarks/bench_commands.py` on {time.strftime('%Y-%m-%d %H:%M')}, "
            f"{minutes:.1f} min.",
            f"Machine: {machine()}.",
            f"Load average (1/5/15 min) before: {load_before}; after: {load_after}. "
            "The machine was shared with other jobs; each pair ran alternately, so both sides saw the same load.",
            f"Model: ViT-Ti/16 ({MODEL_NAME}), {served}; HF_HUB_OFFLINE=1 for both sides.",
            f"Prepared once by {prepared}: {prepare:.1f} s (not in the medians).",
            f"vit = `python -m vitcli` run in {REPO} (vitcli imported from {where.strip()}); its header: "
            f"`{header.strip()}` ("
            + (f"`--precision {args.precision}` given" if args.precision else "what `--precision auto` chose here")
            + ").",
            "",
            "| task | vit median (s) | timm median (s) | vit / timm time | speed-up | target | runs per side |"
            + (" before median (s) | before / timm time |" if BEFORE else ""),
            "| --- | ---: | ---: | ---: | ---: | --- | ---: |" + (" ---: | ---: |" if BEFORE else ""),
        ]
        if BEFORE:
            lines.insert(
                -2,
                f"before = `python -m vitcli` run in {BEFORE}, alternating with the two others. The "
                "before side's predict-1 with --backend onnx is its default predict (it picked the "
                "fast-start copy by itself).",
            )
        folder_target = 2.5 if native_bf16() else 1.25  # a CPU with native bf16: issue 15's 2.5x
        targets = {
            "help": ("vit median <= 0.3 s", lambda r: r["vit_median"] <= 0.3),
            "predict-1": ("(the torch model, default)", None),
            "predict-1-onnx": ("vit / timm time <= 0.2", lambda r: r["vit_median"] / r["timm_median"] <= 0.2),
            "predict-500": (
                f"speed-up >= {folder_target}x",
                lambda r: r["timm_median"] / r["vit_median"] >= folder_target,
            ),
            "finetune": ("training img/s >= 1.0x (below)", None),
        }
        labels = {
            "help": "`--help`",
            "predict-1": "predict, 1 image (cold process)",
            "predict-1-onnx": "predict, 1 image, `--backend onnx` (cold process)",
            "predict-500": f"predict, {n_jpegs} JPEGs, batch 32",
            "finetune": f"finetune, {args.ft_steps} steps of 32 + 1 eval (wall)",
        }
        for r in results:
            target, check = targets[r["name"]]
            verdict = "" if check is None else (" (met)" if check(r) else " (NOT met)")
            lines.append(
                f"| {labels[r['name']]} | {r['vit_median']:.2f} | {r['timm_median']:.2f} | "
                f"{r['vit_median'] / r['timm_median']:.2f} | {r['timm_median'] / r['vit_median']:.2f}x | "
                f"{target}{verdict} | {len(r['vit'])} |"
                + (
                    f" {r['before_median']:.2f} | {r['before_median'] / r['timm_median']:.2f} |"
                    if "before_median" in r
                    else (" | |" if BEFORE else "")
                )
            )
        p500 = next((r for r in results if r["name"] == "predict-500"), None)
        if p500 is not None and all(e for e in p500["extra"]["vit"]):
            model = [e["model_img_s"] for e in p500["extra"]["vit"]]
            loader = [e["loader_img_s"] for e in p500["extra"]["vit"]]
            lines += [
                "",
                f"`vit predict` over the {n_jpegs} JPEGs, as it reports itself (median of the runs): model "
                f"{statistics.median(model):.1f} img/s, loader {statistics.median(loader):.1f} img/s "
                f"({p500['extra']['vit'][0]['workers']} workers; with none the loader is the decoding and "
                "transforming in the main process, on the model's cores).",
            ]
        ft = next((r for r in results if r["name"] == "finetune"), None)
        if ft is not None:
            vit_img_s = [e.get("img_s") for e in ft["extra"]["vit"]]
            timm_img_s = [e.get("img_s") for e in ft["extra"]["timm"]]
            ratio = statistics.median(vit_img_s) / statistics.median(timm_img_s)
            lines += [
                "",
                f"Fine-tuning throughput (training loop only, as each reports it; {args.ft_steps} steps of 32, "
                "same data, batch, workers and threads):",
                "",
                "| loop | img/s (median) | runs | val top-1 (%) |",
                "| --- | ---: | --- | --- |",
                f"| vit finetune | {statistics.median(vit_img_s):.2f} | {', '.join(f'{x:.2f}' for x in vit_img_s)} | "
                f"{', '.join(str(e.get('val_top1')) for e in ft['extra']['vit'])} |",
                f"| timm loop | {statistics.median(timm_img_s):.2f} | {', '.join(f'{x:.2f}' for x in timm_img_s)} | "
                f"{', '.join(str(e.get('val_top1')) for e in ft['extra']['timm'])} |",
                "",
                f"vit / timm training img/s: **{ratio:.2f}x** (target >= 1.0x: {'met' if ratio >= 1.0 else 'NOT met'}). "
                f"`vit finetune`'s data pipeline alone (decode + augment + collate, same workers): "
                f"{loader_img_s:.1f} img/s, against {statistics.median(vit_img_s):.1f} img/s for the whole step.",
            ]
        lines += ["", "Every run (seconds):", ""]
        for r in results:
            lines.append(
                f"- {r['name']}: "
                + "; ".join(
                    f"{side} {', '.join(f'{x:.2f}' for x in r[side])}"
                    for side in ("vit", "timm", "before")
                    if side in r
                )
            )
    finally:
        if hub is not None:
            hub.terminate()
            hub.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)

    report = "\n".join(lines) + "\n"
    print(report)
    if args.out != "-":
        Path(args.out).write_text(report)
        print(f"written to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
