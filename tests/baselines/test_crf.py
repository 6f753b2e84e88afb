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


def naive_mean_field(image: np.ndarray, probs: np.ndarray, p: CRFParams) -> np.ndarray:
    """Krähenbühl & Koltun's mean field written out with exact Gaussian kernels (O(N^2): tiny images).

    Unary -log p (clipped at 1e-5), Potts compatibility, each kernel normalised symmetrically
    (``D^-1/2 K D^-1/2``, D its row sums), the pixel itself included: densecrf's defaults, which
    pydensecrf computes approximately on the permutohedral lattice.
    """
    k, h, w = probs.shape
    unary = -np.log(np.clip(probs.reshape(k, -1).astype(np.float64), 1e-5, None))
    yy, xx = np.mgrid[0:h, 0:w]
    xy = np.stack([xx.ravel(), yy.ravel()], 1).astype(np.float64)
    rgb = np.round(np.clip(image[:3], 0, 1) * 255).reshape(3, -1).T

    def kernel(f: np.ndarray) -> np.ndarray:
        m = np.exp(-((f[:, None] - f[None]) ** 2).sum(-1) / 2)
        d = 1 / np.sqrt(m.sum(1))
        return d[:, None] * m * d[None]

    kernels = [
        (kernel(xy / p.gaussian_sxy), p.gaussian_compat),
        (kernel(np.concatenate([xy / p.bilateral_sxy, rgb / p.bilateral_srgb], 1)), p.bilateral_compat),
    ]

    def softmax(e: np.ndarray) -> np.ndarray:
        e = np.exp(e - e.max(0))
        return e / e.sum(0)

    q = softmax(-unary)
    for _ in range(p.iterations):
        q = softmax(-unary + sum(weight * q @ m.T for m, weight in kernels))
    return q.reshape(k, h, w)


def tiny_case() -> tuple[np.ndarray, np.ndarray]:
    """12x12: a dark half and a bright half, and noisy two-class probabilities that ignore the edge."""
    rng = np.random.default_rng(0)
    image = np.zeros((3, 12, 12), np.float32)
    image[:, :, 6:] = 0.8
    p0 = np.clip(0.5 + 0.3 * rng.standard_normal((12, 12)), 0.05, 0.95).astype(np.float32)
    return image, np.stack([p0, 1 - p0])


def test_dense_crf_matches_mean_field_written_out_on_a_tiny_image():
    """Within 0.06 everywhere (0.038 measured: the lattice's approximation) and the same labels, where
    the CRF moves the probabilities by up to 0.95; a message passing without the symmetric
    normalisation or without the pixel itself is 0.09 to 0.15 away."""
    image, probs = tiny_case()
    params = CRFParams(gaussian_sxy=2.0, bilateral_sxy=4.0, bilateral_srgb=10.0)
    out = dense_crf(image, probs, params)
    ref = naive_mean_field(image, probs, params)
    assert np.abs(out - ref).max() < 0.06, np.abs(out - ref).max()
    assert (out.argmax(0) == ref.argmax(0)).all()
    assert np.abs(out - probs).max() > 0.5  # the case is not a trivial one


def test_dense_crf_without_pairwise_weights_returns_its_input():
    """With both kernels' weights 0 the unary alone is the fixed point: softmax(log p) = p."""
    image, probs = tiny_case()
    out = dense_crf(image, probs, CRFParams(gaussian_compat=0.0, bilateral_compat=0.0))
    np.testing.assert_allclose(out, probs, atol=1e-6)


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
    ((win, lab),) = label_windows(box, pad=40)
    assert win == (slice(10, 290), slice(10, 290)) and (lab != 255).sum() == 200 * 200


def test_grid_search_on_windows_stops_when_asked(scene):
    probs = coarse_probs_from_labels(scene.truth, 3, sigma=3)
    labels = np.full_like(scene.truth, 255)
    labels[:40, :40] = scene.truth[:40, :40]
    seen = []
    res = grid_search(scene.image, probs, labels, {"bilateral_compat": (1.0, 4.0, 8.0)},
                      progress=lambda i, n: seen.append(i), should_stop=lambda: len(seen) >= 2)  # fmt: skip
    assert len(res.trials) == 2 and not res.complete and res.searched_pixels < labels.size
