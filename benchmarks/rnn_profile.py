"""Where the fused RNN's time goes on a CPU, and which block size is fastest.

    python benchmarks/rnn_profile.py [--classes 3 2] [--blocks 192 256 320] [--bands 4 8 16] [--json out.json]
    python benchmarks/rnn_profile.py --cflags="-mno-avx512f"   # the kernel as built for an AVX2-only CPU
    python benchmarks/rnn_profile.py --torch-ops                # the fallback without the native kernel

On the 1500x1500 Massachusetts tile (stand-in coarse probabilities, random weights, T = 5) it
times ``FusedRNN`` three times per setting (best and median s/Mpx) and splits the default run
into the native iterations (``native.run_steps``, or ``native.run_step`` where blocks are not
shared between threads), the image term's GEMM (``native.image_term_rows``) and the rest (image
convolution, block reads, edges, threads waiting), as shares of the threads' time (wall time x
threads). ``--bands`` times the default block with other band heights of the iterations'
temporal blocking (``native.BAND``). ``--cflags`` builds the native kernel with extra compiler
flags into a temporary cache first.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.common import build_with, machine, roads_tile, stand_in_coarse  # noqa: E402
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
    """Shares of one default run's thread time (wall x threads) in the native steps and the image term's GEMM."""
    spent: Counter = Counter()
    lock = threading.Lock()
    names = {"run_step": "step", "run_steps": "step", "image_term_rows": "image_term"}
    originals = {name: getattr(native, name) for name in names}
    inner = threading.local()  # image term time spent inside this thread's run_steps, not counted twice

    def wrap(name, fn):
        def run(*args, **kwargs):
            before = getattr(inner, "term", 0.0)
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            dt = time.perf_counter() - t0
            if names[name] == "image_term":
                inner.term = before + dt
            else:
                dt -= getattr(inner, "term", 0.0) - before
            with lock:
                spent[names[name]] += dt
            return out

        return run

    for name, fn in originals.items():
        setattr(native, name, wrap(name, fn))
    try:
        t0 = time.perf_counter()
        fr(image, probs, keep_all=False)
        total = (time.perf_counter() - t0) * torch.get_num_threads()
    finally:
        for name, fn in originals.items():
            setattr(native, name, fn)
    shares = {name: round(spent[name] / total, 3) for name in ("step", "image_term")}
    shares["rest"] = round(1 - sum(shares.values()), 3)
    return shares


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--classes", type=int, nargs="+", default=[3, 2])
    ap.add_argument("--blocks", type=int, nargs="*", default=[192, 256, 320])
    ap.add_argument("--bands", type=int, nargs="*", default=[], help="band heights of the temporal blocking to time")
    ap.add_argument("--cflags", default="", help="extra C compiler flags for the native kernel")
    ap.add_argument("--torch-ops", action="store_true", help="time the torch-ops path instead of the native kernel")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    build_with(args.cflags)
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
        default_band = native.BAND
        try:
            for band in args.bands:
                native.BAND = band
                row.setdefault("bands", {})[band] = timed(fr, img, probs, mpx, None)
        finally:
            native.BAND = default_band
        report["runs"].append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
