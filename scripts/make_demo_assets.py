"""Produce the web app's embedded demo: a synthetic tile plus pretrained coarse CNN and RNN.

Run once and commit ``assets/demo`` (34 minutes on two CPU cores shared with other jobs; the
coarse CNN is ~0.45 s/step on two idle cores, so about 6 minutes there)::

    OMP_NUM_THREADS=2 .venv/bin/python scripts/make_demo_assets.py

Three synthetic scenes, as in the paper's protocol: the coarse CNN learns from the OSM-like
(shifted, incomplete) labels of scene 1; the RNN learns from the exact truth of scene 3 on top of
that CNN's probabilities; the demo tile is scene 2, which neither network has seen. Its truth is
shipped too, as a mask users can import to see what painting a whole tile would give.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, no install

from refiner.data.synthetic import DEMO_CLASSES, make_scene
from refiner.data.write import write_raster
from refiner.models.inference import predict_coarse  # noqa: E402
from refiner.models.rnn import RNNConfig
from refiner.models.store import save_model
from refiner.train.coarse import CoarseTrainConfig, train_coarse
from refiner.train.rnn import RNNTrainConfig, train_rnn

SIZE = 512
COARSE_SEED, TILE_SEED, RNN_SEED = 1, 2, 3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="assets/demo")
    ap.add_argument("--coarse-steps", type=int, default=600)
    ap.add_argument("--rnn-steps", type=int, default=400)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    coarse_scene = make_scene(SIZE, seed=COARSE_SEED)
    coarse = train_coarse(
        [coarse_scene.image],
        [coarse_scene.osm],
        DEMO_CLASSES,
        CoarseTrainConfig(steps=args.coarse_steps, batch_size=16, seed=0),
        resolution=1.0,
        progress=lambda p: (
            print(f"coarse {p.step}/{p.steps} loss {p.loss:.3f}", flush=True) if p.step % 50 == 0 else None
        ),
    )
    coarse.info["trained_on"] = f"synthetic scene seed {COARSE_SEED}, OSM-like labels"
    save_model(coarse, out / "coarse")

    rnn_scene = make_scene(SIZE, seed=RNN_SEED)
    rnn_probs = predict_coarse(coarse, rnn_scene.tile())
    result = train_rnn(
        rnn_scene.image,
        rnn_probs,
        rnn_scene.truth,
        DEMO_CLASSES,
        RNNTrainConfig(steps=args.rnn_steps, eval_every=50),
        arch=RNNConfig(num_classes=3),
        resolution=1.0,
    )
    result.bundle.info["trained_on"] = f"synthetic scene seed {RNN_SEED}, exact labels"
    result.bundle.optimizer_state = None  # users continue from the weights with a fresh AdaGrad
    save_model(result.bundle, out / "rnn")

    tile = make_scene(SIZE, seed=TILE_SEED)
    write_raster(
        out / "tile.tif",
        (tile.image * 255 + 0.5).astype(np.uint8),
        tile.georef,
        descriptions=["red", "green", "blue"],
    )
    write_raster(out / "truth.tif", tile.truth, tile.georef)
    meta = {
        "command": "OMP_NUM_THREADS=2 python scripts/make_demo_assets.py",
        "size": SIZE,
        "seeds": {"coarse": COARSE_SEED, "tile": TILE_SEED, "rnn": RNN_SEED},
        "classes": DEMO_CLASSES.to_dict(),
        "coarse_steps": args.coarse_steps,
        "rnn_steps": args.rnn_steps,
        "rnn_best_val_mean_iou": result.best_val,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    (out / "demo.json").write_text(json.dumps(meta, indent=2))
    print(json.dumps(meta, indent=2))


if __name__ == "__main__":
    main()
