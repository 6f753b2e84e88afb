import io

import numpy as np
import pytest
from PIL import Image

from refiner.core.classes import IGNORE, ClassSpec
from refiner.data.masks import apply_mapping, counts_by_class, merge, propose_mapping, read_mask
from refiner.data.synthetic import DEMO_CLASSES
from refiner.data.write import write_raster

BUILDINGS = ClassSpec(("background", "building"), (0, 1))


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _inria_like(shape):
    """A 0/255 building mask as the Inria data set ships them."""
    m = np.zeros(shape, np.uint8)
    m[10:30, 20:50] = 255
    return m


def test_a_0_255_mask_becomes_background_and_building_not_unlabelled(scene):
    tile = scene.tile()
    mask = read_mask(_png(_inria_like(tile.shape)), "austin1.png", tile, BUILDINGS)
    assert mask.values == [0, 255] and mask.nodata is None
    mapping = propose_mapping(mask, BUILDINGS)
    assert mapping == {0: 0, 255: 1}
    labels = apply_mapping(mask, mapping, BUILDINGS)
    assert (labels[10:30, 20:50] == 1).all() and (labels == 1).sum() == 20 * 30
    assert (labels != IGNORE).all()
    # on three classes, 0 is background (its mask value) and 255 the first foreground class
    assert propose_mapping(read_mask(_png(_inria_like(tile.shape)), "m.png", tile, DEMO_CLASSES), DEMO_CLASSES) == {
        0: 0,
        255: 1,
    }


def test_class_values_map_to_their_classes_and_only_nodata_is_proposed_unlabelled(tmp_path, scene):
    tile = scene.tile()
    raw = np.full(tile.shape, 9, np.uint8)
    raw[:5] = 2
    raw[5:10] = 0
    raw[10:12] = 7
    p = tmp_path / "m.tif"
    write_raster(p, raw, tile.georef, nodata=9)
    mask = read_mask(p.read_bytes(), "m.tif", tile, DEMO_CLASSES)
    assert mask.values == [0, 2, 7, 9] and mask.nodata == 9
    mapping = propose_mapping(mask, DEMO_CLASSES)
    assert mapping == {0: 0, 2: 2, 7: 1, 9: IGNORE}
    # the user's choice wins: 7 is unlabelled after all
    labels = apply_mapping(mask, {**mapping, 7: IGNORE}, DEMO_CLASSES)
    assert (labels[:5] == 2).all() and (labels[5:10] == 0).all() and (labels[10:] == IGNORE).all()
    with pytest.raises(ValueError, match="no class chosen"):
        apply_mapping(mask, {0: 0}, DEMO_CLASSES)


def test_merge_keeps_or_replaces_the_painted_labels():
    painted = np.full((4, 4), IGNORE, np.uint8)
    painted[0] = 2
    imported = np.zeros((4, 4), np.uint8)
    imported[3] = IGNORE
    keep = merge(painted, imported, "keep")
    assert (keep[0] == 2).all() and (keep[1:3] == 0).all() and (keep[3] == IGNORE).all()
    wins = merge(painted, imported, "mask")
    assert (wins[:3] == 0).all() and (wins[3] == IGNORE).all()
    painted[3, 0] = 1
    assert merge(painted, imported, "mask")[3, 0] == 1  # painted where the mask has nothing
    assert np.array_equal(merge(painted, imported, "replace"), imported)


def test_bad_masks_say_what_is_wrong(scene):
    tile = scene.tile()
    with pytest.raises(ValueError, match="must cover the same grid"):
        read_mask(_png(np.zeros((tile.shape[0] + 1, tile.shape[1]), np.uint8)), "small.png", tile, BUILDINGS)
    with pytest.raises(ValueError, match="different pixel values"):
        noise = np.random.default_rng(0).integers(0, 255, tile.shape, dtype=np.uint8)
        read_mask(_png(noise), "photo.png", tile, BUILDINGS)
    with pytest.raises(ValueError, match="could not be read"):
        read_mask(b"II*\x00 not really", "broken.tif", tile, BUILDINGS)
    with pytest.raises(ValueError, match="GeoTIFF or PNG"):
        read_mask(b"x", "notes.txt", tile, BUILDINGS)


def test_geojson_roads_valued_255_stay_road_not_unlabelled(tmp_path, scene):
    """GeoJSON was rasterised to mask values with 255 as nodata: a road class valued 255 vanished."""
    import json

    roads = ClassSpec(("background", "road"), (0, 255))
    tile = scene.tile()
    t = tile.georef.transform
    x0, y0 = t * (10, 10)
    x1, y1 = t * (40, 30)
    poly = [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]
    gj = {
        "type": "FeatureCollection",
        "crs": {"type": "name", "properties": {"name": tile.georef.crs.to_string()}},
        "features": [
            {"type": "Feature", "properties": {"class": "road"}, "geometry": {"type": "Polygon", "coordinates": poly}}
        ],
    }
    mask = read_mask(json.dumps(gj).encode(), "roads.geojson", tile, roads)
    labels = apply_mapping(mask, propose_mapping(mask, roads), roads)
    assert (labels == 1).sum() > 400 and (labels[15:25, 15:35] == 1).all()
    assert (labels[50:] == 0).all()  # the rest is background, as rasterize_vectors fills it


def test_a_road_mask_is_proposed_as_road_and_its_effect_counted_before_import(scene):
    tile = scene.tile()
    road = np.zeros(tile.shape, np.uint8)
    road[40:44] = 255
    mask = read_mask(_png(road), "osm_roads.png", tile, DEMO_CLASSES)
    mapping = propose_mapping(mask, DEMO_CLASSES)  # named after road: road, not the first free class
    assert mapping == {0: 0, 255: 2}
    guided = read_mask(_png(road), "mask.png", tile, DEMO_CLASSES)
    coarse = np.zeros(tile.shape, np.uint8)
    coarse[38:46] = 2
    assert propose_mapping(guided, DEMO_CLASSES, coarse) == {0: 0, 255: 2}
    counts = dict(zip(mask.values, mask.counts, strict=True))
    n = 4 * tile.shape[1]
    assert counts_by_class(counts, mapping, DEMO_CLASSES) == (
        f"background {road.size - n:,} px · building 0 px · road {n:,} px · unlabelled 0 px"
    )
