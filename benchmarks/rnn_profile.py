"""Where the fused RNN's time goes on a CPU, and which block size is fastest.

    python benchmarks/rnn_profile.py [--classes 3 2] [--blocks 192 256 320] [--json out.json]
    python benchmarks/rnn_profile.py --cflags="-mno-avx512f"   # the kernel as built for an AVX2-only CPU
    python benchmarks/rnn_profile.py --torch-ops                # the fallback without the native kernel

On the 1500x1500 Massachusetts tile (stand-in coarse probabilities, random weights, T = 5) it
times ``FusedRNN`` three times per setting (best and median s/Mpx) and splits the default run
into the native iterations (``native.run_step``), the image term's GEMM
(``native.image_term_rows``) and the rest (image convolution, block reads, edges). ``--cflags``
builds the native kernel with extra compiler flags into a temporary cache first.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.common import machine, roads_tile, stand_in_coarse  # noqa: E402
from refiner.models import native  # noqa: E402
from refiner.models.fused import FusedRNN  # noqa: E402
from refiner.models.rnn import RefinerRNN, RNNConfig  # noqa: E402


def timed(fr: FusedRNN, image: torch.Tensor, probs: torch.Tensor, mpx: float, block: int | None) -> dict:
    fr(image, probs, keep_all=False, block=block)  # warm-up
    runs = []
    for _ in range(3):
        t0 = time.perf_counter()
        fr(image, probs, keep_all=False, block=block)
        runs.append((time.perf_counter() - t0) / mpx)
    return {"best_s_per_mpx": round(min(runs), 3), "median_s_per_mpx": round(statistics.median(runs), 3)}


def stages(fr: FusedRNN, image: torch.Tensor, probs: torch.Tensor) -> dict:
    """Shares of one default run spent in the native steps and the image term's GEMM."""
    spent: Counter = Counter()
    originals = {"step": native.run_step, "image_term": native.image_term_rows}

    def wrap(name, fn):
        def run(*args):
            t0 = time.perf_counter()
            out = fn(*args)
            spent[name] += time.perf_counter() - t0
            return out

        return run

    native.run_step, native.image_term_rows = wrap("step", native.run_step), wrap("image_term", native.image_term_rows)
    try:
        t0 = time.perf_counter()
        fr(image, probs, keep_all=False)
        total = time.perf_counter() - t0
    finally:
        native.run_step, native.image_term_rows = originals["step"], originals["image_term"]
    shares = {name: round(spent[name] / total, 3) for name in originals}
    shares["rest"] = round(1 - sum(shares.values()), 3)
    return shares


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--classes", type=int, nargs="+", default=[3, 2])
    ap.add_argument("--blocks", type=int, nargs="*", default=[192, 256, 320])
    ap.add_argument("--cflags", default="", help="extra C compiler flags for the native kernel")
    ap.add_argument("--torch-ops", action="store_true", help="time the torch-ops path instead of the native kernel")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.cflags:
        os.environ["REFINER_CACHE"] = tempfile.mkdtemp(prefix="refiner-profile-")
        os.environ["CC"] = f"{os.environ.get('CC', 'cc')} {args.cflags}"
    lib = native.load(5)
    image, labels = roads_tile("01")
    mpx = image.shape[1] * image.shape[2] / 1e6
    img = torch.from_numpy(image)[None]
    report = {"machine": machine(), "cflags": args.cflags, "lanes": lib.lanes if lib else None, "runs": []}
    report["path"] = "torch ops" if args.torch_ops or lib is None else "native kernel"
    for k in args.classes:
        probs = torch.from_numpy(stand_in_coarse(labels, k))[None].float()
        torch.manual_seed(0)
        fr = FusedRNN(RefinerRNN(RNNConfig(k, iterations=5)).eval(), native=not args.torch_ops)
        row = {"classes": k, "default_block": timed(fr, img, probs, mpx, None)}
        if report["path"] == "native kernel":
            row["shares"] = stages(fr, img, probs)
        row["blocks"] = {b: timed(fr, img, probs, mpx, b) for b in args.blocks}
        report["runs"].append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
