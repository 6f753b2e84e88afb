"""predict_coarse on its own: windows stitch to the whole-tile result, a tile at another resolution
goes through the working grid and back, and a class bias shifts the probabilities as the formula says."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine

from refiner.core.paths import ASSETS
from refiner.data.synthetic import make_scene
from refiner.data.tile import Georef, Tile
from refiner.models.coarse import CoarseCNN, CoarseConfig
from refiner.models.inference import predict_coarse
from refiner.models.store import ModelBundle, load_model


@pytest.fixture(scope="module")
def demo_coarse():
    """The shipped demo coarse CNN (trained, 1 m): a network whose outputs mean something."""
    return load_model(ASSETS / "demo" / "coarse", expect="coarse")


def test_windows_give_the_whole_tile_result(demo_coarse):
    tile = make_scene(200, seed=4).tile()
    whole = predict_coarse(demo_coarse, tile, device="cpu", window=4096)
    windows = []
    windowed = predict_coarse(demo_coarse, tile, device="cpu", window=64, progress=lambda i, n: windows.append(n))
    assert windows and windows[-1] >= 9  # it really went window by window
    np.testing.assert_allclose(windowed, whole, atol=2e-5)
    np.testing.assert_allclose(whole.sum(0), 1, atol=1e-5)


def test_a_half_metre_tile_is_predicted_at_one_metre_and_brought_back(demo_coarse):
    """The 1 m scene with every pixel doubled, labelled 0.5 m: its prediction is the 1 m one, upsampled.

    Averaged over 2x2 blocks it matches the 1 m prediction (0.003 mean difference, 99.7 % of argmax
    measured); run on the 0.5 m pixels directly, as if they were 1 m, it differs by 0.11 and 83 %.
    """
    scene = make_scene(128, seed=4)
    at_1m = predict_coarse(demo_coarse, scene.tile(), device="cpu")
    t = scene.georef.transform
    fine = Georef(scene.georef.crs, Affine(t.a / 2, t.b, t.c, t.d, t.e / 2, t.f))
    image = np.repeat(np.repeat(scene.image, 2, 1), 2, 2)
    probs = predict_coarse(demo_coarse, Tile(image, np.ones(image.shape[1:], bool), fine), device="cpu")
    assert probs.shape == (3, 256, 256)
    np.testing.assert_allclose(probs.sum(0), 1, atol=1e-5)
    blocks = probs.reshape(3, 128, 2, 128, 2).mean((2, 4))
    assert np.abs(blocks - at_1m).mean() < 0.01
    assert (blocks.argmax(0) == at_1m.argmax(0)).mean() > 0.98


def test_the_class_bias_multiplies_each_class_by_exp_bias(demo_coarse):
    """softmax(s + b) is p * exp(b), renormalised: a bias of log 4 on road quadruples its odds."""
    tile = make_scene(96, seed=4).tile()
    plain = predict_coarse(demo_coarse, tile, device="cpu")
    bias = (0.0, -1.0, float(np.log(4.0)))
    net = CoarseCNN(CoarseConfig(3, class_bias=bias))
    net.load_state_dict(demo_coarse.net.state_dict())
    biased_model = ModelBundle("coarse", net, demo_coarse.classes, 1.0, demo_coarse.mean, demo_coarse.std)
    biased = predict_coarse(biased_model, tile, device="cpu")
    expected = plain * np.exp(np.array(bias, np.float32))[:, None, None]
    expected /= expected.sum(0, keepdims=True)
    np.testing.assert_allclose(biased, expected, rtol=1e-4, atol=1e-6)
    odds = (biased[2] / biased[0]) / (plain[2] / plain[0])
    np.testing.assert_allclose(odds, 4.0, rtol=1e-3)
    assert (biased.argmax(0) == 2).sum() > (plain.argmax(0) == 2).sum()


def test_predict_refuses_an_rnn_and_a_wrong_band_count(demo_coarse):
    tile = make_scene(64, seed=4).tile()
    with pytest.raises(ValueError, match="bands"):
        four = Tile(np.concatenate([tile.image, tile.image[:1]]), tile.valid, tile.georef)
        predict_coarse(demo_coarse, four, device="cpu")
    with pytest.raises(ValueError, match="coarse CNN"):
        predict_coarse(load_model(ASSETS / "demo" / "rnn"), tile, device="cpu")  # type: ignore[arg-type]
