"""Does the shipped RNN gain on roads anywhere? Coarse map and RNN, road mean IoU, per role of the split.

The RNN lost 0.2 points of road mean IoU on the test tiles (issue #21). If it gained on the tiles
it learnt from, it would be learning something the test tiles do not share; if it gained only on
the validation tiles, it would be its offsets, chosen there. This scores the coarse map and the
RNN on a few of the RNN's training tiles (the recipe trains on the first ``tiles_per_set`` of
each set), the whole validation tiles and the test tiles::

    PYTHONPATH=. python benchmarks/rnn_by_role.py
    PYTHONPATH=. python benchmarks/rnn_by_role.py --coarse <model folder> --rnn <model folder>
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from refiner.models.pretrained import pretrained_root
from refiner.models.store import load_model
from refiner.recipes.pretrain import load_split, load_tile, scores_on

SPLIT = Path(__file__).resolve().parents[1] / "experiments" / "pretrained" / "split.toml"
ROAD_SETS = ("massachusetts_roads", "massachusetts_roads_extra")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--coarse", type=Path, default=pretrained_root() / "coarse_1m")
    ap.add_argument("--rnn", type=Path, default=pretrained_root() / "rnn_1m")
    ap.add_argument("--train-tiles", type=int, default=4, help="training tiles per road set (default 4)")
    args = ap.parse_args()
    sets = load_split(SPLIT)
    coarse, rnn = load_model(args.coarse, expect="coarse"), load_model(args.rnn, expect="rnn")
    for role in ("train", "val", "test"):
        keep = args.train_tiles if role == "train" else None
        names = [(s, t) for s in ROAD_SETS for t in sets[s].roles[role][:keep]]
        tiles = [load_tile(sets[s], t) for s, t in names]
        refined, base = scores_on(rnn, tiles, coarse)
        assert base is not None  # an RNN is scored beside its coarse map
        row = {
            "role": role,
            "tiles": [t for _, t in names],
            "coarse": {k: round(base["road"][k], 4) for k in ("mean_iou", "iou")},
            "rnn": {k: round(refined["road"][k], 4) for k in ("mean_iou", "iou")},
        }
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
