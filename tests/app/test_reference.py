"""The reference mask: value -> class mapping, placing a mask on the tile's grid, attach / detach."""

import io

import numpy as np
import pytest
import rasterio
from affine import Affine

from refiner.app import reference
from refiner.core.classes import IGNORE, ClassSpec
from refiner.data.synthetic import DEMO_CLASSES
from tests.helpers import make_workspace


def test_the_proposed_mapping_uses_class_values_then_the_free_classes_in_order():
    two = ClassSpec(("background", "building"), (0, 1))
    assert reference.propose_mapping([0, 255], two) == {0: 0, 255: 1}  # Inria: 255 is a building, not unlabelled
    assert reference.propose_mapping([1, 2], DEMO_CLASSES) == {1: 1, 2: 2}
    assert reference.propose_mapping([0, 7, 9, 11], DEMO_CLASSES) == {0: 0, 7: 1, 9: 2, 11: None}
    raw = np.array([[0, 7], [9, 11]], np.uint8)
    assert reference.encode(raw, {0: 0, 7: 1, 9: None, 11: 2}, 3).tolist() == [[0, 1], [IGNORE, 2]]
    with pytest.raises(ValueError, match="not one of the 3 classes"):
        reference.encode(raw, {0: 5}, 3)
    with pytest.raises(ValueError, match="distinct values"):
        reference.mask_values(np.arange(100, dtype=np.uint8).reshape(10, 10))


def test_a_0_255_road_mask_is_proposed_as_road_not_building():
    """Issue 22: a 0/255 road mask in a background/building/road workspace was proposed 255 -> building."""
    road = np.zeros((8, 8), np.uint8)
    road[3:5] = 255
    assert reference.propose_mapping([0, 255], DEMO_CLASSES, name="roads_austin.png") == {0: 0, 255: 2}
    coarse = np.zeros((8, 8), np.uint8)
    coarse[3:5, :6] = 2  # the workspace's coarse map sees road where the mask has 255
    coarse[3:5, 6:] = 1
    assert reference.propose_mapping([0, 255], DEMO_CLASSES, name="mask.png", raw=road, guide=coarse) == {0: 0, 255: 2}
    buildings = ClassSpec(("background", "building"))
    assert reference.propose_mapping([0, 255], buildings, name="austin.tif") == {0: 0, 255: 1}


def _geotiff(array: np.ndarray, transform: Affine, crs: str) -> bytes:
    buf = io.BytesIO()
    with rasterio.MemoryFile() as mem:
        with mem.open(driver="GTiff", height=array.shape[0], width=array.shape[1], count=1, dtype="uint8",
                      crs=crs, transform=transform) as ds:  # fmt: skip
            ds.write(array, 1)
        buf.write(mem.read())
    return buf.getvalue()


def test_a_larger_georeferenced_mask_is_cut_to_the_tile_and_uncovered_pixels_are_unlabelled(tmp_path):
    ws = make_workspace(tmp_path)
    t = ws.georef.transform
    # a mask 20 px larger on the left and top, 40 px short on the right: 255 = building
    big = np.zeros((116, 76), np.uint8)
    big[20:30, 20:40] = 255
    shifted = t * Affine.translation(-20, -20)
    raw, georef = reference.read_mask(_geotiff(big, shifted, ws.georef.crs.to_wkt()), "ref.tif")
    labels = reference.attach_mask(ws, raw, georef, {0: 0, 255: 1}, "ref.tif")
    assert labels.shape == ws.shape
    assert (labels[:10, :20] == 1).all() and labels[:10, 20:56].max() == 0
    assert (labels[:, 56:] == IGNORE).all()  # beyond the mask's extent: not scored
    assert np.array_equal(reference.reference_labels(ws), labels)
    assert ws.settings["reference"]["mapping"] == {"0": 0, "255": 1}
    reference.detach(ws)
    assert reference.reference_labels(ws) is None and ws.settings["reference"] is None
    other = tmp_path / "ref_other_crs.tif"
    other.write_bytes(_geotiff(big, shifted, "EPSG:4326"))
    raw, georef = reference.read_mask(other.read_bytes(), "other.tif")
    with pytest.raises(ValueError, match="reproject it first"):
        reference.attach_mask(ws, raw, georef, {0: 0, 255: 1}, "other.tif")


def test_another_workspace_of_other_classes_is_refused_with_both_class_lists(tmp_path):
    from refiner.app.workspace import Workspace

    ws = make_workspace(tmp_path)
    two = ClassSpec(("background", "road"))
    other = Workspace.create(tmp_path / "elsewhere", "roads", ws.tile(), two)
    with pytest.raises(ValueError) as e:
        reference.attach_workspace(ws, other)
    said = str(e.value)
    assert "the workspace roads has classes ['background', 'road']" in said
    assert "this workspace has ['background', 'building', 'road']" in said and " — pick a workspace" in said


def test_a_reference_on_a_road_workspace_valued_255_keeps_its_unlabelled_pixels(tmp_path, scene):
    """With background,road = 0,255 the stored reference's unlabelled pixels read back as road."""
    from refiner.app.workspace import Workspace

    ws = Workspace.create(tmp_path, "roads", scene.tile(), ClassSpec(("background", "road"), (0, 255)))
    raw = np.full(ws.shape, 9, np.uint8)  # 9: not scored
    raw[:20] = 0
    raw[20:25] = 255
    labels = reference.attach_mask(ws, raw, None, {0: 0, 255: 1, 9: None}, "roads.png")
    again = reference.reference_labels(ws)
    assert np.array_equal(again, labels) and (again[25:] == IGNORE).all() and (again[20:25] == 1).all()
