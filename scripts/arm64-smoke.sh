#!/usr/bin/env bash
# The whole binary on linux/arm64, under qemu-aarch64: train on the
# embedded demo sample, resume, interrupt and resume again, evaluate the
# held-out images, predict an image. `make portable` runs it where an arm64
# cross compiler and qemu are installed; the package tests under qemu cover
# the CPU backend, this the rest of the binary (cgo, the commands, the
# checkpoints). About 40 s.
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
SYSROOT=${ARM64_SYSROOT:-/usr/aarch64-linux-gnu}
tmp=$(mktemp -d)
pid=
limit=${ARM64_SMOKE_TIMEOUT:-600} # seconds for any one command: a hang under qemu fails, not blocks, CI
trap '[ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null; rm -rf "$tmp"' EXIT
CC=aarch64-linux-gnu-gcc GOARCH=arm64 CGO_ENABLED=1 $GO build -o "$tmp/vgg16" ./cmd/vgg16
v() { timeout -k 10 "$limit" qemu-aarch64 -L "$SYSROOT" "$tmp/vgg16" "$@"; }
fail() { echo "arm64-smoke: $*" >&2; exit 1; }

v doctor >"$tmp/doctor.txt" || fail "doctor failed"
tiny=(--device cpu --data demo --recipe cifar --arch "8,M,16,M,16,M,16,M,16,M" --hidden 32 --batch 20 --limit 400)
v train "${tiny[@]}" --epochs 2 --run-dir "$tmp/run" >"$tmp/train.txt" || fail "train failed: $(tail -3 "$tmp/train.txt")"
v train --resume --run-dir "$tmp/run" --epochs 3 --device cpu >"$tmp/resume.txt" || fail "resume failed: $(tail -3 "$tmp/resume.txt")"

# SIGINT in the fourth epoch: a checkpoint, exit status 130, then a resume.
qemu-aarch64 -L "$SYSROOT" "$tmp/vgg16" train --resume --run-dir "$tmp/run" --epochs 40 --device cpu >"$tmp/int.txt" 2>&1 &
pid=$! # qemu's own: a function's subshell would take the signal instead
# Polled up to $limit s (a slow CI machine), ending early if it exited.
for _ in $(seq $((limit * 10))); do
  grep -q "epoch 4/40" "$tmp/int.txt" && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
grep -q "epoch 4/40" "$tmp/int.txt" || { kill "$pid" 2>/dev/null || true; fail "the resumed run did not start its fourth epoch: $(tail -3 "$tmp/int.txt")"; }
kill -INT "$pid"
for _ in $(seq $((limit * 10))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
kill -0 "$pid" 2>/dev/null && { kill -KILL "$pid"; fail "SIGINT: still running $limit s later: $(tail -3 "$tmp/int.txt")"; }
status=0
wait "$pid" || status=$?
pid=
[ "$status" = 130 ] || fail "SIGINT: exit status $status, want 130: $(tail -3 "$tmp/int.txt")"
v train --resume --run-dir "$tmp/run" --epochs 5 --device cpu >"$tmp/resume2.txt" || fail "resume after SIGINT failed: $(tail -3 "$tmp/resume2.txt")"

# eval --split val gives the best epoch's recorded validation accuracy.
v eval "$tmp/run/best.safetensors" --split val --device cpu --json >"$tmp/eval.json" || fail "eval failed"
if ! command -v python3 >/dev/null; then
  echo "arm64-smoke: doctor, train, resume, SIGINT and resume, eval: ok (no python3: eval's figures and predict not checked)"
  exit 0
fi
python3 - "$tmp/eval.json" "$tmp/run/metrics.jsonl" <<'PY' || fail "eval --split val differs from the run's best val_acc"
import json, sys
ev = json.load(open(sys.argv[1]))
best = [m for m in map(json.loads, open(sys.argv[2])) if m["best"]][-1]
if ev["split"] != "val" or ev["accuracy"] != best["val_acc"]:
    sys.exit(f"eval {ev['split']} {ev['accuracy']}, the run's best val_acc {best['val_acc']}")
PY

# predict: a 3x2 PNG written here (RGB, 8-bit).
python3 - "$tmp/x.png" <<'PY'
import struct, sys, zlib
w, h = 3, 2
raw = b"".join(b"\0" + bytes([200, 30, 30] * w) for _ in range(h))
chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
open(sys.argv[1], "wb").write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
PY
v predict --checkpoint "$tmp/run/best.safetensors" --device cpu "$tmp/x.png" >"$tmp/predict.txt" || fail "predict failed"
echo "arm64-smoke: doctor, train, resume, SIGINT and resume, eval --split val, predict: ok"
