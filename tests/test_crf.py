import numpy as np
import pytest

from refiner.crf import CRFParams, dense_crf, grid_search
from refiner.metrics import evaluate
from tests.conftest import coarse_probs_from_labels


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


def test_params_from_dict_rejects_unknown_keys():
    assert CRFParams.from_dict({"bilateral_sxy": 7}).bilateral_sxy == 7
    with pytest.raises(ValueError, match="unknown CRF parameter"):
        CRFParams.from_dict({"theta": 1})
