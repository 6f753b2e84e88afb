"""Test-time augmentation: does averaging the coarse CNN's 8 turns and flips pay for its 8x time?

    nice -n 5 python benchmarks/tta.py [--coarse MODEL_DIR] [--rnn MODEL_DIR] [--json out.json]

Scores the shipped coarse CNN without and with ``predict_coarse(tta=True)``, and the shipped RNN
on each of the two maps (and, averaged the same way over its own 8 views, on the averaged map):

- ``test``: the shipped models' test tiles (``experiments/pretrained/split.toml``), pooled per
  task as their cards are (road: Massachusetts 08, 11, 12 and the 3-class tile; building: the
  Inria Austin test tile and crops and the 3-class tile);
- ``report``: the adaptation benchmark's report tiles (``benchmarks/adaptation.py``: WHU
  cities, DeepGlobe, SpaceNet; never used to choose anything), the shipped map on the whole
  tile, no patch painted.

Seconds are this machine's for the whole set, per map.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.adaptation import REPORT, load, rest_scores  # noqa: E402
from benchmarks.common import ROOT, machine  # noqa: E402

SPLIT = ROOT / "experiments" / "pretrained" / "split.toml"


def _rounded(scores: dict) -> dict:
    return {task: {k: round(s[k], 4) for k in ("iou", "mean_iou")} for task, s in scores.items()}


def _rnn_averaged(rnn, tile, probs):  # noqa: ANN001, ANN202 - the RNN on the 8 turned tiles and maps, turned back
    from refiner.data.tile import Tile
    from refiner.models.inference import SYMMETRIES, refine, turn, unturn

    total = 0.0
    for k, f in SYMMETRIES:
        view = Tile(np.ascontiguousarray(turn(tile.image, k, f)), np.ascontiguousarray(turn(tile.valid, k, f)))
        total = total + unturn(refine(rnn, view, np.ascontiguousarray(turn(probs, k, f))).final, k, f)
    return total / len(SYMMETRIES)


def test_tiles(coarse, rnn) -> dict:  # noqa: ANN001 - model bundles
    """Pooled task scores on the split's test tiles: coarse and RNN, without and with TTA.

    With TTA, the RNN also runs on the 8 turned views of the averaged map (``rnn_averaged``).
    """
    from refiner.models.inference import predict_coarse, refine
    from refiner.recipes.pretrain import load_role, load_split, score_probs

    tiles = load_role(load_split(SPLIT), "test")
    out = {}
    for tta in (False, True):
        t0 = time.perf_counter()
        maps = [(predict_coarse(coarse, d.tile(), device="cpu", tta=tta), d) for d in tiles]
        seconds = time.perf_counter() - t0
        refined = [(refine(rnn, d.tile(), p).final, d) for p, d in maps]
        name = "tta" if tta else "plain"
        out[name] = {"coarse": _rounded(score_probs(maps)), "rnn": _rounded(score_probs(refined)),
                     "coarse_seconds": round(seconds, 1)}  # fmt: skip
        if tta:
            averaged = [(_rnn_averaged(rnn, d.tile(), p), d) for p, d in maps]
            out[name]["rnn_averaged"] = _rounded(score_probs(averaged))
        print(json.dumps({"test": name, **out[name]}), flush=True)
    return out


def report_tiles(coarse) -> list[dict]:  # noqa: ANN001 - a model bundle
    """Each report tile's whole-tile scores, the shipped map without and with TTA."""
    from refiner.models.inference import predict_coarse

    rows = []
    for t in REPORT:
        tile, truth = load(t)
        row: dict = {"tile": t.name}
        for tta in (False, True):
            t0 = time.perf_counter()
            pred = predict_coarse(coarse, tile, tta=tta).argmax(0)
            scores = rest_scores(pred, truth, (0, 0, 0), t.labels)
            row["tta" if tta else "plain"] = {k: round(v, 4) for k, v in scores.items()}
            row[("tta" if tta else "plain") + "_seconds"] = round(time.perf_counter() - t0, 2)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    """Run both sets and write the JSON."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    p.add_argument("--coarse", type=Path, default=None, help="coarse model folder (default: the shipped coarse_1m)")
    p.add_argument("--rnn", type=Path, default=None, help="RNN model folder (default: the shipped rnn_1m)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    import refiner

    root = refiner.pretrained_root()
    coarse = refiner.load_model(args.coarse or root / "coarse_1m", expect="coarse")
    rnn = refiner.load_model(args.rnn or root / "rnn_1m", expect="rnn")
    out: dict = {"machine": machine(), "test": test_tiles(coarse, rnn), "report": report_tiles(coarse)}
    rep = out["report"]
    out["report_mean_miou"] = {k: round(sum(r[k]["mean_iou"] for r in rep) / len(rep), 4) for k in ("plain", "tta")}
    print(json.dumps({"report_mean_miou": out["report_mean_miou"]}))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
