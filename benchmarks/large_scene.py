"""A scene far larger than memory refined end to end: peak RSS and time per megapixel vs size.

    python benchmarks/large_scene.py --sizes 1000 5000 10000 20000 [--workdir /tmp/refiner-large]
    python benchmarks/large_scene.py --sizes 10000 --pixel 0.5   # a scene the model must resample

For each size N, an N x N GeoTIFF (uint8 RGB, tiled, deflate, 1 m UTM) and a coarse probability
GeoTIFF (2 classes, uint8 scaled 0-255, which ``read_probs`` accepts) are generated window by
window (never in memory) by tiling a real 1500x1500 Massachusetts tile and its stand-in coarse
map with mirroring. Then ``python -m refiner refine`` runs in a fresh subprocess (random-weight
RNN, K = 2, T = 5, the paper's architecture; cost does not depend on the weights) and reports its
own peak RSS (``getrusage``) and wall time. Targets (issue 4): peak RSS <= 2 GiB and flat s/Mpx.
``--pixel`` labels the scene with another pixel size than the model's 1 m, so it is refined on
the working grid and brought back (``refiner.data.resample``), both by windows.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import rasterio  # noqa: E402
from affine import Affine  # noqa: E402
from rasterio.crs import CRS  # noqa: E402
from rasterio.windows import Window  # noqa: E402

from benchmarks.common import machine, roads_tile, stand_in_coarse  # noqa: E402

CHUNK = 1024


def _mirror_index(n0: int, n: int, period: int) -> np.ndarray:
    i = np.arange(n0, n0 + n) % (2 * period)
    return np.where(i < period, i, 2 * period - 1 - i)


def generate(folder: Path, size: int, pixel: float = 1.0) -> tuple[Path, Path]:
    image_path, probs_path = folder / f"scene_{size}_{pixel}m.tif", folder / f"probs_{size}_{pixel}m.tif"
    if image_path.exists() and probs_path.exists():
        return image_path, probs_path
    image, labels = roads_tile("01")
    src = (image * 255).round().astype(np.uint8)
    probs = (stand_in_coarse(labels, 2) * 255).round().astype(np.uint8)
    geo = {"crs": CRS.from_epsg(32619), "transform": Affine(pixel, 0, 300000.0, 0, -pixel, 4_700_000.0)}
    common = dict(driver="GTiff", height=size, width=size, dtype="uint8", tiled=True, blockxsize=256,
                  blockysize=256, compress="deflate", BIGTIFF="IF_SAFER", **geo)  # fmt: skip
    with (
        rasterio.open(image_path, "w", count=3, **common) as di,
        rasterio.open(probs_path, "w", count=2, **common) as dp,
    ):
        for r in range(0, size, CHUNK):
            for c in range(0, size, CHUNK):
                h, w = min(CHUNK, size - r), min(CHUNK, size - c)
                rows, cols = _mirror_index(r, h, src.shape[1]), _mirror_index(c, w, src.shape[2])
                win = Window(c, r, w, h)
                di.write(src[:, rows][:, :, cols], window=win)
                dp.write(probs[:, rows][:, :, cols], window=win)
    return image_path, probs_path


def make_model(folder: Path) -> Path:
    import torch

    from refiner.core.classes import ClassSpec
    from refiner.models.rnn import RefinerRNN, RNNConfig
    from refiner.models.store import ModelBundle, save_model

    torch.manual_seed(0)
    net = RefinerRNN(RNNConfig(2, iterations=5)).eval()
    return save_model(ModelBundle("rnn", net, ClassSpec.parse("background,road", "0,255"), 1.0), folder / "rnn")


def child(args) -> None:
    """Run in a fresh process: refine one scene, print wall time and own peak RSS."""
    import torch

    from refiner.models.fused import fused, scene_window

    # warm-up outside the timing: model load and the one-off kernel compilation (seconds)
    from refiner.scale.scene import SceneTask, refine_scene, task_model

    net = task_model(SceneTask("refine", str(args.model), str(args.image))).net
    read = (args.window or scene_window(net.cfg)) + 2 * net.cfg.halo  # the windows' read shape
    fused(net)(torch.zeros(1, 3, read, read), torch.full((1, 2, read, read), 0.5), keep_all=False)
    spent = _time_stages() if args.stages else {}
    t0 = time.perf_counter()
    refine_scene(args.model, args.image, args.probs, args.out, window=args.window)
    wall = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    shares = {name: round(s / wall, 3) for name, s in spent.items()}
    print(json.dumps({"wall_s": wall, "peak_rss_bytes": rss, **({"stage_shares": shares} if spent else {})}))


def _time_stages() -> dict[str, float]:
    """Wrap the scene loop's stages (reading, the RNN, writing) to add up the seconds each takes."""
    import refiner.scale.scene as scene
    from refiner.data.write import RasterWriter
    from refiner.models.fused import FusedRNN

    spent: dict[str, float] = {}

    def wrap(name, fn):
        def run(*a, **kw):
            t0 = time.perf_counter()
            out = fn(*a, **kw)
            spent[name] = spent.get(name, 0.0) + time.perf_counter() - t0
            return out

        return run

    scene.read_image = wrap("read_image", scene.read_image)
    scene.read_probs = wrap("read_probs", scene.read_probs)
    FusedRNN.__call__ = wrap("rnn", FusedRNN.__call__)
    RasterWriter.write = wrap("write", RasterWriter.write)
    return spent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 10000, 20000])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/refiner-large"))
    ap.add_argument("--window", type=int, default=None, help="default: refine_scene's (whole compute blocks)")
    ap.add_argument("--pixel", type=float, default=1.0, help="the scene's metres per pixel (the model's: 1)")
    ap.add_argument("--keep", action="store_true", help="keep the generated scenes")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--stages", action="store_true", help="also report the share of time per stage")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--image", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--probs", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    args.workdir.mkdir(parents=True, exist_ok=True)
    model = make_model(args.workdir)
    rows = []
    for size in args.sizes:
        t0 = time.perf_counter()
        image, probs = generate(args.workdir, size, args.pixel)
        gen = time.perf_counter() - t0
        out = args.workdir / f"refined_{size}.tif"
        cmd = [sys.executable, __file__, "--child", "--model", str(model), "--image", str(image),
               "--probs", str(probs), "--out", str(out)]  # fmt: skip
        cmd += ["--window", str(args.window)] if args.window else []
        cmd += ["--stages"] if args.stages else []
        load = machine()["load_avg_1_5_15"]
        res = json.loads(
            subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        )
        mpx = size * size / 1e6
        row = {
            "size": size,
            "pixel_m": args.pixel,
            "megapixels": mpx,
            "generate_s": round(gen, 1),
            "refine_s": round(res["wall_s"], 1),
            "s_per_mpx": round(res["wall_s"] / mpx, 3),
            "peak_rss_mib": round(res["peak_rss_bytes"] / 2**20),
            **({"stage_shares": res["stage_shares"]} if "stage_shares" in res else {}),
            "load_before": load,
            "load_after": machine()["load_avg_1_5_15"],
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
        if not args.keep:
            for p in (image, probs, out):
                p.unlink(missing_ok=True)
    report = {"machine": machine(), "window": args.window, "rows": rows}
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
