#!/usr/bin/env bash
# Runs every GPU check on a GPU machine without Go, from binaries built
# beforehand with `make gpu-build` (which fills .gpu/). Prints a summary
# table last. Meant to finish in a few minutes.
#   bash scripts/gpu-check.sh            # results also under $OUT when set
set -uo pipefail
cd "$(dirname "$0")/.."
G=.gpu
OUT=${OUT:-$G/out}
mkdir -p "$OUT"
export VGG16_FIXTURES=$PWD/$G/fixtures
summary=()
row() { summary+=("$(printf '%-44s %s' "$1" "$2")"); }

echo "== device"; nvidia-smi -L 2>&1 | head -4
echo "== vgg16 doctor"; $G/vgg16 doctor 2>&1 | tee "$OUT/doctor.txt"

echo "== GPU tests (ops vs CPU, training step with dropout, PyTorch parity), tf32 and fp32"
(cd internal/gpu && timeout 240 ../../$G/gpu.test -test.v -test.count=1 -test.timeout 230s) > "$OUT/gpu-tests.txt" 2>&1
rc=$?
grep -E "^(--- |ok|FAIL|PASS)" "$OUT/gpu-tests.txt" | tail -60
row "GPU tests" "$( [ $rc -eq 0 ] && echo pass || echo "FAIL (rc $rc, see gpu-tests.txt)")"
row "  passed / failed / skipped" "$(grep -c -- '--- PASS' "$OUT/gpu-tests.txt") / $(grep -c -- '--- FAIL' "$OUT/gpu-tests.txt") / $(grep -c -- '--- SKIP' "$OUT/gpu-tests.txt")"

echo "== short training on the CIFAR-10 sample (cifar recipe, 4000 images, 4 epochs)"
rm -rf "$OUT/run"
timeout 180 $G/vgg16 train --device cuda --recipe cifar --data $G/cifar-sample/data_batch_1.bin --limit 4000 \
  --epochs 4 --batch 64 --warmup 0.5 --run-dir "$OUT/run" > "$OUT/train.txt" 2>&1
rc=$?
grep -E "^(device|epoch [0-9]+/[0-9]+  train|done|vgg16:)" "$OUT/train.txt"
row "train --device cuda (sample)" "$( [ $rc -eq 0 ] && grep -o 'best validation accuracy [0-9.]*%' "$OUT/train.txt" || echo "FAIL (rc $rc)")"

echo "== a 224x224 checkpoint loads into torchvision's vgg16_bn(num_classes=10)"
rm -rf "$OUT/ck224"
timeout 120 $G/vgg16 train --device cuda --data $G/cifar-sample/data_batch_1.bin --limit 64 --epochs 1 --batch 32 \
  --size 224 --run-dir "$OUT/ck224" > "$OUT/ck224.txt" 2>&1
python3 - "$OUT/ck224/best.safetensors" > "$OUT/torchvision-load.txt" 2>&1 <<'PY'
import sys, torch, torchvision
from safetensors.torch import load_file
m = torchvision.models.vgg16_bn(num_classes=10)
m.load_state_dict(load_file(sys.argv[1]), strict=True)
m.eval()
print("ok", sum(p.numel() for p in m.parameters()))
PY
row "224 checkpoint -> torchvision load_state_dict" "$(tail -1 "$OUT/torchvision-load.txt")"

bench() { # label, vgg16 bench flags
  local label=$1; shift
  local j
  j=$(timeout 120 $G/vgg16 bench --device cuda --json "$@" 2>"$OUT/bench-err.txt") || { row "vgg16 $label" "FAIL: $(tail -1 "$OUT/bench-err.txt")"; return; }
  echo "$j" >> "$OUT/bench.jsonl"
  row "vgg16 $label" "$(echo "$j" | python3 -c 'import json,sys; r=json.load(sys.stdin); print(f"{r[\"step_ms\"]:.2f} ms/step  {r[\"train_images_per_sec\"]:.0f} img/s  eval {r[\"eval_images_per_sec\"]:.0f} img/s  first {r[\"first_step_sec\"]:.1f}s  peak {r[\"peak_mib\"]:.0f} MiB")')"
}
torch() { # label, torch_bench flags
  local label=$1; shift
  local j
  j=$(timeout 150 python3 scripts/torch_bench.py "$@" 2>"$OUT/torch-err.txt" | tail -1) || { row "pytorch $label" "FAIL: $(tail -1 "$OUT/torch-err.txt")"; return; }
  echo "$j" >> "$OUT/bench.jsonl"
  row "pytorch $label" "$(echo "$j" | python3 -c 'import json,sys; r=json.load(sys.stdin); print(f"{r[\"step_ms\"]:.2f} ms/step  {r[\"train_images_per_sec\"]:.0f} img/s  warm-up {r[\"warmup_s\"]}s  peak {r[\"peak_mib\"]:.0f} MiB")')"
}
echo "== speed beside PyTorch, same card"
bench "32x32 b128 tf32" --size 32 --batch 128 --precision tf32
bench "32x32 b128 fp32" --size 32 --batch 128 --precision fp32
bench "32x32 b64 tf32" --size 32 --batch 64 --precision tf32
bench "224x224 b64 tf32" --size 224 --batch 64 --precision tf32 --steps 10
torch "32x32 b128 tf32 eager" --size 32 --batch 128 --mode eager
torch "32x32 b128 tf32 reduce-overhead" --size 32 --batch 128 --mode reduce-overhead
torch "224x224 b64 tf32 eager" --size 224 --batch 64 --mode eager --steps 10

echo
echo "== summary ($(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1))"
printf '%s\n' "${summary[@]}"
