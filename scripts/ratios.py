#!/usr/bin/env python3
"""Speed ratios of vgg16 over PyTorch from the JSON lines of `vgg16 bench --json`
and scripts/torch_bench.py measured in one run on one card:
  python3 scripts/ratios.py bench.jsonl
For each vgg16 configuration (size, batch, precision) it divides vgg16's training
images/s by each PyTorch mode's at the same configuration.
"""
import json
import sys


def main():
    ours, peers = [], {}
    for line in open(sys.argv[1]):
        line = line.strip()
        if not line:
            continue
        r = json.loads(line)
        key = (r["size"], r["batch"], r["precision"])
        if r.get("peer") == "pytorch":
            peers.setdefault(key, []).append(r)
        else:
            ours.append(r)
    rows = []
    for r in ours:
        key = (r["size"], r["batch"], r["precision"])
        label = "%dx%d b%d %s%s%s%s%s%s%s%s%s%s" % (r["size"], r["size"], r["batch"], r["precision"],
                                         "" if r.get("cuda_graphs", True) else " no-graphs",
                                         " fused-bn" if r.get("fused_bn") else "",
                                         " tf32-linear" if "and GEMM" in r.get("device", "") else "",
                                         " channels-last" if "channels-last" in r.get("device", "") else "",
                                         " recompute-bn" if r.get("recompute_bn") else "",
                                         " unfused-pool" if r.get("unfused_pool") else "",
                                         " unpacked" if r.get("unpacked") else "",
                                         " sgd-in-backward" if r.get("sgd_in_backward") else "",
                                         " data-" + r["data"] if r.get("data", "none") != "none" else "")
        for p in peers.get(key, []):
            rows.append("%-36s %9.0f img/s / pytorch %-16s %9.0f img/s = %.2fx   peak MiB %.0f / %.0f (steps %s / %s)   first step %.1f s%s" % (
                label, r["train_images_per_sec"], p["mode"], p["train_images_per_sec"],
                r["train_images_per_sec"] / p["train_images_per_sec"], r["peak_mib"], p["peak_mib"],
                mib(r.get("step_peak_mib")), mib(p.get("step_peak_mib")), r.get("first_step_sec", 0), search(r)))
    print("\n".join(rows) if rows else "(no configuration measured on both sides)")


def search(r):
    """What choosing the convolution engines cost, where vgg16 reports it."""
    s = r.get("engine_search")
    if not s:
        return ""
    return " (engines: %d searched, %d remembered, built %.1f s, timed %.1f s)" % (
        s.get("directions", 0), s.get("remembered", 0), s.get("build_s", 0), s.get("timing_s", 0))


def mib(v):
    return "%.0f" % v if v else "?"


if __name__ == "__main__":
    main()
