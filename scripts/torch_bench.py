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
    ap.add_argument("--profile", action="store_true",
                    help="also print the GPU time per kernel of a step (torch.profiler), to set beside vgg16 bench --profile")
    a = ap.parse_args()

    torch.backends.cudnn.benchmark = True
    tf32 = a.precision != "fp32"
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32 and a.mode != "eager"
    dev = torch.device("cuda")
    m = model_for(a.size).to(dev)
    if a.precision == "bf16":
        m = m.to(memory_format=torch.channels_last)
    x = torch.randn(a.batch, 3, a.size, a.size, device=dev)
    y = torch.randint(0, 10, (a.batch,), device=dev)
    if a.precision == "bf16":
        x = x.to(memory_format=torch.channels_last)

    # Compiled modes compile the model (its forward and, through AOT
    # autograd, its backward); the optimizer step stays outside. Compiling
    # the whole step with reduce-overhead fails: the gradients are outputs
    # of a CUDA graph that the optimizer reads after the next replay began.
    net = m if a.mode == "eager" else torch.compile(
        m, mode="reduce-overhead" if a.mode == "reduce-overhead" else "default")
    opt = torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4, foreach=True)

    def step():
        if a.mode == "reduce-overhead":
            # each replay overwrites the last one's outputs: mark the step
            torch.compiler.cudagraph_mark_step_begin()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=a.precision == "bf16"):
            loss = nn.functional.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        return loss

    torch.cuda.reset_peak_memory_stats()
    t0 = time.time()
    for _ in range(5):
        step()
    torch.cuda.synchronize()
    warm = time.time() - t0
    warm_peak = torch.cuda.max_memory_allocated()
    torch.cuda.reset_peak_memory_stats()  # the timed steps' own peak, as vgg16 bench's step_peak_mib
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
    step_peak = torch.cuda.max_memory_allocated()  # before the profiler's steps, as vgg16 bench reads it
    if a.profile:
        profile(step, 5)
    print(json.dumps({"peer": "pytorch", "mode": a.mode, "precision": a.precision, "size": a.size, "batch": a.batch,
                      "step_ms": round(ms, 3), "train_images_per_sec": round(a.batch / ms * 1e3, 1),
                      "warmup_s": round(warm, 1),
                      "peak_mib": round(max(warm_peak, step_peak) / 2**20, 1),
                      "step_peak_mib": round(step_peak / 2**20, 1)}))


def profile(step, steps):
    """Prints each CUDA kernel's time per step, largest first, and the
    totals of a few families (convolutions, batch norm, ...)."""
    from torch.profiler import ProfilerActivity, profile as prof
    with prof(activities=[ProfilerActivity.CUDA]) as p:
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
    rows = []
    for e in p.key_averages():
        t = getattr(e, "device_time_total", None)
        if t is None:
            t = e.cuda_time_total
        if t > 0:
            rows.append((t / 1e3 / steps, e.count // steps, e.key))
    rows.sort(reverse=True)
    total = sum(r[0] for r in rows)
    families = {"convolution": ("conv", "xmma", "implicit", "winograd", "fft", "dgrad", "wgrad", "fprop", "cutlass", "sm90", "sm80"),
                "batch norm": ("batch_norm", "bn_", "welford"), "gemm (linear)": ("gemm", "cublas"),
                "relu/elementwise": ("elementwise", "relu", "threshold", "vectorized"), "max-pool": ("max_pool", "pool"),
                "optimizer": ("foreach", "multi_tensor", "sgd")}
    sums = {}
    for t, _, k in rows:
        name = next((f for f, keys in families.items() if any(s in k.lower() for s in keys)), "other")
        sums[name] = sums.get(name, 0) + t
    print("pytorch GPU time per step: %.3f ms" % total)
    for f, t in sorted(sums.items(), key=lambda x: -x[1]):
        print("  %-18s %8.3f ms %5.1f%%" % (f, t, 100 * t / total))
    for t, n, k in rows[:25]:
        print("  %8.3f ms %3d x  %s" % (t, n, k[:110]))


if __name__ == "__main__":
    main()
