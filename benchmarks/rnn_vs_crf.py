"""RNN refinement vs the pydensecrf dense CRF on the same real tile, same 5 iterations, CPU, one run.

    python benchmarks/rnn_vs_crf.py [--tile 01] [--classes 3] [--repeats 5] [--json out.json]

Input: a 1500x1500 Massachusetts roads tile at 1 m, coarse probabilities for ``--classes`` K
classes from a stand-in coarse map (``benchmarks.common.stand_in_coarse``; speed does not depend
on their values). K = 3 by default, as in the issue's reference points (the roads tile itself
has 2 classes; ``--classes 2`` measures that). The RNN has the paper's architecture (32 filters,
T = 5) with random weights: its cost does not depend on them.

Both are timed end to end from arrays to probabilities (the RNN through
``refiner.models.inference.refine``, normalisation and softmax included), interleaved so both see the
same machine load. The ratio is reported for the best run of each and for the medians: this
shared 2-core machine varies by +-20 % between runs, the CRF as much as the RNN.

The fp32 lower bound is the RNN's multiply-adds at the issue's measured matmul peak (~140
GFLOP/s on its 2 cores): ~18k per pixel for K = 3, i.e. ~0.25 s/Mpx (issue 4); ~12.8k, 0.18
s/Mpx, for K = 2 (:func:`fp32_limit`). The same bound at the matmul peak measured in this run
(:func:`matmul_peak`) is reported too, since the machine under a benchmark may differ.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.common import build_with, machine, roads_tile, stand_in_coarse  # noqa: E402
from refiner.baselines.crf import CRFParams, dense_crf  # noqa: E402
from refiner.core.classes import ClassSpec  # noqa: E402
from refiner.data.tile import Tile  # noqa: E402
from refiner.models import native  # noqa: E402
from refiner.models.inference import refine  # noqa: E402
from refiner.models.rnn import RefinerRNN, RNNConfig  # noqa: E402
from refiner.models.store import ModelBundle  # noqa: E402

PEAK_FLOPS = 140e9  # torch fp32 matmul peak measured on this 2-core machine (issue 4)


def fp32_limit(k: int, t: int = 5, hidden: int = 32, filters: int = 32, taps: int = 25, bands: int = 3) -> float:
    """Seconds per megapixel at :data:`PEAK_FLOPS` for the fused RNN's multiply-adds per pixel.

    Each step: K banks of ``hidden`` folded 5x5 filters and the ``hidden`` -> 1 output layer; once:
    the image filters (``filters`` x ``bands`` x 25) and their projection (``filters`` x K*hidden).
    """
    macs = t * k * (hidden * taps + hidden) + filters * bands * taps + filters * k * hidden
    return 2 * macs * 1e6 / PEAK_FLOPS


def matmul_peak(n: int = 2048, repeats: int = 5) -> float:
    """This machine's fp32 matmul rate (FLOP/s, best of ``repeats``) at torch's current thread count."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def native_path() -> str:
    """Which path the RNN takes here: the native kernel and its vector width, or the torch ops."""
    lib = native.load(5)
    return "torch ops" if lib is None else f"native kernel, {lib.lanes} floats a vector"


def setup(tile: str, k: int) -> tuple[ModelBundle, Tile, np.ndarray, np.ndarray, float]:
    """The benchmark's inputs: an RNN with random weights, the tile, its stand-in probabilities, image and Mpx."""
    image, labels = roads_tile(tile)
    probs = stand_in_coarse(labels, k)
    torch.manual_seed(0)
    names = ",".join(["background", "road"] + [f"class{i}" for i in range(2, k)])
    bundle = ModelBundle("rnn", RefinerRNN(RNNConfig(k, iterations=5)).eval(), ClassSpec.parse(names))
    tile_ = Tile(image=image, valid=(image > -1).all(0))
    return bundle, tile_, image, probs, image.shape[1] * image.shape[2] / 1e6


def interleaved(
    bundle: ModelBundle, tile: Tile, image: np.ndarray, probs: np.ndarray, repeats: int
) -> tuple[list[float], list[float]]:
    """Seconds of ``repeats`` RNN and CRF runs, alternated so both see the same machine load."""
    rnn_t, crf_t = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        refine(bundle, tile, probs, device="cpu")
        rnn_t.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        dense_crf(image, probs, CRFParams(iterations=5))
        crf_t.append(time.perf_counter() - t0)
    return rnn_t, crf_t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tile", default="01")
    ap.add_argument("--classes", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--cflags", default="", help="extra C compiler flags for the native kernel (-mno-avx512f: AVX2)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    build_with(args.cflags)
    k = args.classes
    bundle, tile, image, probs, mpx = setup(args.tile, k)
    refine(bundle, tile, probs, device="cpu")  # warm-up: compile, caches
    rnn_t, crf_t = interleaved(bundle, tile, image, probs, args.repeats)
    rnn_s, crf_s = min(rnn_t) / mpx, min(crf_t) / mpx
    rnn_med, crf_med = statistics.median(rnn_t) / mpx, statistics.median(crf_t) / mpx
    peak = matmul_peak()
    machine_limit = fp32_limit(k) * PEAK_FLOPS / peak
    report = {
        "machine": machine(),
        "tile": f"massachusetts_roads/{args.tile}.jpg",
        "cflags": args.cflags,
        "megapixels": mpx,
        "classes": k,
        "fp32_limit_s_per_mpx": round(fp32_limit(k), 3),
        "rnn_s_per_mpx": round(rnn_s, 3),
        "crf_s_per_mpx": round(crf_s, 3),
        "rnn_speedup_vs_crf": round(crf_s / rnn_s, 2),
        "fraction_of_fp32_limit": round(fp32_limit(k) / rnn_s, 3),
        "matmul_peak_gflops_this_machine": round(peak / 1e9, 1),
        "fp32_limit_s_per_mpx_this_machine": round(machine_limit, 3),
        "fraction_of_fp32_limit_this_machine": round(machine_limit / rnn_s, 3),
        "rnn_path": native_path(),
        "median_rnn_s_per_mpx": round(rnn_med, 3),
        "median_crf_s_per_mpx": round(crf_med, 3),
        "median_speedup_vs_crf": round(crf_med / rnn_med, 2),
        "rnn_runs_s": [round(t, 3) for t in rnn_t],
        "crf_runs_s": [round(t, 3) for t in crf_t],
    }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
