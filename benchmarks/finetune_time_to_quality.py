"""Fine-tuning time-to-quality: held-out mIoU against wall-clock, CPU (and GPU when present).

    python benchmarks/finetune_time_to_quality.py [--long-seconds 300] [--json out.json]

The "painted patch": a 256x256 crop of a real Massachusetts roads tile (1 m) labelled with its
true road mask, inside a 512x512 context with no other labels (what a user paints in a corner
of a tile). Coarse probabilities: a stand-in coarse map, since no trained coarse CNN ships with
the repository: the true roads shifted by up to 3 px (``degrade_labels``, like OSM), averaged on
a 4x coarser grid, upsampled and blurred (sigma 4 px; ``benchmarks.common.stand_in_coarse``).
``train_rnn`` holds out 20% of the labelled 16x16 blocks; the score
is the mean IoU on those held-out pixels, recorded at every evaluation with the wall-clock time.

Runs: the library defaults (``RNNTrainConfig()``), and a long run (same settings, no early
stopping, ``--long-seconds`` budget) whose best held-out mIoU is the reference. The target
(issue 4) is: defaults reach >= 90% of the long run's quality within 60 s on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.common import machine, roads_tile, stand_in_coarse  # noqa: E402
from refiner.core.classes import IGNORE, ClassSpec  # noqa: E402
from refiner.core.metrics import evaluate  # noqa: E402
from refiner.data.synthetic import degrade_labels  # noqa: E402
from refiner.train.rnn import RNNTrainConfig, train_rnn
from refiner.train.sampling import split_holdout  # noqa: E402

CLASSES = ClassSpec.parse("background,road", "0,255")


def patch(tile: str, row: int, col: int):
    return patch_of(*roads_tile(tile), row, col)


def patch_of(image: np.ndarray, labels: np.ndarray, row: int, col: int):
    """The 512^2 context, coarse map and 256^2 labelled patch centred at (row, col) of a tile's arrays."""
    # misaligned like OSM (the road network moved by up to 3 px), then coarse and blurry
    probs = stand_in_coarse(degrade_labels(labels, shift=3, drop=0.0, seed=1), 2, sigma=4.0)
    r0, c0 = row - 128, col - 128  # 512x512 context around the 256x256 labelled patch
    img = np.ascontiguousarray(image[:, r0 : r0 + 512, c0 : c0 + 512])
    prb = np.ascontiguousarray(probs[:, r0 : r0 + 512, c0 : c0 + 512])
    lab = np.full((512, 512), IGNORE, np.uint8)
    lab[128:384, 128:384] = labels[row : row + 256, col : col + 256]
    return img, prb, lab


def run(name: str, cfg: RNNTrainConfig, img, prb, lab, device: str) -> dict:
    curve: list[tuple[float, int, float]] = []

    def progress(p) -> None:
        if p.val is not None:
            curve.append((round(p.seconds, 2), p.step, round(p.val.mean_iou, 4)))

    t0 = time.perf_counter()
    res = train_rnn(img, prb, lab, CLASSES, cfg, device=device, progress=progress)
    wall = time.perf_counter() - t0
    best_by = lambda s: max((m for t, _, m in curve if t <= s), default=None)  # noqa: E731
    return {
        "name": name,
        "config": asdict(cfg),
        "stopped": res.stopped,
        "steps": res.bundle.info["trained_steps"],
        "wall_s": round(wall, 1),
        "best_val_miou": res.best_val,
        "best_val_miou_within_60s": best_by(60),
        "curve_s_step_miou": curve,
    }


def _summary(r: dict) -> dict:
    return {k: v for k, v in r.items() if k not in ("curve_s_step_miou", "config")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tile", default="01")
    ap.add_argument("--row", type=int, default=640)
    ap.add_argument("--col", type=int, default=640)
    ap.add_argument("--long-seconds", type=float, default=300)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--defaults-seconds", type=float, default=90, help="wall-clock cap of the defaults' run")
    ap.add_argument("--variant", action="append", default=[], help="alternative settings, e.g. lr=0.02,eval_every=25")
    ap.add_argument("--only-defaults", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    img, prb, lab = patch(args.tile, args.row, args.col)
    _, val = split_holdout(lab, RNNTrainConfig().holdout, seed=RNNTrainConfig().seed)
    coarse_miou = evaluate(prb.argmax(0).astype(np.uint8), val, 2).mean_iou
    defaults = RNNTrainConfig()
    # the curve after 60 s does not matter for the target: cap the defaults' run to save time
    capped = replace(defaults, max_seconds=min(defaults.max_seconds or args.defaults_seconds, args.defaults_seconds))
    runs = [run("defaults", capped, img, prb, lab, args.device)]
    print(json.dumps(_summary(runs[-1])), flush=True)
    for spec in args.variant:  # e.g. lr=0.02,batch_size=4: alternatives, same cap
        kw = {k: type(getattr(defaults, k))(v) for k, v in (item.split("=") for item in spec.split(","))}
        runs.append(run(spec, replace(capped, **kw), img, prb, lab, args.device))
        print(json.dumps(_summary(runs[-1])), flush=True)
    if not args.only_defaults:
        long = replace(defaults, steps=100_000, patience=0, max_seconds=args.long_seconds)
        runs.append(run("long", long, img, prb, lab, args.device))
        ref = runs[-1]["best_val_miou"]
        for r in runs:
            got = r["best_val_miou_within_60s"] or coarse_miou  # no evaluation yet: the coarse map
            r["fraction_of_long_within_60s"] = round(got / ref, 3)
            r["fraction_of_long_gain_within_60s"] = round((got - coarse_miou) / (ref - coarse_miou), 3)
    report = {
        "machine": machine(),
        "patch": f"massachusetts_roads/{args.tile}.jpg rows {args.row}+256, cols {args.col}+256",
        "road_fraction": round(float((lab[lab != IGNORE] == 1).mean()), 3),
        "coarse_val_miou": round(coarse_miou, 4),
        "runs": runs,
    }
    if torch.cuda.is_available():
        report["gpu"] = torch.cuda.get_device_name(0)
    print(json.dumps({k: v for k, v in report.items() if k != "runs"}, indent=2))
    for r in runs:
        print(json.dumps(_summary(r)))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
