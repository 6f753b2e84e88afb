"""A new RNN from a painted patch of a tile from elsewhere: how much of the rest of the tile it fixes.

    nice -n 5 python benchmarks/new_rnn_elsewhere.py --config plain [--tiles NAME ...] [--steps 300] [--json out.json]

What the Train page's "a new RNN (from scratch)" does on a user's tile: the shipped coarse map,
a 300 x 300 px patch painted where the objects are (``benchmarks/adaptation.py``'s report tiles
and placement; labels from the tile's reference, "not building" / "not road" as partial labels),
an RNN trained on it at the coarse map's 1 m grid, and the mean IoU of every iteration's map on
the *rest* of the tile. Configs (``RNNTrainConfig``, ``--steps`` steps, one thread):

- ``plain``: the paper's training, the dataclass's own settings (Glorot start, no pull, no jitter);
- ``pull3``: identity start, jitter 0.2 and a pull of 3.0 towards the coarse map (the new-RNN
  default from 2026-12-07 until this benchmark);
- ``ident``: identity start and jitter 0.2 without the pull.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.adaptation import PARTIAL, REPORT, load, place, rest_scores  # noqa: E402
from benchmarks.common import machine  # noqa: E402

CONFIGS = {
    "plain": {},
    "pull3": {"identity_start": True, "jitter": 0.2, "distill": 3.0},
    "ident": {"identity_start": True, "jitter": 0.2},
}


def run_tile(t, coarse, config: str, steps: int, size: int = 300) -> dict:  # noqa: ANN001 - a report tile, a model
    """One tile: per-iteration mean IoU on the rest of the tile of a new RNN trained on the patch."""
    import refiner
    from refiner.data.resample import to_working
    from refiner.train.rnn import RNNTrainConfig, train_rnn
    from refiner.train.sampling import restrict_to_window

    tile, truth = load(t)
    shipped = refiner.predict_coarse(coarse, tile)
    window = place(truth, shipped, size, "objects")
    labels = restrict_to_window(truth, (window[0], window[1], size, size))
    work = to_working(tile, coarse.resolution, shipped, [labels])
    assert work.probs is not None
    cfg = RNNTrainConfig(steps=steps, **CONFIGS[config])
    row: dict = {"tile": t.name, "config": config, "steps": steps}
    try:
        res = train_rnn(work.tile.image, work.probs, work.labels[0], coarse.classes, cfg, partial=PARTIAL,
                        resolution=coarse.resolution)  # fmt: skip
    except ValueError as exc:  # a patch of one class: what the user would be told
        return {**row, "refused": str(exc)}
    maps = refiner.refine(res.bundle, tile, shipped, keep_all=True).probs
    row["mean_iou"] = [round(rest_scores(p.argmax(0), truth, window, t.labels)["mean_iou"], 4) for p in maps]
    row["best_step"] = res.bundle.info.get("best_step")
    return row


def main() -> None:
    """Run one config on the report tiles and print (and write) a row per tile."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    p.add_argument("--config", choices=sorted(CONFIGS), required=True)
    p.add_argument("--tiles", nargs="*", default=None, help="only these report tiles")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    torch.set_num_threads(1)
    import refiner

    coarse = refiner.load_model(refiner.pretrained_root() / "coarse_1m", expect="coarse")
    out: dict = {"machine": machine(), "config": args.config, "rows": []}
    for t in REPORT:
        if args.tiles and t.name not in args.tiles:
            continue
        row = run_tile(t, coarse, args.config, args.steps)
        out["rows"].append(row)
        print(json.dumps(row), flush=True)
        if args.json:
            args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
