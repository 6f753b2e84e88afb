"""Adapting the coarse CNN and the RNN to one tile from a painted patch (refiner.train.adapt)."""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import pytest
import torch

from refiner.core.classes import IGNORE
from refiner.core.metrics import evaluate
from refiner.data.resample import labels_to_grid, resample, working_grid
from refiner.data.synthetic import DEMO_CLASSES, make_scene
from refiner.data.tile import Tile
from refiner.models.coarse import CoarseConfig
from refiner.models.inference import predict_coarse, refine
from refiner.models.rnn import RefinerRNN, RNNConfig
from refiner.models.store import ModelBundle, image_stats
from refiner.train.adapt import AdaptConfig, adapt, adaptation_resolution
from refiner.train.adapt_coarse import CoarseAdaptConfig, adapt_coarse
from refiner.train.coarse import CoarseTrainConfig, train_coarse
from refiner.train.rnn import RNNTrainConfig, zero_update
from refiner.train.sampling import NoLabelsError, restrict_to_window, split_holdout

FAST = AdaptConfig(
    coarse=CoarseAdaptConfig(steps=150, eval_every=10, patience=0, max_seconds=None),
    rnn=RNNTrainConfig(steps=20, batch_size=4, patch_size=32, eval_every=10, eval_seconds=None, lr=0.01),
)


@pytest.fixture(scope="module")
def scene():
    return make_scene(192, seed=3)


@pytest.fixture(scope="module")
def weak_coarse(scene):
    """A coarse CNN trained briefly on *another* scene's OSM-like labels: it finds roads and roofs badly."""
    other = make_scene(192, seed=4)
    cfg = CoarseTrainConfig(steps=40, batch_size=8, output_size=32, seed=0)
    return train_coarse([other.image], [other.osm], DEMO_CLASSES, cfg, resolution=1.0)


def _rest(truth: np.ndarray, window: tuple[int, int, int, int]) -> np.ndarray:
    out = truth.copy()
    r, c, h, w = window
    out[r : r + h, c : c + w] = IGNORE
    return out


@pytest.mark.parametrize("arch", ["mnih", "skip_context"])
def test_the_cached_crop_starts_as_the_map_the_start_draws(arch):
    """The trainable top on the cropped, cached features must draw the start's own map there."""
    from refiner.models.designs import build_coarse
    from refiner.train.adapt_coarse import _prepare

    big = make_scene(352, seed=5)  # the patch lies more than a halo from the tile's edges
    torch.manual_seed(0)
    net = build_coarse(CoarseConfig(3, arch=arch, class_bias=(0.0, 0.3, -0.2))).eval()
    bundle = ModelBundle("coarse", net, DEMO_CLASSES, 1.0, *image_stats([big.image]))
    start = predict_coarse(bundle, big.tile())
    labels = np.full(big.truth.shape, IGNORE, np.uint8)
    labels[150:210, 140:200] = big.truth[150:210, 140:200]
    split = copy.deepcopy(net).split("head")
    margin = 8
    prob = _prepare(big.image, labels, np.full_like(labels, IGNORE), start, bundle, split, margin)
    with torch.no_grad():
        drawn = torch.softmax(prob.scores(split.top), 1)[0].numpy()
    r0, c0 = ((v - margin - split.reach) // 4 * 4 for v in (150, 140))  # the crop's corner, on the stride
    expected = start[:, r0 : r0 + prob.size[0], c0 : c0 + prob.size[1]]
    k = split.reach  # the crop's own edges are inexact within the top's reach: beyond is what training sees
    inside = (slice(None), slice(k, -k), slice(k, -k))
    assert min(drawn[inside].shape[1:]) >= 60 + 2 * margin  # the painted pixels and their margin
    assert np.allclose(drawn[inside], expected[inside], atol=1e-4)


def test_adaptation_grid_is_the_tiles_own_when_finer(scene):
    tile = scene.tile()
    assert adaptation_resolution(tile, 1.0) == pytest.approx(1.0)
    fine = replace(tile, georef=None, pixel_size=0.3)
    assert adaptation_resolution(fine, 1.0) == pytest.approx(0.3)
    assert adaptation_resolution(replace(tile, georef=None, pixel_size=2.0), 1.0) == pytest.approx(1.0)
    assert adaptation_resolution(replace(tile, georef=None), 1.0) == pytest.approx(1.0)  # unknown: the model's
    assert adaptation_resolution(fine, 1.0, "model") == pytest.approx(1.0)


def test_a_patch_teaches_the_coarse_map_the_rest_of_the_tile(scene, weak_coarse):
    """A 128 x 128 px painted patch lifts mean IoU on the *rest* of the tile well above the start."""
    tile, truth = scene.tile(), scene.truth
    window = (0, 0, 128, 128)
    labels = restrict_to_window(truth, window)
    before = evaluate(predict_coarse(weak_coarse, tile).argmax(0), _rest(truth, window), 3)
    result = adapt(tile, labels, weak_coarse, None, FAST)
    after = evaluate(predict_coarse(result.coarse, tile).argmax(0), _rest(truth, window), 3)
    assert result.coarse_adapted
    assert after.mean_iou >= before.mean_iou + 0.05, (before.mean_iou, after.mean_iou)
    held = result.scores
    assert held["adapted_coarse"].mean_iou >= held["shipped_coarse"].mean_iou
    assert result.rnn is None and result.rnn_note  # no RNN given: said so
    assert weak_coarse.net is not result.coarse.net  # the start is left as it was


def test_the_start_stands_when_training_would_make_the_held_out_pixels_worse(scene, weak_coarse):
    """Labels that contradict the held-out ones (classes swapped) must not replace the start."""
    truth = scene.truth
    labels = restrict_to_window(truth, (0, 0, 128, 128))
    train, val = split_holdout(labels, 0.3, guard=8, seed=0)
    swapped = train.copy()
    swapped[train == 0], swapped[train == 1] = 1, 0
    start = predict_coarse(weak_coarse, scene.tile())
    cfg = CoarseAdaptConfig(steps=60, eval_every=5, patience=0, max_seconds=None, lr=1e-2, distill=0.0)
    before = copy.deepcopy(weak_coarse.net.state_dict())
    out = adapt_coarse(scene.image, swapped, val, start, weak_coarse, cfg, resolution=1.0)
    assert out.best_val.mean_iou >= out.start_val.mean_iou
    assert not out.adapted and out.bundle is weak_coarse
    after = out.bundle.net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_adapt_then_refine_on_a_picture_with_a_stated_resolution(scene, weak_coarse):
    """A picture at 0.5 m: both models come back on its grid and run on it as the shipped ones would."""
    small = make_scene(112, seed=3)
    fine_georef, shape = working_grid(small.georef, small.truth.shape, 0.5)
    image = resample(small.image, small.georef, shape, fine_georef)
    truth = labels_to_grid(small.truth, small.georef, fine_georef, shape)
    tile = Tile(image, np.ones(shape, bool), None, pixel_size=0.5)
    labels = restrict_to_window(truth, (0, 0, 112, 112))
    torch.manual_seed(0)
    rnn = ModelBundle("rnn", RefinerRNN(RNNConfig(num_classes=3)), DEMO_CLASSES, 1.0, *image_stats([small.image]))
    cfg = replace(FAST, coarse=replace(FAST.coarse, steps=20))
    result = adapt(tile, labels, weak_coarse, rnn, cfg)
    assert result.resolution == pytest.approx(0.5)
    assert result.coarse.resolution == pytest.approx(0.5)
    probs = predict_coarse(result.coarse, tile)
    assert probs.shape == (3, *shape)
    assert np.allclose(result.probs, probs, atol=1e-5)  # what it hands back is the model's map
    assert np.allclose(result.start_probs, predict_coarse(weak_coarse, tile), atol=1e-5)
    assert set(result.seconds) >= {"shipped_predict", "coarse", "rnn"}
    assert result.scores["adapted_rnn"] is not None
    if result.rnn is not None:  # kept only when it beat the adapted map on the held-out pixels
        assert result.scores["adapted_rnn"].mean_iou > result.scores["adapted_coarse"].mean_iou
        assert result.rnn.resolution == pytest.approx(0.5)
        assert refine(result.rnn, tile, probs).final.shape == probs.shape
    else:
        assert "did not beat" in result.rnn_note


def test_an_identity_rnn_returns_its_input():
    torch.manual_seed(0)
    net = RefinerRNN(RNNConfig(num_classes=3, iterations=3)).eval()
    zero_update(net)
    image, probs = torch.rand(1, 3, 40, 40), torch.softmax(torch.randn(1, 3, 40, 40), 1)
    with torch.no_grad():
        out = net(image, probs)
    assert torch.allclose(out[-1], out[0]) and torch.allclose(torch.softmax(out[-1], 1), probs, atol=1e-5)


def test_cancel_returns_the_start_and_says_so(scene, weak_coarse):
    labels = restrict_to_window(scene.truth, (0, 0, 96, 96))
    result = adapt(scene.tile(), labels, weak_coarse, None, FAST, should_stop=lambda: True)
    assert not result.coarse_adapted and result.coarse is weak_coarse
    assert result.coarse_result is not None and result.coarse_result.stopped == "cancelled"


def _nearly_one_class(shape: tuple[int, int]) -> np.ndarray:
    """5000 painted pixels, all building but one of background (a patch that is all roof)."""
    labels = np.full(shape, IGNORE, np.uint8)
    labels.flat[:5000] = 1
    labels.flat[0] = 0
    return labels


@pytest.mark.parametrize(
    ("make_labels", "message"),
    [
        (lambda t: np.full(t.shape, IGNORE, np.uint8), "no painted pixel"),
        (lambda t: np.where(np.arange(t.size).reshape(t.shape) < 500, 1, IGNORE).astype(np.uint8), "only one class"),
        (lambda t: np.zeros((t.shape[0] + 10, t.shape[1]), np.uint8), "paint on this tile"),
        (lambda t: _nearly_one_class(t.shape), "paint more of the other"),
    ],
    ids=["nothing painted", "one class only", "patch larger than the tile", "a patch 99.98 % one class"],
)
def test_bad_labels_are_refused_before_any_work(scene, weak_coarse, make_labels, message):
    labels = make_labels(scene.truth)
    with pytest.raises((ValueError, NoLabelsError), match=message):
        adapt(scene.tile(), labels, weak_coarse, None, FAST)


def test_the_class_mix_guard_refuses_what_the_patch_alone_taught():
    """An adapted map that calls the whole unpainted tile building, from a patch that is mostly roof,
    is refused; one whose building share lies between the start's and the patch's is kept."""
    from refiner.train.adapt import class_mix_shift

    h = w = 100
    labels = np.full((h, w), IGNORE, np.uint8)
    labels[:20, :20] = 1  # the patch: 80 % building ...
    labels[:20, 16:20] = 0  # ... and some background
    valid = np.ones((h, w), bool)
    start = np.zeros((3, h, w), np.float32)
    start[0] = 1.0
    start[0, 40:70, 40:70], start[1, 40:70, 40:70] = 0.0, 1.0  # the shipped map: ~9 % building
    names = ("background", "building", "road")
    everywhere = np.zeros_like(start)
    everywhere[1] = 1.0  # building on every pixel
    note = class_mix_shift(start, everywhere, labels, valid, names, 0.1)
    assert "was not used" in note and "paint a larger" in note  # (background: 0 % where 20-91 % is credible)
    some = start.copy()
    some[0, 10:90, 40:80], some[1, 10:90, 40:80] = 0.0, 1.0  # ~33 % building: between 9 % and 80 %
    assert class_mix_shift(start, some, labels, valid, names, 0.1) == ""
    partial_only = np.where(labels == 1, 251, labels).astype(np.uint8)  # only "not building" codes
    partial_only[labels == 0] = 251
    assert class_mix_shift(start, everywhere, partial_only, valid, names, 0.1) == ""  # says nothing of shares


def test_a_patch_teaches_the_skip_context_design_too(scene):
    """The stronger design adapts as the paper's does: the rest of the tile gains from the patch."""
    other = make_scene(192, seed=4)
    cfg = CoarseTrainConfig(steps=40, batch_size=8, output_size=32, seed=0, arch="skip_context")
    weak = train_coarse([other.image], [other.osm], DEMO_CLASSES, cfg, resolution=1.0)
    tile, truth = scene.tile(), scene.truth
    window = (0, 0, 128, 128)
    before = evaluate(predict_coarse(weak, tile).argmax(0), _rest(truth, window), 3)
    result = adapt(tile, restrict_to_window(truth, window), weak, None, FAST)
    after = evaluate(predict_coarse(result.coarse, tile).argmax(0), _rest(truth, window), 3)
    assert result.coarse_adapted and result.coarse.net.cfg.arch == "skip_context"
    assert after.mean_iou >= before.mean_iou + 0.05, (before.mean_iou, after.mean_iou)


def test_an_unknown_part_to_train_is_refused_before_any_work(scene, weak_coarse):
    labels = restrict_to_window(scene.truth, (0, 0, 96, 96))
    cfg = replace(FAST, coarse=replace(FAST.coarse, layers="middle"))
    with pytest.raises(ValueError, match="not one of head, top2, all"):
        adapt(scene.tile(), labels, weak_coarse, None, cfg, should_stop=lambda: pytest.fail("work began"))
