"""The GPU check in one command: the ``gpu`` tests, then refinement, fine-tuning and coarse CNN speed.

    python benchmarks/gpu_run.py --stage            # here, before a device call: stage one real tile
    python3 benchmarks/gpu_run.py                   # on the device machine (~5 min on an H200)
    python benchmarks/gpu_run.py --quick            # CPU smoke run of the whole script (~1-2 min)

Writes ``gpu_run.json`` (``gpu_run_quick.json`` with ``--quick``) to ``$OUT`` when set, else to
``benchmarks/results/``, after every section, so a run stopped at its time limit still leaves
what it measured. Needs only torch, numpy and PIL (the device machine's Python has no rasterio):
it imports ``refiner.models``, ``refiner.train`` and ``refiner.data.synthetic``'s label helpers only.

Sections (what issue 15 asks for):

1. ``pytest -m gpu tests/models/test_gpu.py`` (skipped, so quick, without CUDA).
2. Refinement ms/Mpx at T = 5, K = 3 (the shipped ``rnn_1m``) on 4k^2 and 16k^2 inputs in fp32,
   TF32 and bf16, synchronised timing, inputs already on the device; and on a real tile
   (Massachusetts roads ``01.jpg``, coarse probabilities from the shipped ``coarse_1m``) how many
   pixels' classes differ from fp32 in each mode: the mode is "exact enough" at 0.
3. Fine-tuning steps/s (``train_rnn``'s loop, bf16 autocast on CUDA) and time-to-quality from a
   256^2 painted patch (``benchmarks/finetune_time_to_quality.py``'s setting): the fraction of a
   long run's held-out mIoU gain over the coarse map reached within 10 s (target >= 0.95).
4. The coarse CNN's Mpx/s (fp32, TF32, bf16 autocast).

The real tile is read from ``../shared/data`` (``REFINER_SHARED_DATA``), which does not travel to
the device machine: ``--stage`` copies the one tile into ``.gpu_data/`` (ignored by git, never
committed), which the device call carries; without it a synthetic tile is used and the JSON says so.
This supersedes the earlier ``benchmarks/gpu_throughput.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGED = ROOT / ".gpu_data"
SHARED_ROADS = Path(os.environ.get("REFINER_SHARED_DATA", ROOT.parent / "shared" / "data")) / "massachusetts_roads"
if (STAGED / "massachusetts_roads").is_dir() and "REFINER_SHARED_DATA" not in os.environ:
    os.environ["REFINER_SHARED_DATA"] = str(STAGED)
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.common import machine  # noqa: E402
from benchmarks.finetune_time_to_quality import CLASSES, patch_of  # noqa: E402
from benchmarks.finetune_time_to_quality import run as finetune_run  # noqa: E402
from refiner.core.classes import IGNORE  # noqa: E402
from refiner.core.metrics import evaluate  # noqa: E402
from refiner.data.synthetic import coarse_like  # noqa: E402
from refiner.models.fused import FusedRNN  # noqa: E402
from refiner.models.store import load_model  # noqa: E402
from refiner.train.rnn import RNNTrainConfig, train_rnn  # noqa: E402
from refiner.train.sampling import split_holdout  # noqa: E402

PRETRAINED = ROOT / "assets" / "pretrained"
TILE = "01"
MODES = ("fp32", "tf32", "bf16")


def stage() -> None:
    """Copy the one real tile the run reads into ``.gpu_data`` (git-ignored) for the device call's carry."""
    exclude = ROOT / ".git" / "info" / "exclude"  # so the copy can never be committed
    exclude.parent.mkdir(parents=True, exist_ok=True)
    if "/.gpu_data/" not in (exclude.read_text() if exclude.is_file() else ""):
        with exclude.open("a") as f:
            f.write("\n/.gpu_data/\n")
    for sub, ext in (("images", "jpg"), ("masks", "png")):
        (STAGED / "massachusetts_roads" / sub).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SHARED_ROADS / sub / f"{TILE}.{ext}", STAGED / "massachusetts_roads" / sub / f"{TILE}.{ext}")
    print(f"staged {TILE}.jpg/.png in {STAGED}; carry ['.gpu_data'] in the device call")


def set_mode(mode: str) -> None:
    """TF32 on for ``tf32`` only: cuDNN convolutions use it by default in PyTorch, so fp32 turns it off."""
    tf32 = mode == "tf32"
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def real_tile(quick: bool) -> tuple[np.ndarray, np.ndarray, str]:
    """(3, H, W) image in [0, 1], road labels, and where they came from (a real tile when readable)."""
    try:
        from benchmarks.common import roads_tile

        image, labels = roads_tile(TILE)
        source = f"massachusetts_roads/{TILE}.jpg (real, 1500x1500 at 1 m)"
    except (OSError, ImportError) as exc:  # no staged tile, or no PIL: a synthetic stand-in
        rng = np.random.default_rng(0)
        yy, xx = np.mgrid[:1500, :1500]
        labels = (((xx + 2 * yy) % 97) < 6).astype(np.uint8)
        image = np.clip(0.35 + 0.3 * labels[None] + 0.1 * rng.standard_normal((3, 1500, 1500)), 0, 1)
        image = image.astype(np.float32)
        source = f"synthetic 1500x1500 (no real tile: {type(exc).__name__})"
    if quick:
        image, labels = image[:, 500:1012, 500:1012], labels[500:1012, 500:1012]
        source += ", crop 512x512 at (500, 500)"
    return np.ascontiguousarray(image), np.ascontiguousarray(labels), source


class Report:
    def __init__(self, path: Path) -> None:
        self.path, self.data = path, {}

    def section(self, name: str, value) -> None:
        self.data[name] = value
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.data, indent=2))
        print(f"== {name}: {json.dumps(value)[:2000]}", flush=True)


def run_tests(quick: bool) -> dict:
    # -o filterwarnings: pyproject's filters name rasterio's warning classes, absent on the device machine
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "tests/models/test_gpu.py", "-p", "no:cacheprovider",
           "-o", "filterwarnings=default"]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240)
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    print("\n".join(lines[-30:]), flush=True)
    return {"rc": proc.returncode, "summary": lines[-1] if lines else "", "seconds": round(time.perf_counter() - t0, 1)}


def time_refine(fast: FusedRNN, image, probs, dev, reps: int, block: int | None) -> dict:
    fast(image, probs, keep_all=False, block=block)  # warm-up: cuDNN algorithm choice, allocator
    sync(dev)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fast(image, probs, keep_all=False, block=block)
        sync(dev)
        times.append(time.perf_counter() - t0)
    mpx = image.shape[-2] * image.shape[-1] / 1e6
    return {
        "ms_per_mpx_best": round(1e3 * min(times) / mpx, 3),
        "ms_per_mpx_median": round(1e3 * statistics.median(times) / mpx, 3),
        "reps": reps,
    }


def refinement(dev: torch.device, quick: bool, tile, deadline: float) -> dict:
    rnn = load_model(PRETRAINED / "rnn_1m", expect="rnn", device=dev)
    coarse = load_model(PRETRAINED / "coarse_1m", expect="coarse", device=dev)
    net = rnn.net.eval()
    k, t = net.cfg.num_classes, net.cfg.iterations
    out: dict = {"model": "assets/pretrained/rnn_1m", "K": k, "T": t, "speed": {}, "exactness": {}}
    # (no torch.compile in the quick CPU run: compiling the bf16 tail alone takes tens of seconds)
    dtypes = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16}
    fused = {m: FusedRNN(net, dtype=dtypes[m], compile=not quick) for m in MODES}
    # exactness: class maps of each mode against fp32 on a real tile, coarse map from the real CNN
    image, _, source = tile
    set_mode("fp32")
    with torch.inference_mode():
        x = torch.from_numpy(image)[None].to(dev)
        probs = torch.softmax(coarse.net.eval()(coarse.normalise(x)).float(), 1)
        xn = rnn.normalise(x)
        maps = {}
        for m in MODES:
            set_mode(m)
            maps[m] = fused[m](xn, probs, keep_all=False)[-1].float().argmax(1).cpu()
        set_mode("fp32")
        cpu_ref = FusedRNN(rnn.net.to("cpu"))(xn.cpu(), probs.cpu(), keep_all=False)[-1].argmax(1)
        net.to(dev)
    px = maps["fp32"].numel()
    for m in MODES:
        diff = int((maps[m] != maps["fp32"]).sum())
        out["exactness"][m] = {"pixels_differing_from_fp32": diff, "fraction": round(diff / px, 7)}
    out["exactness"]["cpu_fp32"] = {"pixels_differing_from_fp32": int((cpu_ref != maps["fp32"]).sum())}
    out["exactness"]["tile"] = source
    out["exact_enough"] = [m for m in MODES if out["exactness"][m]["pixels_differing_from_fp32"] == 0]
    # speed on large inputs already on the device (content does not change the work)
    sizes = (128, 256) if quick else (4096, 16384)
    for n in sizes:
        g = torch.Generator(device=dev).manual_seed(0)
        x = torch.randn(1, 3, n, n, device=dev, generator=g)
        p = torch.softmax(torch.randn(1, k, n, n, device=dev, generator=g), 1)
        # whole input at once on a GPU (FusedRNN's default there) up to 4k^2; 16k^2 would need
        # ~100 GB per set of K*hidden feature maps, so it goes in 4096 px blocks
        block = None if n <= 4096 else 4096
        for m in MODES:
            if time.perf_counter() > deadline:
                out["speed"][f"{n}_{m}"] = "skipped: time budget"
                continue
            set_mode(m)
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            r = time_refine(fused[m], x, p, dev, reps=2 if n > 4096 or quick else 5, block=block)
            r["block"] = block or ("whole input" if dev.type == "cuda" else "cpu_block default")
            if dev.type == "cuda":
                r["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
            out["speed"][f"{n}_{m}"] = r
            print(f"refine {n}^2 {m}: {r}", flush=True)
        del x, p
    set_mode("fp32")
    return out


def finetuning(dev: torch.device, quick: bool, tile, deadline: float) -> dict:
    image, labels, source = tile
    out: dict = {"patch": source, "steps_per_s": {}}
    # steps/s: the loop alone (no validation), the library's batch and a GPU-sized one
    rng = np.random.default_rng(0)
    img = rng.random((3, 512, 512), dtype=np.float32)
    prb = np.stack([np.full((512, 512), 0.6, np.float32), np.full((512, 512), 0.4, np.float32)])
    lab = (rng.random((512, 512)) > 0.9).astype(np.uint8)
    steps = 20 if quick else 200
    for batch in (RNNTrainConfig().batch_size, 64):
        cfg = replace(RNNTrainConfig(), steps=steps, batch_size=batch, eval_every=10**9, eval_seconds=None, holdout=0.0)
        t0 = time.perf_counter()
        train_rnn(img, prb, lab, CLASSES, cfg, device=dev)
        sync(dev)
        out["steps_per_s"][f"batch_{batch}x{cfg.patch_size}px"] = round(steps / (time.perf_counter() - t0), 2)
    # time-to-quality on the 256^2 painted patch (centre of the tile, or of the quick crop)
    c = image.shape[-1] // 2
    img, prb, lab = patch_of(image, labels, c, c) if image.shape[-1] >= 1024 else _small_patch(image, labels)
    _, val = split_holdout(lab, RNNTrainConfig().holdout, seed=RNNTrainConfig().seed)
    coarse_miou = evaluate(prb.argmax(0).astype(np.uint8), val, 2).mean_iou
    target_s, long_s = (5.0, 15.0) if quick else (10.0, 90.0)
    defaults = replace(RNNTrainConfig(), max_seconds=2 * target_s)
    runs = {"defaults": finetune_run("defaults", defaults, img, prb, lab, str(dev))}
    if quick or time.perf_counter() + long_s < deadline:  # the smoke run exercises every part
        long = replace(RNNTrainConfig(), steps=100_000, patience=0, max_seconds=long_s)
        runs["long"] = finetune_run("long", long, img, prb, lab, str(dev))
    out.update(coarse_val_miou=round(coarse_miou, 4), target_seconds=target_s, long_seconds=long_s)
    for name, r in runs.items():
        within = max((m for s, _, m in r["curve_s_step_miou"] if s <= target_s), default=coarse_miou)
        out[name] = {
            "steps": r["steps"], "wall_s": r["wall_s"], "best_val_miou": r["best_val_miou"],
            "best_val_miou_within_target": within, "curve_s_step_miou": r["curve_s_step_miou"],
        }  # fmt: skip
    if "long" in runs:
        gain = runs["long"]["best_val_miou"] - coarse_miou
        got = out["defaults"]["best_val_miou_within_target"] - coarse_miou
        out["fraction_of_long_gain_within_target"] = round(got / gain, 3) if gain > 0 else None
    return out


def _small_patch(image: np.ndarray, labels: np.ndarray):
    """The quick run's 512^2 crop as the context: its central 256^2 labelled, coarse map as in patch_of."""
    probs = coarse_like(labels, 2, sigma=4.0)
    lab = np.full(labels.shape, IGNORE, np.uint8)
    lab[128:384, 128:384] = labels[128:384, 128:384]
    return image, probs, lab


def coarse_speed(dev: torch.device, quick: bool) -> dict:
    coarse = load_model(PRETRAINED / "coarse_1m", expect="coarse", device=dev)
    net = coarse.net.eval()
    # quick: 128^2, since bf16 autocast on a CPU without bf16 instructions took ~150 s for one 512^2
    n = 128 if quick else 4096
    x = torch.rand(1, 3, n, n, device=dev)
    out: dict = {"model": "assets/pretrained/coarse_1m", "input": f"{n}x{n}, one forward"}
    for m in MODES:
        set_mode(m)
        with torch.inference_mode(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=m == "bf16"):
            net(x)
            sync(dev)
            times = []
            for _ in range(2 if quick else 5):
                t0 = time.perf_counter()
                net(x)
                sync(dev)
                times.append(time.perf_counter() - t0)
        out[m] = {
            "mpx_per_s": round(n * n / 1e6 / min(times), 2),
            "ms_per_mpx": round(1e3 * min(times) / (n * n / 1e6), 3),
        }
    set_mode("fp32")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes and short runs: a CPU smoke run")
    ap.add_argument("--stage", action="store_true", help="stage the real tile in .gpu_data and exit")
    ap.add_argument("--budget", type=float, default=None, help="seconds for the measurements (default 330, quick 150)")
    ap.add_argument("--skip-tests", action="store_true")
    args = ap.parse_args()
    if args.stage:
        return stage()
    t_start = time.perf_counter()
    deadline = t_start + (args.budget or (150 if args.quick else 330))
    if not torch.cuda.is_available() and not args.quick:  # 16k^2 inputs on a CPU would take hours
        print("no CUDA device: nothing to measure (--quick runs a small CPU smoke run of every section)")
        return None
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    out_dir = Path(os.environ["OUT"]) if os.environ.get("OUT") else ROOT / "benchmarks" / "results"
    rep = Report(out_dir / ("gpu_run_quick.json" if args.quick else "gpu_run.json"))
    info = machine()
    if dev.type == "cuda":
        info["cuda"] = torch.version.cuda
        info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    rep.section("machine", {**info, "device": str(dev), "quick": args.quick})
    if not args.skip_tests:
        rep.section("gpu_tests", run_tests(args.quick))
    tile = real_tile(args.quick)
    for name, fn in (
        ("refinement", lambda: refinement(dev, args.quick, tile, deadline)),
        ("coarse_cnn", lambda: coarse_speed(dev, args.quick)),
        ("finetuning", lambda: finetuning(dev, args.quick, tile, deadline)),
    ):
        try:
            rep.section(name, fn())
        except Exception as exc:  # noqa: BLE001 - record it and go on: one device call must return everything
            rep.section(name, {"error": f"{type(exc).__name__}: {exc}"[:1000]})
    rep.section("total_seconds", round(time.perf_counter() - t_start, 1))


if __name__ == "__main__":
    main()
