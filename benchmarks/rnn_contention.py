"""RNN refinement and pydensecrf beside a controlled CPU hog: the speed users get on a busy server.

    python benchmarks/rnn_contention.py [--classes 3] [--hogs 0 1 2] [--threads 2] [--repeats 5] [--json out.json]

Refiner runs on a server many people share, so its speed next to other CPU-bound work is the
speed they get (issue 25). For each count ``n`` in ``--hogs`` this starts ``n`` CPU-bound
processes (``yes > /dev/null``, the issue's neighbour), times the RNN and the CRF interleaved on
the benchmark tile of ``rnn_vs_crf.py`` (same inputs, best and median of ``--repeats``), and
stops them. Run it on an otherwise quiet machine: the load average before each setting is
recorded beside its numbers.

Reported per setting: both methods' s/Mpx, the RNN's speed-up over the CRF and its fraction of
this machine's fp32 limit (its multiply-adds at the fp32 matmul rate measured before the hogs
start, as in ``rnn_vs_crf.py``), each method's slowdown against the run without hogs, and the
*fair* slowdown of the RNN: the machine's cores shared equally between the RNN's process and
each hog (a hog uses at most one core), e.g. 2x for one hog on 2 cores.
``"rnn_within_fair_share"`` says whether the RNN lost no more than that.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.common import build_with, machine  # noqa: E402
from benchmarks.rnn_vs_crf import PEAK_FLOPS, fp32_limit, interleaved, matmul_peak, native_path, setup  # noqa: E402
from refiner.models.inference import refine  # noqa: E402


def fair_slowdown(hogs: int, threads: int, cores: int) -> float:
    """How much slower a ``threads``-thread job may fairly get next to ``hogs`` single-threaded hogs.

    Each process gets an equal share of the ``cores`` (a hog no more than one core); the job
    alone would use ``min(threads, cores)`` of them.
    """
    alone = min(threads, cores)
    share = cores / (hogs + 1)
    if hogs and share > 1:  # hogs use one core each, the job gets the rest
        share = cores - hogs
    return round(alone / min(alone, share), 2)


class Hogs:
    """``n`` CPU-bound ``yes > /dev/null`` processes for the duration of a ``with`` block.

    Each in a session of its own, as another user's process is: Linux with autogroup scheduling
    (``/proc/sys/kernel/sched_autogroup_enabled``, on in this project's VMs) shares the cores
    between sessions first, so a hog started in the benchmark's own session would only take
    from the benchmark's share, not compete as a neighbour does.
    """

    def __init__(self, n: int) -> None:
        self.n = n
        self.procs: list[subprocess.Popen] = []

    def __enter__(self) -> Hogs:
        self.procs = [
            subprocess.Popen(["yes"], stdout=subprocess.DEVNULL, start_new_session=True) for _ in range(self.n)
        ]
        time.sleep(1.0 if self.n else 0.0)  # let the scheduler spread them
        return self

    def __exit__(self, *exc: object) -> None:
        for p in self.procs:
            p.kill()
            p.wait()


def _autogroup() -> bool | None:
    """Whether the kernel shares the cores between sessions first (None where unknown)."""
    try:
        return Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() == "1"
    except OSError:
        return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tile", default="01")
    ap.add_argument("--classes", type=int, default=3)
    ap.add_argument("--hogs", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--cflags", default="", help="extra C compiler flags for the native kernel (-mno-avx512f: AVX2)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    build_with(args.cflags)
    torch.set_num_threads(args.threads)
    bundle, tile, image, probs, mpx = setup(args.tile, args.classes)
    refine(bundle, tile, probs, device="cpu")  # warm-up: compile, caches
    cores = os.cpu_count() or 1
    peak = matmul_peak()  # before any hog: this machine's fp32 rate at these threads
    limit = fp32_limit(args.classes) * PEAK_FLOPS / peak  # s/Mpx at that rate
    report: dict = {
        "machine": machine(),
        "autogroup_scheduling": _autogroup(),
        "tile": f"massachusetts_roads/{args.tile}.jpg",
        "classes": args.classes,
        "threads": args.threads,
        "cflags": args.cflags,
        "rnn_path": native_path(),
        "matmul_peak_gflops": round(peak / 1e9, 1),
        "fp32_limit_s_per_mpx": round(limit, 3),
        "runs": [],
    }
    base: dict | None = None
    for n in args.hogs:
        load_before = [round(x, 2) for x in os.getloadavg()]
        with Hogs(n):
            rnn_t, crf_t = interleaved(bundle, tile, image, probs, args.repeats)
        rnn_s, crf_s = min(rnn_t) / mpx, min(crf_t) / mpx
        rnn_med, crf_med = statistics.median(rnn_t) / mpx, statistics.median(crf_t) / mpx
        row = {
            "hogs": n,
            "load_avg_before": load_before,
            "load_avg_after": [round(x, 2) for x in os.getloadavg()],
            "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
            "rnn_s_per_mpx": round(rnn_s, 3),
            "crf_s_per_mpx": round(crf_s, 3),
            "rnn_speedup_vs_crf": round(crf_s / rnn_s, 2),
            "median_rnn_s_per_mpx": round(rnn_med, 3),
            "median_crf_s_per_mpx": round(crf_med, 3),
            "median_speedup_vs_crf": round(crf_med / rnn_med, 2),
            "fraction_of_fp32_limit": round(limit / rnn_s, 3),
            "fair_rnn_slowdown": fair_slowdown(n, args.threads, cores),
            "rnn_runs_s": [round(t, 3) for t in rnn_t],
            "crf_runs_s": [round(t, 3) for t in crf_t],
        }
        if base is None:
            base = row
        else:
            row["rnn_slowdown"] = round(rnn_s / base["rnn_s_per_mpx"], 2)
            row["crf_slowdown"] = round(crf_s / base["crf_s_per_mpx"], 2)
            row["rnn_within_fair_share"] = row["rnn_slowdown"] <= row["fair_rnn_slowdown"]
        report["runs"].append(row)
        print(json.dumps({k: v for k, v in row.items() if not k.endswith("_runs_s")}), flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
