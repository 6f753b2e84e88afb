"""A new RNN with and without the pull to the coarse map on the synthetic demo (issue 27).

The demo's tiles look alike (one generator), so what a new RNN learns on the enhancement tile
carries to the test tile and the pull (``distill``, 0 in ``SCRATCH_DEFAULTS`` since the tiles from
elsewhere were measured) only slows it; on other Massachusetts tiles unlike the patch it is what
keeps the RNN from learning its patch's look (docs/results.md, "A new RNN's defaults" and "A new
RNN on tiles from elsewhere"). Mean IoU of the coarse map and of each RNN, on the enhancement tile
(fully labelled, trained on) and on the test tile::

    python -m refiner demo-data --out runs/demo
    PYTHONPATH=. python benchmarks/pull_on_demo.py runs/demo --steps 150
"""

from __future__ import annotations

import argparse
from pathlib import Path

from refiner.core.classes import ClassSpec
from refiner.core.metrics import confusion_matrix, scores_from_confusion
from refiner.data.read import read_image, read_labels
from refiner.models.inference import predict_coarse, refine
from refiner.models.store import load_model
from refiner.train.rnn import RNNTrainConfig, train_rnn

DEMO_COARSE = Path(__file__).resolve().parents[1] / "assets" / "demo" / "coarse"
SETTINGS = {
    "plain": {},
    "pull 1.0": {"identity_start": True, "distill": 1.0, "jitter": 0.2},
    "pull 3.0": {"identity_start": True, "distill": 3.0, "jitter": 0.2},
    "pull 5.0": {"identity_start": True, "distill": 5.0, "jitter": 0.2},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("demo", type=Path, help="the folder `python -m refiner demo-data --out` wrote")
    ap.add_argument("--steps", type=int, default=150)
    args = ap.parse_args()
    classes = ClassSpec(("background", "building", "road"), (0, 1, 2))
    coarse = load_model(DEMO_COARSE, expect="coarse")

    def load(name: str) -> tuple:
        tile = read_image(args.demo / f"{name}.tif")
        return tile, read_labels(args.demo / f"{name}_truth.tif", classes, like=tile)

    (enh, enh_labels), (test, test_labels) = load("enhance"), load("test")
    enh_probs, test_probs = predict_coarse(coarse, enh), predict_coarse(coarse, test)

    def miou(probs, labels) -> float:  # noqa: ANN001
        return scores_from_confusion(confusion_matrix(probs.argmax(0), labels, len(classes))).mean_iou

    print(
        f"coarse map: enhancement tile {miou(enh_probs, enh_labels):.3f}, test tile {miou(test_probs, test_labels):.3f}"
    )
    for name, options in SETTINGS.items():
        bundle = train_rnn(enh.image, enh_probs, enh_labels, classes, RNNTrainConfig(steps=args.steps, **options),
                           resolution=1.0).bundle  # fmt: skip
        own, other = (
            miou(refine(bundle, enh, enh_probs).final, enh_labels),
            miou(refine(bundle, test, test_probs).final, test_labels),
        )
        print(f"{name}, {args.steps} steps: enhancement tile {own:.3f}, test tile {other:.3f}", flush=True)


if __name__ == "__main__":
    main()
