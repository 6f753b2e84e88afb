"""Seconds per training step of each coarse design (issue #21): what "the same time budget" is made of.

A step as ``train_coarse`` takes it: 16 patches of 64 x 64 output pixels with 32 px of context
(128 x 128 input), forward, cross-entropy on the centre, backward, SGD with momentum; random
data (the cost does not depend on it). Best and median of ``--repeats`` steps after two warm-up
steps, one torch thread by default (the long runs' setting).

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/coarse_step_cost.py [--threads 1] [--repeats 8]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from refiner.models.coarse import ARCH_HALO, CoarseConfig
from refiner.models.designs import build_coarse


def step_seconds(arch: str, repeats: int, batch: int = 16, out: int = 64, context: int = 32) -> list[float]:
    """Wall-clock seconds of ``repeats`` training steps of design ``arch`` (after two warm-up steps)."""
    torch.manual_seed(0)
    net = build_coarse(CoarseConfig(3, arch=arch)).train()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    size = out + 2 * context
    x, y = torch.randn(batch, 3, size, size), torch.randint(0, 3, (batch, out, out))
    times = []
    for i in range(repeats + 2):
        t = time.perf_counter()
        loss = F.cross_entropy(net(x)[..., context : context + out, context : context + out], y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - t)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=8)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = {}
    for arch in ARCH_HALO:
        t = step_seconds(arch, args.repeats)
        params = sum(p.numel() for p in build_coarse(CoarseConfig(3, arch=arch)).parameters())
        rows[arch] = {"best_s": min(t), "median_s": statistics.median(t), "params": params}
        print(f"{arch}: {params} parameters, {min(t):.3f} s best, {statistics.median(t):.3f} s median per step")
    print(json.dumps({"threads": args.threads, "rows": rows}))


if __name__ == "__main__":
    main()
