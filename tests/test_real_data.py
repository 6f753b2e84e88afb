"""On real imagery from ../shared/data (read at run time, never copied into the project)."""

import pytest

from refiner.classes import ClassSpec
from refiner.inference import refine
from refiner.metrics import evaluate
from refiner.raster import read_image, read_labels
from refiner.synthetic import degrade_labels
from refiner.train import RNNTrainConfig, train_rnn
from tests.conftest import SHARED_DATA, coarse_probs_from_labels

ROADS = SHARED_DATA / "massachusetts_roads"
pytestmark = pytest.mark.skipif(not ROADS.is_dir(), reason="../shared/data is not beside the project")


def test_rnn_beats_the_coarse_map_on_a_massachusetts_crop():
    """A coarse map made like a stride-4 CNN's (blocky, blurred, objects shifted) is refined by an
    RNN fine-tuned on one crop of the tile and evaluated on another, unseen crop."""
    classes = ClassSpec(("background", "road"), (0, 255))
    train_win, test_win = (0, 0, 320, 320), (700, 700, 320, 320)
    k = len(classes)
    crops = {}
    for name, win in (("train", train_win), ("test", test_win)):
        tile = read_image(ROADS / "images" / "08.jpg", window=win)
        truth = read_labels(ROADS / "masks" / "08.png", classes, window=win)
        coarse = coarse_probs_from_labels(degrade_labels(truth, shift=2, drop=0.0, seed=1), k, sigma=3.0)
        crops[name] = (tile, truth, coarse)
    tile, truth, coarse = crops["train"]
    result = train_rnn(tile.image, coarse, truth, classes, RNNTrainConfig(steps=300, eval_every=50))
    tile, truth, coarse = crops["test"]
    before = evaluate(coarse.argmax(0), truth, k)
    refined = refine(result.bundle, tile, coarse)
    after = evaluate(refined.class_map(), truth, k)
    assert after.mean_iou > before.mean_iou + 0.02, (before, after)
    assert after.iou[1] > before.iou[1]
