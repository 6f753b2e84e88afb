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
INRIA = SHARED_DATA / "inria_austin"
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


@pytest.mark.skipif(not INRIA.is_dir(), reason="the Inria Austin tiles are not in ../shared/data")
def test_a_real_03m_tile_streams_through_the_1m_working_grid_like_the_whole_tile(tmp_path):
    """Inria Austin at 0.3 m, a model at 1 m: refine_scene by windows (resampled on the way in and
    out) gives the whole-tile result, with the tile's own georeferencing."""
    import numpy as np
    import rasterio
    import torch

    from refiner.models.io import ModelBundle, save_model
    from refiner.models.rnn import RefinerRNN, RNNConfig
    from refiner.raster import write_probs
    from refiner.scene import refine_scene

    image = INRIA / "images" / "austin_x617100_y3344400.tif"
    classes = ClassSpec(("background", "building"), (0, 255))
    tile = read_image(image)
    truth = read_labels(INRIA / "masks" / image.name, classes, like=tile)
    probs = coarse_probs_from_labels(degrade_labels(truth, shift=6, drop=0.0, seed=1), 2, sigma=8.0)
    write_probs(tmp_path / "probs.tif", probs, tile.georef, classes)
    torch.manual_seed(0)
    bundle = ModelBundle("rnn", RefinerRNN(RNNConfig(2, iterations=3)).eval(), classes, resolution=1.0)
    save_model(bundle, tmp_path / "rnn")
    refine_scene(tmp_path / "rnn", image, tmp_path / "probs.tif", tmp_path / "map.tif",
                 probs_out=tmp_path / "p.tif", window=96)  # fmt: skip
    ref = refine(bundle, tile, probs)
    with rasterio.open(tmp_path / "map.tif") as m, rasterio.open(tmp_path / "p.tif") as p:
        assert m.transform == tile.georef.transform and m.crs == tile.georef.crs
        streamed, streamed_probs = m.read(1), p.read()
    np.testing.assert_allclose(streamed_probs, ref.final, atol=2e-5)
    assert np.array_equal(streamed, classes.decode(ref.class_map()))
