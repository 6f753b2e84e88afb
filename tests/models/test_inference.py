"""predict_coarse on its own: windows stitch to the whole-tile result, a tile at another resolution
goes through the working grid and back, a class bias shifts the probabilities as the formula says,
the border band of a tile is no more biased than the interior, and test-time augmentation averages
the 8 turns and flips of the tile."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from affine import Affine

from refiner.core.paths import ASSETS
from refiner.data.read import read_image
from refiner.data.synthetic import DEMO_CLASSES, make_scene
from refiner.data.tile import Georef, Tile
from refiner.models.coarse import CoarseCNN, CoarseConfig
from refiner.models.inference import SYMMETRIES, predict_coarse, refine, turn, unturn
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


def _shipped_maps(tile: Tile) -> dict[str, np.ndarray]:
    """The shipped coarse CNN's road probability on ``tile``, and the shipped RNN's."""
    torch.set_num_threads(1)
    coarse = load_model(PRETRAINED / "coarse_1m", expect="coarse")
    road = coarse.classes.names.index("road")
    probs = predict_coarse(coarse, tile, device="cpu")
    refined = refine(load_model(PRETRAINED / "rnn_1m", expect="rnn"), tile, probs, device="cpu").final
    return {"coarse": probs[road], "RNN": refined[road]}


def _needs(path) -> None:
    if not path.is_file() or not (PRETRAINED / "coarse_1m").is_dir():
        pytest.skip("needs ../shared/data and the shipped models")


def test_the_border_band_of_a_real_tile_is_no_more_road_than_inside():
    """Before: the outer 4 px were 2.2-3.5x as road as the band just inside (coarse and RNN), so the
    bottom 10 rows of a 0.3 m tile were 52 % road against 7 % inside and exports drew fake edge
    roads. This tile is 0.3 m, resampled to 1 m and back (the case the bug was found on)."""
    path = SHARED_DATA / "inria_austin/images/austin_x616800_y3344700.tif"
    _needs(path)
    for name, road in _shipped_maps(read_image(path)).items():
        edge, inside = _edge_and_inside(road)
        assert edge <= 1.5 * inside, f"{name}: road {edge:.3f} on the edge ring, {inside:.3f} just inside"


def test_a_window_border_adds_no_road_where_the_whole_tile_has_context():
    """The same bias, measured where the truth cannot explain it: a window's top and right edges
    lie inside the tile, so the maps of the window there must match the whole tile's maps at the
    same pixels (a border artefact made them 2.2-3.5x as road). Massachusetts 11, 1 m: its
    bottom-left 600 x 600 px, whose edge ring holds 1.5x the road of the band inside in truth."""
    path = SHARED_DATA / "massachusetts_roads/images/11.jpg"
    _needs(path)
    window = read_image(path, window=(900, 0, 600, 600))
    whole = read_image(path)
    window.pixel_size = whole.pixel_size = 1.0
    inner_edges = np.zeros((600, 600), bool)
    inner_edges[:4, 4:-4] = inner_edges[4:-4, -4:] = True  # top and right: inside the tile
    full = {k: v[900:1500, 0:600] for k, v in _shipped_maps(whole).items()}
    for name, road in _shipped_maps(window).items():
        here, there = float(road[inner_edges].mean()), float(full[name][inner_edges].mean())
        assert here <= 1.2 * there + 0.01, f"{name}: road {here:.3f} at the window's edge, {there:.3f} in the tile"


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


def test_the_eight_symmetries_are_distinct_and_unturn_undoes_each():
    a = np.arange(2 * 3 * 5).reshape(2, 3, 5)
    views = [turn(a, k, f) for k, f in SYMMETRIES]
    assert len({(v.shape, v.tobytes()) for v in views}) == 8
    for (k, f), v in zip(SYMMETRIES, views, strict=True):
        np.testing.assert_array_equal(unturn(v, k, f), a)


def _turned(tile: Tile, k: int, flip: bool) -> Tile:
    return Tile(np.ascontiguousarray(turn(tile.image, k, flip)), np.ascontiguousarray(turn(tile.valid, k, flip)))


def test_tta_averages_the_eight_turned_and_flipped_predictions_turned_back(demo_coarse):
    """On a tile that is not square, window by window: the mean of the 8 views' own predictions."""
    tile = make_scene(96, seed=5).tile()
    tile = Tile(tile.image[:, :, :72].copy(), tile.valid[:, :72].copy())
    calls = []
    tta = predict_coarse(demo_coarse, tile, device="cpu", window=48, tta=True, progress=lambda *c: calls.append(c))
    views = [
        unturn(predict_coarse(demo_coarse, _turned(tile, k, f), device="cpu", window=48), k, f) for k, f in SYMMETRIES
    ]
    np.testing.assert_allclose(tta, np.mean(views, 0), atol=1e-6)
    np.testing.assert_allclose(tta.sum(0), 1, atol=1e-5)
    assert tta.shape == (3, 96, 72) and tta.dtype == np.float32
    plain = predict_coarse(demo_coarse, tile, device="cpu", window=48)
    assert np.abs(tta - plain).max() > 1e-3  # the network is not invariant, so averaging changes the map
    assert calls[-1][0] == calls[-1][1] and calls[-1][1] >= 8 * 4  # every window of all 8 passes counted
    assert all(b[0] > a[0] for a, b in zip(calls, calls[1:], strict=False))


def test_with_tta_a_turned_or_flipped_tile_gets_the_map_turned_or_flipped_the_same_way(demo_coarse):
    tile = make_scene(64, seed=6).tile()
    tta = predict_coarse(demo_coarse, tile, device="cpu", tta=True)
    plain = predict_coarse(demo_coarse, tile, device="cpu")
    for k, f in [(1, False), (0, True), (3, True)]:
        turned = predict_coarse(demo_coarse, _turned(tile, k, f), device="cpu", tta=True)
        np.testing.assert_allclose(turned, turn(tta, k, f), atol=1e-6)
        plain_turned = predict_coarse(demo_coarse, _turned(tile, k, f), device="cpu")
        assert np.abs(plain_turned - turn(plain, k, f)).max() > 1e-3  # without it, the map depends on the turn


def test_predict_refuses_an_rnn_and_a_wrong_band_count(demo_coarse):
    tile = make_scene(64, seed=4).tile()
    with pytest.raises(ValueError, match="bands"):
        four = Tile(np.concatenate([tile.image, tile.image[:1]]), tile.valid, tile.georef)
        predict_coarse(demo_coarse, four, device="cpu")
    with pytest.raises(ValueError, match="coarse CNN"):
        predict_coarse(load_model(ASSETS / "demo" / "rnn"), tile, device="cpu")  # type: ignore[arg-type]


def test_a_skip_context_model_is_predicted_window_by_window_exactly_and_survives_save_and_load(tmp_path):
    from refiner.core.classes import ClassSpec
    from refiner.models.coarse import CoarseConfig
    from refiner.models.designs import build_coarse
    from refiner.models.store import ModelBundle, save_model

    torch.manual_seed(1)
    net = build_coarse(CoarseConfig(3, arch="skip_context")).eval()
    bundle = ModelBundle("coarse", net, ClassSpec(("background", "building", "road")), 1.0, (0.5,) * 3, (0.25,) * 3)
    save_model(bundle, tmp_path / "m")
    loaded = load_model(tmp_path / "m", expect="coarse")
    assert loaded.net.cfg.arch == "skip_context"
    tile = make_scene(300, seed=5).tile()
    whole = predict_coarse(loaded, tile, device="cpu", window=4096)
    np.testing.assert_allclose(whole, predict_coarse(bundle, tile, device="cpu", window=4096), atol=1e-6)
    windowed = predict_coarse(loaded, tile, device="cpu", window=64)
    np.testing.assert_allclose(windowed, whole, atol=2e-5)
