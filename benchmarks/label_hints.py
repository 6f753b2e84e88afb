"""Where-to-label hints against random boxes: a simulated labeller on real tiles.

    nice -n 10 python benchmarks/label_hints.py [--tiles 01 05 07] [--seeds 0 1] [--coarse PATH] [--json out.json]

Per tile and seed: a ``--crop`` px crop of a real Massachusetts roads tile (1 m), with the
road fraction 5-30 % (drawn at random), and a coarse map of the whole tile, either

- ``--coarse stand-in`` (the default): the stand-in the other benchmarks use (true roads moved
  by up to 3 px like OSM, averaged on a 4x coarser grid, blurred;
  ``benchmarks.common.stand_in_coarse``): its error is the same everywhere; or
- ``--coarse PATH``: a coarse CNN model folder (e.g. ``assets/pretrained/coarse_1m``), whose
  errors are local; classes other than road are merged into background, as the app does
  (:func:`refiner.models.pretrained.class_merge`). Use tiles it was not tested on (its test tiles
  are 08, 11, 12 in ``experiments/pretrained/split.toml``).

The labeller starts with one random ``--box`` px box painted with the
true labels (with ``--start-road f``: one with at least a fraction f of road), and an RNN is
trained on it (``--steps0`` steps). Then two arms, same pixel budget:

- **suggested**: the labeller paints the ``--boxes`` boxes :func:`refiner.app.hints.suggest_boxes`
  proposes (need map from that RNN's probabilities, the coarse / CRF / RNN maps, the labels);
- **committee** (with ``--committee``): the same, with the entropy of the mean of the coarse,
  CRF and RNN probabilities (:func:`refiner.app.hints.consensus`) instead of the RNN's alone;
- **random**: the same number of same-size random boxes under the same rules (not on painted
  pixels, not overlapping).

Each arm fine-tunes the first RNN ``--steps1`` more steps on all its painted pixels (same seed,
no hold-out), and is scored (mIoU, background and road) on the pixels painted by no arm.
Each row also says what share of the coarse map's and the first RNN's errors each arm painted.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.common import machine, roads_tile, stand_in_coarse  # noqa: E402
from refiner.app import hints  # noqa: E402
from refiner.baselines.crf import dense_crf  # noqa: E402
from refiner.core.classes import IGNORE, ClassSpec  # noqa: E402
from refiner.core.metrics import evaluate  # noqa: E402
from refiner.data.synthetic import degrade_labels  # noqa: E402
from refiner.data.tile import Tile  # noqa: E402
from refiner.models.coarse import COARSE_HALO  # noqa: E402
from refiner.models.inference import predict_coarse, refine  # noqa: E402
from refiner.models.pretrained import Pick, class_merge  # noqa: E402
from refiner.models.store import load_model  # noqa: E402
from refiner.train.rnn import RNNTrainConfig, train_rnn  # noqa: E402

CLASSES = ClassSpec.parse("background,road", "0,255")
STAND_IN = "stand-in"


MARGIN = COARSE_HALO  # image context the coarse CNN sees around the crop (its own window halo)


def coarse_map(tile: str, source: str, r0: int, c0: int, size: int) -> np.ndarray:
    """Background / road probabilities (2, size, size) of the crop at (r0, c0): the stand-in's
    from the whole tile (as before), the CNN's from the crop and a ``MARGIN`` around it (on a
    shared 2-core machine the whole 1500 px tile costs minutes per run)."""
    image, truth = roads_tile(tile)
    if source == STAND_IN:
        probs = stand_in_coarse(degrade_labels(truth, shift=3, drop=0.0, seed=1), 2, sigma=4.0)
        return np.ascontiguousarray(probs[:, r0 : r0 + size, c0 : c0 + size])
    bundle = _coarse_model(source)
    merge, why = class_merge(CLASSES, bundle.classes)
    if merge is None:
        raise SystemExit(f"--coarse {source}: {why}; it needs a road class (others merge into background)")
    a0, b0 = max(0, r0 - MARGIN), max(0, c0 - MARGIN)
    window = np.ascontiguousarray(image[:, a0 : r0 + size + MARGIN, b0 : c0 + size + MARGIN])
    probs = predict_coarse(bundle, Tile(image=window, valid=np.ones(window.shape[1:], bool)), device="cpu")
    probs = Pick(None, why, merge).adapt(probs)
    return np.ascontiguousarray(probs[:, r0 - a0 : r0 - a0 + size, c0 - b0 : c0 - b0 + size])


@functools.cache
def _coarse_model(source: str):
    return load_model(source, expect="coarse")


def paint(labels: np.ndarray, truth: np.ndarray, boxes) -> np.ndarray:
    out = labels.copy()
    for b in boxes:
        out[b.slices] = truth[b.slices]
    return out


def train(image, probs, labels, steps, seed, init=None):
    cfg = RNNTrainConfig(steps=steps, seed=seed, eval_seconds=None, eval_every=10**9)
    none = np.full(labels.shape, IGNORE, np.uint8)  # no hold-out: every painted pixel trains
    return train_rnn(image, probs, labels, CLASSES, cfg, init=init, val_labels=none).bundle


def one(tile: str, seed: int, args) -> dict:
    image, truth = roads_tile(tile)
    rng = np.random.default_rng(seed)
    s = args.crop
    for _ in range(200):  # a crop with some road in it (5-30 %), else there is nothing to refine
        r0, c0 = (int(v) for v in rng.integers(0, 1500 - s, size=2))
        if 0.05 <= truth[r0 : r0 + s, c0 : c0 + s].mean() <= 0.3:
            break
    img = np.ascontiguousarray(image[:, r0 : r0 + s, c0 : c0 + s])
    prb = coarse_map(tile, args.coarse, r0, c0, s)
    tru = np.ascontiguousarray(truth[r0 : r0 + s, c0 : c0 + s])
    t0 = time.perf_counter()
    blank = np.full(tru.shape, IGNORE, np.uint8)
    for k in range(200):  # --start-road: the first box shows some road, as a labeller would paint
        first_box = hints.random_boxes(blank, 1, args.box, seed + 7919 * k)
        if tru[first_box[0].slices].mean() >= args.start_road:
            break
    start = paint(blank, tru, first_box)
    first = train(img, prb, start, args.steps0, seed)
    tile_obj = Tile(image=img, valid=np.ones(tru.shape, bool))
    refined = refine(first, tile_obj, prb).final
    crf = dense_crf(img, prb)
    maps = [prb.argmax(0), crf.argmax(0), refined.argmax(0)]
    need = hints.need_map(refined, maps, start)
    arms = {"suggested": hints.suggest_boxes(need, start, args.boxes, args.box, spread=args.spread)}
    if args.committee:  # a third arm, scored on the same pixels: the entropy of the members' mean
        committee = hints.need_map([prb, crf, refined], maps, start)
        arms["committee"] = hints.suggest_boxes(committee, start, args.boxes, args.box, spread=args.spread)
    arms["random"] = hints.random_boxes(start, args.boxes, args.box, seed + 1000)
    painted = {name: paint(start, tru, boxes) for name, boxes in arms.items()}
    test = np.where(np.all([p == IGNORE for p in painted.values()], axis=0), tru, IGNORE).astype(np.uint8)
    row = {"tile": tile, "seed": seed, "crop_at": [r0, c0], "test_pixels": int((test != IGNORE).sum())}
    row["coarse_miou"] = evaluate(maps[0].astype(np.uint8), test, 2).mean_iou
    row["first_rnn_miou"] = evaluate(maps[2].astype(np.uint8), test, 2).mean_iou
    unpainted = start == IGNORE
    wrong = {"coarse": (maps[0] != tru) & unpainted, "first_rnn": (maps[2] != tru) & unpainted}
    for name, labels in painted.items():  # what each arm paints: the share of each map's errors
        new_px = (labels != IGNORE) & unpainted
        for m, err in wrong.items():
            row[f"{name}_covers_{m}_errors"] = round(float((err & new_px).sum() / max(1, err.sum())), 4)
    for name, labels in painted.items():
        bundle = train(img, prb, labels, args.steps1, seed, init=copy.deepcopy(first))
        pred = refine(bundle, tile_obj, prb).final.argmax(0).astype(np.uint8)
        sc = evaluate(pred, test, 2)
        row[f"{name}_miou"] = sc.mean_iou
        row[f"{name}_road_iou"] = float(sc.iou[1])
        row[f"{name}_road_pixels_painted"] = int(((labels == 1) & (start == IGNORE)).sum())
    row["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiles", nargs="+", default=["01", "05", "07"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--crop", type=int, default=384)
    ap.add_argument("--box", type=int, default=32)
    ap.add_argument("--boxes", type=int, default=6)
    ap.add_argument("--steps0", type=int, default=150)
    ap.add_argument("--steps1", type=int, default=300)
    ap.add_argument("--start-road", type=float, default=0.0, help="least road fraction of the first box")
    ap.add_argument("--spread", type=float, default=hints.HintWeights.distance_scale, help="0: boxes may pile up")
    ap.add_argument(
        "--committee", action="store_true", help="a third arm: entropy of the mean coarse / CRF / RNN probabilities"
    )
    ap.add_argument("--coarse", default=STAND_IN, help=f"'{STAND_IN}' or a coarse CNN model folder")
    ap.add_argument("--json", type=Path, help="written after every run, so a stopped benchmark keeps its rows")
    args = ap.parse_args()
    torch.set_num_threads(1)
    start = machine()
    runs = [(t, s) for s in args.seeds for t in args.tiles]  # every tile once before any twice
    rows: list[dict] = []
    for t, s in runs:
        rows.append(one(t, s, args))
        summary = summarise(rows, start, args, complete=len(rows) == len(runs))
        if args.json:
            args.json.write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=2))


def summarise(rows: list[dict], start: dict, args, complete: bool) -> dict:
    gain = [r["suggested_miou"] - r["random_miou"] for r in rows]
    out = {
        "machine": start,
        "machine_end": machine(),
        "args": {k: v for k, v in vars(args).items() if k != "json"},
        "complete": complete,
        "mean_suggested_miou": float(np.mean([r["suggested_miou"] for r in rows])),
        "mean_random_miou": float(np.mean([r["random_miou"] for r in rows])),
        "mean_gain": float(np.mean(gain)),
        "gain_min_max": [float(min(gain)), float(max(gain))],
    }
    if args.committee:
        out["mean_committee_miou"] = float(np.mean([r["committee_miou"] for r in rows]))
        out["mean_committee_gain"] = float(np.mean([r["committee_miou"] - r["random_miou"] for r in rows]))
    return out | {"runs": rows}


if __name__ == "__main__":
    main()
