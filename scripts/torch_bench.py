#!/usr/bin/env python3
"""PyTorch's training-step speed for the same VGG16-BN that vgg16 bench runs.

Synthetic data on the GPU, SGD momentum 0.9 with weight decay 5e-4, median of
timed steps after warm-up (CUDA events). Prints one JSON line per setting:
  python3 scripts/torch_bench.py --size 32 --batch 128 --mode eager --precision tf32
"""
import argparse
import json
import time

import torch
import torch.nn as nn
import torchvision


def model_for(size, classes=10):
    m = torchvision.models.vgg16_bn(num_classes=classes)
    if size != 224:
        # As vgg16 does: no 7x7 average pool, the classifier takes the last
        # feature map flattened (512 x (size/32)^2).
        m.avgpool = nn.Identity()
        m.classifier[0] = nn.Linear(512 * (size // 32) ** 2, 4096)
    return m


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--mode", default="eager", choices=["eager", "compile", "reduce-overhead"])
    ap.add_argument("--precision", default="tf32", choices=["tf32", "fp32", "bf16"])
    ap.add_argument("--steps", type=int, default=30)
    a = ap.parse_args()

    torch.backends.cudnn.benchmark = True
    tf32 = a.precision != "fp32"
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32 and a.mode != "eager"
    dev = torch.device("cuda")
    m = model_for(a.size).to(dev)
    if a.precision == "bf16":
        m = m.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(a.batch, 3, a.size, a.size, device=dev)
    y = torch.randint(0, 10, (a.batch,), device=dev)
    if a.precision == "bf16":
        x = x.to(memory_format=torch.channels_last)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=a.precision == "bf16"):
            loss = nn.functional.cross_entropy(m(x), y)
        loss.backward()
        opt.step()
        return loss

    if a.mode != "eager":
        compiled = torch.compile(step, mode="reduce-overhead" if a.mode == "reduce-overhead" else "default")

        def step():
            # reduce-overhead replays CUDA graphs whose outputs the next
            # replay overwrites; PyTorch wants each step marked.
            torch.compiler.cudagraph_mark_step_begin()
            return compiled()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.time()
    for _ in range(5):
        step()
    torch.cuda.synchronize()
    warm = time.time() - t0
    times = []
    for _ in range(a.steps):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        step()
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e))
    times.sort()
    ms = times[len(times) // 2]
    print(json.dumps({"peer": "pytorch", "mode": a.mode, "precision": a.precision, "size": a.size, "batch": a.batch,
                      "step_ms": round(ms, 3), "train_images_per_sec": round(a.batch / ms * 1e3, 1),
                      "warmup_s": round(warm, 1), "peak_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1)}))


if __name__ == "__main__":
    main()
