import numpy as np
import pytest

from refiner.baselines.crf import CRFParams, dense_crf, grid_search, label_windows
from refiner.core.metrics import evaluate
from tests.helpers import coarse_probs_from_labels


def test_dense_crf_snaps_blurry_probabilities_to_image_edges(scene):
    probs = coarse_probs_from_labels(scene.truth, 3, sigma=3)
    out = dense_crf(scene.image, probs, CRFParams(bilateral_sxy=10, bilateral_srgb=8, bilateral_compat=8))
    assert out.shape == probs.shape
    np.testing.assert_allclose(out.sum(0), 1.0, atol=1e-4)
    before = evaluate(probs.argmax(0), scene.truth, 3).mean_iou
    after = evaluate(out.argmax(0), scene.truth, 3).mean_iou
    assert after > before


def test_grid_search_tries_every_combination_and_keeps_the_best(scene):
    probs = coarse_probs_from_labels(scene.truth, 3, sigma=3)
    labels = np.full_like(scene.truth, 255)
    labels[:80, :80] = scene.truth[:80, :80]
    res = grid_search(scene.image, probs, labels, {"bilateral_sxy": (5.0, 20.0), "bilateral_compat": (1.0, 8.0)})
    assert len(res.trials) == 4
    assert res.best_scores.mean_iou == max(s.mean_iou for _, s in res.trials)
    with pytest.raises(ValueError, match="unknown CRF parameter"):
        grid_search(scene.image, probs, labels, {"sigma": (1.0,)})
    with pytest.raises(ValueError, match="needs labelled pixels"):
        grid_search(scene.image, probs, np.full_like(labels, 255))


def test_typed_params_refuse_unknown_keys_stored_ones_ignore_them():
    """``parse`` (what a person wrote: a typo is an error) and ``from_dict`` (a workspace's settings,
    maybe from another version: a key this one does not know must not lock the workspace)."""
    assert CRFParams.parse({"bilateral_sxy": 7}).bilateral_sxy == 7
    with pytest.raises(ValueError, match=r"unknown CRF parameter\(s\) \['theta'\]; known: \['bilateral_compat'"):
        CRFParams.parse({"theta": 1, "bilateral_sxy": 7})
    assert CRFParams.from_dict({"theta": 1, "bilateral_sxy": 7}) == CRFParams(bilateral_sxy=7)


def test_the_search_runs_on_windows_around_the_labels_and_scores_each_pixel_once():
    labels = np.full((1500, 1500), 255, np.uint8)
    labels[100:140, 100:400] = 1  # a stroke across two 256 px cells
    labels[1200:1210, 1300:1310] = 0  # a dab far away
    windows = label_windows(labels, pad=40)
    area = sum((r.stop - r.start) * (c.stop - c.start) for (r, c), _ in windows)
    assert len(windows) == 3 and area < 0.1 * labels.size
    assert sum(int((lab != 255).sum()) for _, lab in windows) == int((labels != 255).sum())
    for (r, c), lab in windows:  # each window holds the labels it scores, padded by 40 px
        assert ((lab == 255) | (lab == labels[r, c])).all()
    box = np.full((300, 300), 255, np.uint8)
    box[50:250, 50:250] = 2  # one painted box: one window around it is cheaper than cells
    (win, lab), = label_windows(box, pad=40)
    assert win == (slice(10, 290), slice(10, 290)) and (lab != 255).sum() == 200 * 200


def test_grid_search_on_windows_stops_when_asked(scene):
    probs = coarse_probs_from_labels(scene.truth, 3, sigma=3)
    labels = np.full_like(scene.truth, 255)
    labels[:40, :40] = scene.truth[:40, :40]
    seen = []
    res = grid_search(scene.image, probs, labels, {"bilateral_compat": (1.0, 4.0, 8.0)},
                      progress=lambda i, n: seen.append(i), should_stop=lambda: len(seen) >= 2)  # fmt: skip
    assert len(res.trials) == 2 and not res.complete and res.searched_pixels < labels.size
