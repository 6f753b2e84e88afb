import numpy as np
from scipy import ndimage

from refiner.core.classes import IGNORE
from refiner.core.metrics import evaluate
from refiner.data.synthetic import BUILDING, ROAD, degrade_labels, make_scene


def test_scene_has_all_classes_and_is_deterministic():
    a, b = make_scene(128, seed=3), make_scene(128, seed=3)
    np.testing.assert_array_equal(a.image, b.image)
    assert a.image.dtype == np.float32 and a.image.min() >= 0 and a.image.max() <= 1
    assert set(np.unique(a.truth)) == {0, BUILDING, ROAD}
    # roofs and asphalt look different from the ground around them (the 4 px ring of ground outside
    # them: 0.28 and 0.14 apart; roofs drawn in the ground's colour are 0.05 apart)
    for cls in (BUILDING, ROAD):
        ring = ndimage.binary_dilation(a.truth == cls, iterations=4) & (a.truth == 0)
        assert np.abs(a.image[:, a.truth == cls].mean(1) - a.image[:, ring].mean(1)).max() > 0.1, cls


def test_osm_labels_are_imprecise_but_related():
    s = make_scene(256, seed=5)
    scores = evaluate(s.osm, s.truth, 3)
    assert 0.3 < scores.mean_iou < 0.9  # shifted, incomplete, fixed-width: useful but wrong


def test_degrade_shifts_and_drops_objects():
    labels = np.zeros((100, 100), np.uint8)
    for i in range(5):
        labels[10 + 18 * i : 20 + 18 * i, 10:20] = 1
    labels[0, :] = IGNORE
    none = degrade_labels(labels, shift=0, drop=0.0)
    np.testing.assert_array_equal(none, labels)
    dropped = degrade_labels(labels, shift=0, drop=1.0)
    assert (dropped[1:] == 0).all() and (dropped[0] == IGNORE).all()
    moved = degrade_labels(labels, shift=3, drop=0.0, seed=1)
    assert (moved == 1).sum() <= (labels == 1).sum() and not np.array_equal(moved, labels)
