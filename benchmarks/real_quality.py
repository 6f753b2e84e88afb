"""Quality of the shipped real-data models on the held-out test tiles (numbers in docs/results.md).

For each task (roads on Massachusetts, buildings on Inria), on the split's test tiles at 1 m:
the coarse CNN, the dense CRF grid-searched on a painted patch, the pretrained RNN, and the RNN
fine-tuned from that patch with :func:`refiner.train.rnn.finetune_from_pretrained` (per-iteration
curve too). Scores are per task: IoU of the class against everything else, and their mean
(argmax over the three classes, then class / not class, as in the model cards; the CRF's
parameters are grid-searched on the patch's collapsed 2-class map, then it runs on the 3-class map).
Then once through the CLI scene path (``predict`` + ``refine``) on the georeferenced Inria test
GeoTIFF at its own 0.3 m grid.

    PYTHONPATH=. python benchmarks/real_quality.py --json benchmarks/results/real_quality.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from refiner.baselines.crf import DEFAULT_GRID, dense_crf, grid_search
from refiner.core.classes import IGNORE
from refiner.models.inference import predict_coarse, refine
from refiner.models.store import load_model
from refiner.recipes.pretrain import (
    MACHINE,
    PARTIAL,
    TASK_CLASS,
    TileData,
    load_split,
    load_tile,
    scores_2x2,
    task_confusion,
)
from refiner.train.rnn import FINETUNE_DEFAULTS, finetune_from_pretrained

ROOT = Path(__file__).resolve().parents[1]
TASKS = {
    # task: (patch set, patch tile, window row, col, height, width at 1 m), test sets. Each window
    # is at most 500 x 500 px of its source image: 500^2 m of a 1 m tile, 150^2 m (500^2 px at
    # 0.3 m) in the middle of the 300 m Inria validation tile.
    "road": (("massachusetts_roads", "07", (500, 500, 500, 500)), ("massachusetts_roads", "massachusetts_merged")),
    "building": (
        ("inria_austin", "austin_x616800_y3344700", (75, 75, 150, 150)),
        ("inria_austin", "inria_crops256", "massachusetts_merged"),
    ),
}


def collapse(probs: np.ndarray, task: str) -> np.ndarray:
    """3-class probabilities -> (not class, class)."""
    c = TASK_CLASS[task]
    return np.stack([1 - probs[c], probs[c]]).astype(np.float32)


def score(items: list[tuple[np.ndarray, TileData]], task: str) -> dict:
    """Scores of 3-class maps for ``task`` (argmax over the three classes, as the model cards)."""
    return scores_2x2(sum(task_confusion(p, d, task) for p, d in items))


def window(d: TileData, win: tuple[int, int, int, int]) -> TileData:
    r, c, h, w = win
    return TileData(d.set, d.name, d.image[:, r : r + h, c : c + w], d.labels[r : r + h, c : c + w], d.tasks)


def run_task(task: str, coarse, rnn, sets, steps: int | None, seed: int) -> dict:
    (pset, pname, win), test_sets = TASKS[task]
    patch_tile = load_tile(sets[pset], pname)
    tests = [load_tile(sets[s], t) for s in test_sets for t in sets[s].roles["test"]]
    t0 = time.perf_counter()
    # the patch: the labelled window, on the whole tile's coarse map (the app's case)
    p_probs = predict_coarse(coarse, patch_tile.tile(), device="cpu")
    lab = np.full_like(patch_tile.labels, IGNORE)
    r, c, h, w = win
    lab[r : r + h, c : c + w] = patch_tile.labels[r : r + h, c : c + w]
    t_probs = [predict_coarse(coarse, d.tile(), device="cpu") for d in tests]
    out: dict = {
        "patch": {"set": pset, "tile": pname, "window": list(win)},
        "test_tiles": [f"{d.set}/{d.name}" for d in tests],
    }
    out["cnn"] = score(list(zip(t_probs, tests, strict=True)), task)
    # CRF: parameters grid-searched on the patch's collapsed 2-class map (its labels say only
    # road / not road), then run on the 3-class maps (the parameters do not depend on K)
    bl = np.where(lab == TASK_CLASS[task], 1, np.where(lab == IGNORE, IGNORE, 0)).astype(np.uint8)
    gs = grid_search(patch_tile.tile().image, collapse(p_probs, task), bl, DEFAULT_GRID)
    out["crf_params"] = gs.best.to_dict()
    out["crf"] = score([(dense_crf(d.tile().image, p, gs.best), d) for p, d in zip(t_probs, tests, strict=True)], task)
    # pretrained RNN, every iteration
    refs = [refine(rnn, d.tile(), p, keep_all=True) for p, d in zip(t_probs, tests, strict=True)]
    out["rnn_pretrained"] = score([(f.final, d) for f, d in zip(refs, tests, strict=True)], task)
    out["rnn_pretrained_curve"] = [
        score([(f.probs[t], d) for f, d in zip(refs, tests, strict=True)], task)["mean_iou"]
        for t in range(len(refs[0].probs))
    ]
    # fine-tuned from the patch
    cfg = FINETUNE_DEFAULTS if steps is None else dataclasses.replace(FINETUNE_DEFAULTS, steps=steps)
    cfg = dataclasses.replace(cfg, seed=seed)
    t1 = time.perf_counter()
    res = finetune_from_pretrained(patch_tile.tile().image, p_probs, lab, rnn, cfg, partial=PARTIAL, device="cpu")
    out["finetune"] = {"seconds": time.perf_counter() - t1, "steps": res.bundle.info.get("trained_steps"),
                       "best_step": res.bundle.info.get("best_step"), "stopped": res.stopped,
                       "best_held_out": res.best_val, "config": dataclasses.asdict(cfg)}  # fmt: skip
    refs = [refine(res.bundle, d.tile(), p, keep_all=True) for p, d in zip(t_probs, tests, strict=True)]
    out["rnn_finetuned"] = score([(f.final, d) for f, d in zip(refs, tests, strict=True)], task)
    out["rnn_finetuned_curve"] = [
        score([(f.probs[t], d) for f, d in zip(refs, tests, strict=True)], task)["mean_iou"]
        for t in range(len(refs[0].probs))
    ]
    # the rest of the patch's own tile (outside the painted window): the app's "rest of the tile"
    rest = TileData(patch_tile.set, patch_tile.name, patch_tile.image, patch_tile.labels.copy(), patch_tile.tasks)
    rest.labels[r : r + h, c : c + w] = IGNORE
    out["rest_of_patch_tile"] = {
        "cnn": score([(p_probs, rest)], task),
        "crf": score([(dense_crf(patch_tile.tile().image, p_probs, gs.best), rest)], task),
        "rnn_pretrained": score([(refine(rnn, patch_tile.tile(), p_probs).final, rest)], task),
        "rnn_finetuned": score([(refine(res.bundle, patch_tile.tile(), p_probs).final, rest)], task),
    }
    out["seconds"] = time.perf_counter() - t0
    return out


def cli_scene(coarse_dir: Path, rnn_dir: Path, sets) -> dict:
    """predict + refine through the CLI on the georeferenced Inria test GeoTIFF (0.3 m, models at 1 m)."""
    import rasterio

    from refiner.cli import main

    spec = sets["inria_austin"]
    name = spec.roles["test"][0]
    image = spec.root / spec.images / f"{name}.tif"
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        t0 = time.perf_counter()
        assert main(["predict", "--model", str(coarse_dir), "--image", str(image), "--out", str(t / "p.tif")]) == 0
        assert main(["refine", "--model", str(rnn_dir), "--image", str(image), "--probs", str(t / "p.tif"),
                     "--out", str(t / "map.tif")]) == 0  # fmt: skip
        seconds = time.perf_counter() - t0
        with rasterio.open(t / "map.tif") as m, rasterio.open(spec.root / spec.masks / f"{name}.tif") as g:
            pred, truth = m.read(1) == 1, g.read(1) == 255
            geo = m.crs == g.crs and m.transform.almost_equals(g.transform)
        with rasterio.open(t / "p.tif") as p:
            cnn = p.read(2) > np.maximum(p.read(1), p.read(3))

    def iou(a, b):
        return float((a & b).sum() / max(1, (a | b).sum()))

    return {"image": str(image.relative_to(ROOT.parent)), "grid": "0.3 m source grid", "georeferencing_kept": bool(geo),
            "building_iou_cnn": iou(cnn, truth), "building_iou_rnn": iou(pred, truth), "seconds": seconds}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--coarse", type=Path, default=ROOT / "assets/pretrained/coarse_1m")
    ap.add_argument("--rnn", type=Path, default=ROOT / "assets/pretrained/rnn_1m")
    ap.add_argument("--split", type=Path, default=ROOT / "experiments/pretrained/split.toml")
    ap.add_argument("--steps", type=int, default=None, help="fine-tune steps (default FINETUNE_DEFAULTS)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tasks", nargs="+", default=list(TASKS))
    ap.add_argument("--no-cli", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    sets = load_split(args.split)
    coarse, rnn = load_model(args.coarse, expect="coarse"), load_model(args.rnn, expect="rnn")
    report = {"machine": MACHINE, "torch_threads": 1, "coarse": str(args.coarse), "rnn": str(args.rnn),
              "coarse_info": {k: coarse.info.get(k) for k in ("trained_steps", "best_step", "training_seconds")},
              "rnn_info": {k: rnn.info.get(k) for k in ("trained_steps", "best_step", "training_seconds")}}  # fmt: skip
    for task in args.tasks:
        report[task] = run_task(task, coarse, rnn, sets, args.steps, args.seed)
        r = report[task]
        print(f"{task}: " + ", ".join(f"{m} IoU {r[m]['iou']:.3f} mIoU {r[m]['mean_iou']:.3f}"
                                      for m in ("cnn", "crf", "rnn_pretrained", "rnn_finetuned")), flush=True)  # noqa: E501  # fmt: skip
    if not args.no_cli:
        report["cli_scene"] = cli_scene(args.coarse, args.rnn, sets)
        print(f"cli scene: {report['cli_scene']}", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
