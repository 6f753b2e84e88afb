"""Why the shipped coarse CNN's building IoU on its test tiles stays under 0.45 (issue #21).

    PYTHONPATH=. python benchmarks/building_gap.py [--json out.json]

Two checks on the building test tiles of ``experiments/pretrained/split.toml``:

- ``blur``: each large building test tile's building IoU as it is and blurred to 1.465 m and
  2 m (area-averaged down, bilinear back up): is the Massachusetts 3-class tile's coarser pixel
  (1.465 m, upsampled) what costs it?
- ``calibration``: on the Massachusetts 3-class tile, the predicted and true building share,
  precision and recall, and the IoU with the building score offset moved by 0.5 to 2.0.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from benchmarks.common import ROOT, machine  # noqa: E402

SPLIT = ROOT / "experiments" / "pretrained" / "split.toml"


def blurred(image: np.ndarray, factor: float) -> np.ndarray:
    """``image`` (C, H, W) in [0, 1] as if seen at ``factor`` times its pixel size, on its own grid."""
    x = torch.from_numpy(np.ascontiguousarray(image, np.float32))[None]
    h, w = image.shape[1:]
    small = F.interpolate(x, size=(round(h / factor), round(w / factor)), mode="area")
    return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)[0].clamp(0, 1).numpy()


def main() -> None:
    """Run both checks and print (and write) their rows."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    import refiner
    from refiner.recipes.pretrain import load_role, load_split, score_probs, task_maps

    coarse = refiner.load_model(refiner.pretrained_root() / "coarse_1m", expect="coarse")
    tiles = [d for d in load_role(load_split(SPLIT), "test") if "building" in d.tasks and d.labels.shape[0] > 200]
    out: dict = {"machine": machine(), "blur": [], "calibration": {}}
    for d in tiles:
        row: dict = {"set": d.set, "tile": d.name}
        for factor in (1.0, 1.465, 2.0):
            tile = dataclasses.replace(d.tile(), image=blurred(d.tile().image, factor))
            probs = refiner.predict_coarse(coarse, tile, device="cpu")
            row[str(factor)] = round(score_probs([(probs, d)])["building"]["iou"], 4)
        out["blur"].append(row)
        print(json.dumps(row), flush=True)
    merged = next(d for d in tiles if d.set == "massachusetts_merged")
    logp = np.log(np.clip(refiner.predict_coarse(coarse, merged.tile(), device="cpu"), 1e-6, 1))
    pred, truth = task_maps(logp, merged.labels, "building")
    keep = truth != 255
    tp, fp = int((pred & truth)[keep].sum()), int((pred & (1 - truth))[keep].sum())
    fn = int(((1 - pred) & truth)[keep].sum())
    cal = {"true_share": round(float(truth[keep].mean()), 4), "predicted_share": round(float(pred[keep].mean()), 4),
           "precision": round(tp / (tp + fp), 4), "recall": round(tp / (tp + fn), 4), "iou_by_offset": {}}  # fmt: skip
    for shift in (0.0, 0.5, 1.0, 1.5, 2.0):
        moved = logp.copy()
        moved[1] += shift
        cal["iou_by_offset"][str(shift)] = round(score_probs([(moved, merged)])["building"]["iou"], 4)
    out["calibration"] = cal
    print(json.dumps({"calibration": cal}), flush=True)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
