#!/usr/bin/env bash
# The GPU path, run for real on a lent GPU machine in at most 8 minutes, written to
# benchmarks/GPU_RESULTS.md. The machine needs only torch, timm, typer, rich, pillow and
# huggingface_hub (no network, no vitcli install: PYTHONPATH=.); every input is made on the spot:
#   - a ViT-B/16 with random weights in Hub layout (config.json + model.safetensors),
#   - 1024 synthetic 500x375 JPEGs (smooth shapes, so they compress like photos) with a labels file,
#   - an ImageFolder of 10 classes (640 train / 160 val JPEGs).
# Steps, each under its own time limit, a failure recorded and the next step run:
#   1. vit predict over the 1024 JPEGs (img/s; model vs loader img/s from vit's own report)
#   2. vit eval on them with the labels file (img/s, loader/model img/s)
#   3. vit finetune, 30 steps, bf16 (img/s, peak memory)
#   4. vit benchmark --model vit_base_patch16_224 --train --precision bf16 --compile (img/s, MFU against
#      the bf16 peak measured in the run and against the data sheet, memory), then the same eager
#   5. JPEG decoding: PIL (the loader's) against torchvision.io.decode_jpeg on the GPU, img/s
#   6. vit train ViT-L/16 --fsdp --grad-checkpointing --accum 2, bf16, one rank under torchrun (a smoke test)
#
#   bash benchmarks/gpu_check.sh                          # on the GPU machine, from the repo root
#   bash benchmarks/gpu_check.sh --device cpu --tiny      # the same steps, tiny, on a CPU (a dry run;
#                                                         # writes under $WORK, not GPU_RESULTS.md)
set -u
cd "$(dirname "$0")/.."
DEVICE=cuda
TINY=0
OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --tiny) TINY=1; shift ;;
    --out) OUT="$2"; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
START=$(date +%s)
BUDGET=${GPU_CHECK_BUDGET:-470}  # seconds for all steps (8 min with room for the report)
WORK=${WORK:-$(mktemp -d /tmp/gpucheck.XXXXXX)}
mkdir -p "$WORK/logs"
[ -n "$OUT" ] || { [ "$DEVICE" = cpu ] && OUT="$WORK/GPU_RESULTS.md" || OUT=benchmarks/GPU_RESULTS.md; }
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" VIT_CACHE="$WORK/vitcache" HF_HOME="$WORK/hf" HF_HUB_OFFLINE=1 \
  VIT_PROGRESS=0 PYTHONWARNINGS=ignore TORCHINDUCTOR_CACHE_DIR="$WORK/inductor"
PY=${PYTHON:-python}

if [ "$TINY" = 1 ]; then
  ARCH=vit_tiny_patch16_224; N_JPEGS=64; PER_CLASS=8; STEPS=3; BATCH=16; BENCH_BATCH=4; BENCH_ITERS=2
  BENCH_ARGS=(--model vit_tiny_patch16_224 --img-size 64); COMPILE=()
else
  ARCH=vit_base_patch16_224; N_JPEGS=1024; PER_CLASS=64; STEPS=30; BATCH=64; BENCH_BATCH=128; BENCH_ITERS=20
  BENCH_ARGS=(--model vit_base_patch16_224); COMPILE=(--compile)
fi

left() { echo $(( BUDGET - ($(date +%s) - START) )); }

# step NAME LIMIT CMD...: run CMD with stdout/stderr in logs/NAME.{out,err}, its time in logs/NAME.time
step() {
  local name="$1" limit="$2"; shift 2
  local budget; budget=$(left)
  if [ "$budget" -lt 20 ]; then echo "skipped: out of time" > "$WORK/logs/$name.err"; echo "125" > "$WORK/logs/$name.rc"; return; fi
  [ "$limit" -gt "$budget" ] && limit=$budget
  echo "== $name (limit ${limit}s)" >&2
  local t0; t0=$(date +%s%N)
  timeout "$limit" "$@" > "$WORK/logs/$name.out" 2> "$WORK/logs/$name.err"
  echo $? > "$WORK/logs/$name.rc"
  local ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  printf '%d.%03d\n' $(( ms / 1000 )) $(( ms % 1000 )) > "$WORK/logs/$name.time"
  echo "   rc $(cat "$WORK/logs/$name.rc"), $(cat "$WORK/logs/$name.time") s" >&2
}

# 0. the machine, the inputs
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"; } \
  > "$WORK/logs/gpu.txt"
step inputs 120 "$PY" - "$WORK" "$ARCH" "$N_JPEGS" "$PER_CLASS" <<'EOF'
import sys
from pathlib import Path

import numpy as np
import timm
import torch
from PIL import Image, ImageDraw
from timm.models import save_for_hf

work, arch, n_jpegs, per_class = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rng = np.random.default_rng(0)


def picture(w, h, seed):
    """A smooth gradient with a few shapes and mild noise: compresses and decodes like a photo."""
    r = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([(x * r.uniform(0.2, 0.6) + y * r.uniform(0.1, 0.5) + r.uniform(0, 255)) % 256
                     for _ in range(3)], -1)
    im = Image.fromarray(np.clip(base + r.normal(0, 6, base.shape), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(im)
    for _ in range(6):
        x0, y0 = int(r.integers(0, w - 40)), int(r.integers(0, h - 40))
        draw.ellipse([x0, y0, x0 + int(r.integers(20, w // 2)), y0 + int(r.integers(20, h // 2))],
                     fill=tuple(int(c) for c in r.integers(0, 256, 3)))
    return im


torch.manual_seed(0)
model = timm.create_model(arch, pretrained=False)
save_for_hf(model, str(work / "model"), safe_serialization=True)
jpegs = work / "jpegs"
jpegs.mkdir()
lines = []
for i in range(n_jpegs):
    picture(500, 375, i).save(jpegs / f"img{i:05d}.jpg", quality=90)
    lines.append(f"img{i:05d}.jpg {int(rng.integers(0, 1000))}\n")
(work / "labels.txt").write_text("".join(lines))
for split, n in (("train", per_class), ("val", max(2, per_class // 4))):
    for c in range(10):
        folder = work / "dataset" / split / f"c{c}"
        folder.mkdir(parents=True)
        for i in range(n):
            picture(256, 256, 10**6 + c * 1000 + i + (500 if split == "val" else 0)).save(folder / f"{i}.jpg", quality=90)
print(f"{n_jpegs} JPEGs, {10 * per_class} + {10 * max(2, per_class // 4)} dataset images, {arch} saved")
EOF

M="$WORK/model"
# 1-2. predict and eval (bf16 autocast is auto's choice on CUDA)
step predict 90 "$PY" -m vitcli predict --model "$M" "$WORK/jpegs" --json --device "$DEVICE" -b "$BATCH"
step eval 90 "$PY" -m vitcli eval --model "$M" --data "$WORK/jpegs" --labels "$WORK/labels.txt" --json \
  --device "$DEVICE" -b "$BATCH"
# 3. a 30-step bf16 finetune
step finetune 120 "$PY" -m vitcli finetune --model "$M" --dataset "$WORK/dataset" --steps "$STEPS" \
  --batch-size "$BATCH" --precision bf16 --device "$DEVICE" --eval-every "$STEPS" --json --project "$WORK/runs"
# 4. vit benchmark, compiled (the issue's figure), then eager
step benchmark_compile 240 "$PY" -m vitcli benchmark "${BENCH_ARGS[@]}" --random-init --train --precision bf16 \
  "${COMPILE[@]}" --device "$DEVICE" --batch-size "$BENCH_BATCH" --iters "$BENCH_ITERS" --json
step benchmark_eager 90 "$PY" -m vitcli benchmark "${BENCH_ARGS[@]}" --random-init --train --precision bf16 \
  --device "$DEVICE" --batch-size "$BENCH_BATCH" --iters "$BENCH_ITERS" --json
# 5. JPEG decoding on the host (PIL, what the loader runs) and on the GPU (nvjpeg)
step decode 60 "$PY" - "$WORK/jpegs" "$DEVICE" <<'EOF'
import json, sys, time
from pathlib import Path

import torch
from PIL import Image

paths = sorted(Path(sys.argv[1]).iterdir())[:256]
device = torch.device(sys.argv[2])
start = time.perf_counter()
for p in paths:
    Image.open(p).convert("RGB")
pil = len(paths) / (time.perf_counter() - start)
out = {"images": len(paths), "pil_img_s_one_core": round(pil, 1)}
try:
    from torchvision.io import decode_jpeg, read_file

    data = [read_file(str(p)) for p in paths]
    decode_jpeg(data[:8], device=device)  # warm-up (nvjpeg's handle)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for i in range(0, len(data), 64):
        decode_jpeg(data[i:i + 64], device=device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    out["decode_jpeg_img_s"] = round(len(paths) / (time.perf_counter() - start), 1)
    out["decode_jpeg_device"] = str(device)
except Exception as e:  # no torchvision, or no nvjpeg in this build
    out["decode_jpeg_error"] = f"{type(e).__name__}: {e}"[:300]
print(json.dumps(out))
EOF

# 6. ViT-L/16 from scratch with FSDP2 (one rank under torchrun), activation checkpointing, bf16: the sharded
#    path's smoke test (a run folder gathered from the shards, peak memory in the summary's img/s line)
if [ "$TINY" = 1 ]; then FSDP_ARGS=(--model vit_tiny_patch16_224 --img-size 64 --steps 2 --batch-size 8)
else FSDP_ARGS=(--model vit_large_patch16_224 --steps 10 --batch-size 32); fi
step fsdp_vitl 150 "$PY" -m torch.distributed.run --standalone --nproc-per-node 1 -m vitcli train "${FSDP_ARGS[@]}" \
  --dataset "$WORK/dataset" --fsdp --grad-checkpointing --accum 2 --precision bf16 --device "$DEVICE" --json \
  --project "$WORK/runs" --name fsdp

# the report
"$PY" - "$WORK" "$OUT" "$DEVICE" "$ARCH" "$STEPS" "$(( $(date +%s) - START ))" <<'EOF'
import json, platform, sys, time
from pathlib import Path

work, out, device, arch, steps, seconds = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6]
logs = work / "logs"


def read(name, ext):
    path = logs / f"{name}.{ext}"
    return path.read_text() if path.is_file() else ""


def last_json(name):
    for line in reversed(read(name, "out").strip().splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                pass
    return None


def status(name):
    rc = read(name, "rc").strip() or "not run"
    t = read(name, "time").strip()
    ok = rc == "0"
    tail = "" if ok else " ".join(read(name, "err").strip().splitlines()[-3:])[:400]
    return ok, f"rc {rc}" + (f", {float(t):.1f} s" if t else "") + (f": `{tail}`" if tail else "")


def throughput_line(name):
    lines = [l for l in read(name, "err").splitlines() if "img/s" in l and "loader" in l]
    return lines[-1].strip() if lines else ""


import torch, timm

lines = ["# GPU check: the CUDA path, run for real", "",
         f"Produced by `bash benchmarks/gpu_check.sh{' --device ' + device if device != 'cuda' else ''}` on "
         f"{time.strftime('%Y-%m-%d %H:%M')}, {seconds} s in all.",
         f"Machine: {read('gpu', 'txt').strip()}; {platform.node()}, Python {platform.python_version()}, "
         f"torch {torch.__version__}, timm {timm.__version__}. Synthetic inputs made by the script "
         f"({arch} with random weights, smooth synthetic JPEGs).", "",
         "| step | result | status |", "| --- | --- | --- |"]
ok, st = status("inputs")
lines.append(f"| inputs | {read('inputs', 'out').strip()} | {st} |")

p = sum(1 for l in read("predict", "out").splitlines() if l.startswith("{"))
ok, st = status("predict")
t = float(read("predict", "time") or 0)
lines.append(f"| vit predict | {p} predictions in {t:.1f} s (whole command, {p / t if t else 0:.0f} img/s); "
             f"{throughput_line('predict')} | {st} |")

e = last_json("eval") or {}
ok, st = status("eval")
lines.append(f"| vit eval | {e.get('num_images')} images, {e.get('images_per_second')} img/s; model "
             f"{e.get('model_img_s')} img/s, loader {e.get('loader_img_s')} img/s ({e.get('workers')} workers), "
             f"{e.get('device')} | {st} |")

f = last_json("finetune") or {}
ok, st = status("finetune")
lines.append(f"| vit finetune, {steps} steps bf16 | {f.get('img_s')} img/s (training loop), {f.get('seconds')} s "
             f"| {st} |")

for name in ("benchmark_compile", "benchmark_eager"):
    b = last_json(name) or {}
    ok, st = status(name)
    if b:
        res = (f"{b['model']} batch {b['batch_size']} {b['precision']}{' compiled' if b.get('compile') else ''}: "
               f"inference {b['img_s']} img/s (timm eager {b['timm_img_s']}, timm fp32 {b.get('timm_fp32_img_s')}), "
               f"MFU {b.get('mfu_measured_pct')} % of the measured {b.get('measured_peak_tflops')} TFLOP/s bf16 peak "
               f"({b.get('mfu_pct')} % of the data sheet's {b.get('peak_tflops')}); training {b.get('train_img_s')} "
               f"img/s (timm eager {b.get('timm_train_img_s')}, fp32 {b.get('timm_fp32_train_img_s')}), "
               f"**training MFU {b.get('train_mfu_measured_pct')} %** of the measured peak "
               f"({b.get('train_mfu_pct')} % of the data sheet's); peak memory inference "
               f"{b.get('peak_mem_mb')} MB, training {b.get('train_peak_mem_mb')} MB"
               + (f"; compile {b.get('compile_s')} s" if b.get("compile_s") else ""))
    else:
        res = "no result"
    lines.append(f"| {name.replace('_', ' ')} | {res} | {st} |")

z = last_json("fsdp_vitl") or {}
ok, st = status("fsdp_vitl")
lines.append(f"| vit train --fsdp --grad-checkpointing (torchrun, 1 rank) | {z.get('model')}, {z.get('steps')} steps "
             f"bf16: {z.get('img_s')} img/s, run folder {z.get('run_dir')} | {st} |")

d = last_json("decode") or {}
ok, st = status("decode")
lines.append(f"| JPEG decode | PIL {d.get('pil_img_s_one_core')} img/s on one core; torchvision.io.decode_jpeg "
             f"on {d.get('decode_jpeg_device')}: {d.get('decode_jpeg_img_s', d.get('decode_jpeg_error'))} img/s | {st} |")

bc = last_json("benchmark_compile") or {}
mfu = bc.get("train_mfu_measured_pct")
lines += ["", "Targets: ViT-B/16 bf16 training MFU >= 50 % (of the measured bf16 peak): "
          + ("no figure" if mfu is None else f"{mfu} % ({'met' if mfu >= 50 else 'NOT met'})") + ". "
          "The loader keeps up when its img/s (eval above) is above the model's; if not, GPU decoding "
          "(the decode row) is what would pay.", "",
          "Each step's stderr tail is in the status column when it failed; the script's logs were in "
          f"`{logs}`."]
out.write_text("\n".join(lines) + "\n")
print("\n".join(lines))
print(f"written to {out}", file=sys.stderr)
EOF
