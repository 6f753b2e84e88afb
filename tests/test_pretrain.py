"""The pretrained-model recipe: the written split, tiles at 1 m with partial labels and no-data."""

import numpy as np
import pytest
from PIL import Image

from refiner.classes import IGNORE
from refiner.pretrain import area_resize, load_split, load_tile, scores_2x2, task_confusion
from refiner.train import NOT_BUILDING, NOT_ROAD

SPLIT = """
[sets.roads]
root = "roads"
label_map = {{ 0 = "not_road", 255 = "road" }}
resolution = {res}
tasks = ["road"]
nodata_white = true
train = ["a"]
val = []
test = [{test}]
"""


def _write_set(tmp_path, res=1.0, test='"b"'):
    (tmp_path / "roads" / "images").mkdir(parents=True)
    (tmp_path / "roads" / "masks").mkdir(parents=True)
    img = np.full((40, 40, 3), 90, np.uint8)
    img[:, :10] = 255  # a white no-data band at the mosaic edge
    mask = np.zeros((40, 40), np.uint8)
    mask[20:23] = 255
    for name in ("a", "b"):
        Image.fromarray(img).save(tmp_path / "roads" / "images" / f"{name}.png")
        Image.fromarray(mask).save(tmp_path / "roads" / "masks" / f"{name}.png")
    (tmp_path / "split.toml").write_text(SPLIT.format(res=res, test=test))
    return tmp_path / "split.toml"


def test_road_tiles_get_partial_labels_and_white_is_no_data(tmp_path):
    sets = load_split(_write_set(tmp_path))
    d = load_tile(sets["roads"], "a")
    assert d.image.dtype == np.uint8 and d.image.shape == (3, 40, 40)
    assert (d.labels[:, :10] == IGNORE).all()  # white: no-data, not background
    assert (d.labels[20:23, 10:] == 2).all()  # road
    assert (d.labels[:20, 10:] == NOT_ROAD).all()  # 0 on a road-only tile: "not road"
    assert NOT_BUILDING not in d.labels


def test_pictures_are_resampled_to_1m_by_the_sets_stated_pixel_size(tmp_path):
    sets = load_split(_write_set(tmp_path, res=0.5))
    d = load_tile(sets["roads"], "a")
    assert d.image.shape == (3, 20, 20) and d.labels.shape == (20, 20)
    assert (d.labels[:, :5] == IGNORE).all()


def test_a_test_tile_listed_for_training_is_refused(tmp_path):
    with pytest.raises(ValueError, match="test tiles also used"):
        load_split(_write_set(tmp_path, test='"a"'))


def test_area_resize_votes_labels_and_averages_the_image():
    image = np.zeros((1, 4, 4), np.float32)
    image[:, :, :2] = 1.0
    labels = np.full((4, 4), 5, np.uint8)
    labels[0, 0] = 7
    labels[2:, 2:] = IGNORE
    img, lab = area_resize(image, labels, (2, 2))
    np.testing.assert_allclose(img[0], [[1, 0], [1, 0]])
    assert lab.tolist() == [[5, 5], [5, IGNORE]]


def test_task_scores_count_building_predictions_as_not_road():
    from refiner.pretrain import TileData

    labels = np.array([[NOT_ROAD, NOT_ROAD, 2, 2]], np.uint8)
    d = TileData("s", "t", np.zeros((3, 1, 4), np.uint8), labels, ("road",))
    probs = np.zeros((3, 1, 4), np.float32)
    probs[[1, 0, 2, 0], 0, [0, 1, 2, 3]] = 1  # building, background, road, background
    cm = task_confusion(probs, d, "road")
    assert cm.tolist() == [[2, 0], [1, 1]]
    s = scores_2x2(cm)
    assert s["iou"] == pytest.approx(0.5) and s["iou_other"] == pytest.approx(2 / 3)
