"""Coarse prediction at a tile's edges: the border band is no more biased than the interior."""

import numpy as np
import pytest
import torch

from refiner.data.read import read_image
from refiner.data.synthetic import DEMO_CLASSES
from refiner.data.tile import Tile
from refiner.models.coarse import CoarseCNN, CoarseConfig
from refiner.models.inference import predict_coarse, refine
from refiner.models.store import ModelBundle, load_model
from tests.helpers import REPO, SHARED_DATA

PRETRAINED = REPO / "assets" / "pretrained"


def test_an_image_without_edges_gets_the_same_probabilities_at_its_border_as_inside():
    """Zero padding and the x4 deconvolution's missing outer terms pulled edge pixels towards uniform."""
    torch.manual_seed(0)
    bundle = ModelBundle("coarse", CoarseCNN(CoarseConfig(num_classes=3)), DEMO_CLASSES)
    with torch.no_grad():
        bundle.net.features[-1].bias.copy_(torch.tensor([2.0, -1.0, 0.5]))  # a clear, non-uniform answer
    image = np.ones((3, 120, 96), np.float32) * np.array([0.3, 0.5, 0.4], np.float32)[:, None, None]
    probs = predict_coarse(bundle, Tile(image, np.ones((120, 96), bool)), device="cpu")
    np.testing.assert_allclose(probs, np.broadcast_to(probs[:, 60:61, 48:49], probs.shape), atol=1e-5)


def _edge_and_inside(road: np.ndarray) -> tuple[float, float]:
    """Mean road probability on the outer 4 px ring and on the ring 10-40 px inside."""
    outer = np.ones(road.shape, bool)
    outer[4:-4, 4:-4] = False
    inside = np.zeros(road.shape, bool)
    inside[10:-10, 10:-10] = True
    inside[40:-40, 40:-40] = False
    return float(road[outer].mean()), float(road[inside].mean())


@pytest.mark.parametrize(
    "image,window,pixel_size",
    [
        ("massachusetts_roads/images/11.jpg", (900, 0, 600, 600), 1.0),  # 1 m, the bottom-left corner
        ("inria_austin/images/austin_x616800_y3344700.tif", None, None),  # 0.3 m, resampled to 1 m and back
    ],
)
def test_the_border_band_of_a_real_tile_is_no_more_road_than_inside(image, window, pixel_size):
    """Before: the outer 4 px were 2.2-3.5x as road as the band just inside (coarse and RNN), so the
    bottom 10 rows of a 0.3 m tile were 52 % road against 7 % inside and exports drew fake edge roads."""
    path = SHARED_DATA / image
    if not path.is_file() or not (PRETRAINED / "coarse_1m").is_dir():
        pytest.skip("needs ../shared/data and the shipped models")
    torch.set_num_threads(1)
    tile = read_image(path, window=window)
    tile.pixel_size = pixel_size or tile.pixel_size
    coarse = load_model(PRETRAINED / "coarse_1m", expect="coarse")
    road = coarse.classes.names.index("road")
    probs = predict_coarse(coarse, tile, device="cpu")
    refined = refine(load_model(PRETRAINED / "rnn_1m", expect="rnn"), tile, probs, device="cpu").final
    for name, p in (("coarse", probs), ("RNN", refined)):
        edge, inside = _edge_and_inside(p[road])
        assert edge <= 1.5 * inside, f"{name}: road {edge:.3f} on the edge ring, {inside:.3f} just inside"
