import io

import numpy as np
import pytest
import rasterio
from PIL import Image

from refiner.app.uploads import load_tile, tile_from_upload
from refiner.app.workspace import Workspace, list_workspaces
from refiner.core.classes import IGNORE, ClassSpec
from refiner.data.synthetic import DEMO_CLASSES
from refiner.data.write import write_probs, write_raster


@pytest.fixture()
def ws(tmp_path, scene):
    return Workspace.create(tmp_path, "w1", scene.tile(), DEMO_CLASSES, source={"kind": "test"})


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def test_create_and_reopen_keeps_tile_labels_and_settings(tmp_path, scene, ws):
    labels = np.full(scene.truth.shape, IGNORE, np.uint8)
    labels[10:20, 10:30] = 1
    ws.write_labels(labels)
    again = Workspace.open(tmp_path, "w1")  # as after a server restart
    assert np.array_equal(again.labels(), labels)
    assert again.label_counts()["building"] == 200
    assert again.settings["source"]["crs"] == "EPSG:32614"
    tile = again.tile()
    assert tile.shape == scene.truth.shape and tile.georef.transform == scene.georef.transform
    assert np.abs(tile.image - scene.image).max() <= 1 / 255 + 1e-6
    assert list_workspaces(tmp_path) == ["w1"]
    with rasterio.open(again.path / "labels.tif") as ds:  # a raster aligned to the tile
        assert ds.transform == scene.georef.transform and ds.nodata == IGNORE


def test_names_are_checked_and_not_overwritten(tmp_path, scene, ws):
    with pytest.raises(ValueError, match="exists already"):
        Workspace.create(tmp_path, "w1", scene.tile(), DEMO_CLASSES)
    with pytest.raises(ValueError, match="not a usable workspace name"):
        Workspace.create(tmp_path, "../evil", scene.tile(), DEMO_CLASSES)
    with pytest.raises(ValueError, match="no workspace"):
        Workspace.open(tmp_path, "nope")


def test_undo_restores_previous_labels_in_order(ws):
    a = ws.labels()
    b = a.copy()
    b[0, 0] = 0
    c = b.copy()
    c[1, 1] = 2
    ws.write_labels(b)
    ws.write_labels(c)
    assert ws.undo_depth() == 2
    assert ws.undo() and np.array_equal(ws.labels(), b)
    assert ws.undo() and np.array_equal(ws.labels(), a)
    assert not ws.undo()


def test_a_stroke_reads_the_labels_once_and_is_undone(ws, monkeypatch):
    """Each stroke read labels.tif twice (once to edit, once for the undo stack): issue 22 item 9."""
    before = ws.labels()
    reads = []
    real = Workspace.read_mask
    monkeypatch.setattr(Workspace, "read_mask", lambda self, f: reads.append(f) or real(self, f))
    after = ws.edit_labels(lambda now: np.where(np.arange(now.shape[1]) < 3, 1, now).astype(np.uint8))
    assert reads == ["labels.tif"] and not np.array_equal(after, before)
    monkeypatch.undo()
    assert ws.undo() and np.array_equal(ws.labels(), before)


def test_upload_checks_say_what_is_wrong(tmp_path, ws):
    with pytest.raises(ValueError, match="not an image"):
        tile_from_upload(b"hello, this is a text file", "notes.tif")
    with pytest.raises(ValueError, match="GeoTIFF"):
        tile_from_upload(b"%PDF-1.4", "paper.pdf")
    # a GeoTIFF cut in half: the header opens, the pixels do not
    p = tmp_path / "x.tif"
    write_raster(p, np.random.default_rng(0).integers(0, 255, (3, 300, 300), dtype=np.uint8), None)
    data = p.read_bytes()
    with pytest.raises(ValueError, match="damaged|could not be opened"):
        tile_from_upload(data[: len(data) // 2], "half.tif")
    # a PNG is fine, grey images become RGB
    tile = tile_from_upload(_png(np.full((20, 30), 128, np.uint8)), "grey.png")
    assert tile.image.shape == (3, 20, 30) and tile.georef is None


def test_label_import_checks_size_and_values(ws):
    h, w = ws.shape
    with pytest.raises(ValueError, match="must cover the same grid"):
        ws.import_labels(_png(np.zeros((h + 1, w), np.uint8)), "small.png")
    with pytest.raises(ValueError, match="not class values"):
        ws.import_labels(_png(np.full((h, w), 7, np.uint8)), "bad.png")
    mask = np.full((h, w), 255, np.uint8)
    mask[:5] = 2
    got = ws.import_labels(_png(mask), "ok.png")
    assert ws.label_counts()["road"] == 5 * w and np.array_equal(ws.labels(), got)


def test_probability_upload_must_match_tile_and_classes(tmp_path, ws, scene):
    h, w = ws.shape
    p = tmp_path / "p.tif"
    write_probs(p, np.full((2, h, w), 0.5, np.float32), None, ClassSpec(("a", "b")))
    with pytest.raises(ValueError, match="classes"):
        ws.import_probs(p.read_bytes(), "p.tif")
    write_probs(p, np.full((3, h, w - 1), 1 / 3, np.float32), None, DEMO_CLASSES)
    with pytest.raises(ValueError, match="3 bands"):
        ws.import_probs(p.read_bytes(), "p.tif")
    write_probs(p, np.full((3, h, w), 1 / 3, np.float32), scene.georef, DEMO_CLASSES)
    ws.import_probs(p.read_bytes(), "p.tif")
    assert ws.coarse_probs().shape == (3, h, w) and ws.settings["coarse"]["source"] == "uploaded"


def test_large_rasters_need_a_window(tmp_path, monkeypatch):
    import refiner.app.uploads as wsmod

    p = tmp_path / "big.tif"
    write_raster(p, np.zeros((3, 64, 64), np.uint8), None)
    monkeypatch.setattr(wsmod, "MAX_PIXELS", 1000)
    with pytest.raises(ValueError, match="read a window"):
        load_tile(p)
    assert load_tile(p, window=(8, 8, 20, 20)).shape == (20, 20)
    with pytest.raises(ValueError, match="does not fit"):
        load_tile(p, window=(60, 0, 20, 20))


def test_results_cache_is_keyed_by_inputs(ws):
    ws.save_result("r", "v1", a=np.arange(3))
    assert np.array_equal(ws.load_result("r", "v1")["a"], np.arange(3))
    assert ws.load_result("r", "v2") is None


def test_a_picture_keeps_its_stated_ground_resolution(tmp_path):
    """A PNG has no georeferencing: the resolution the user states is stored and read back."""
    buf = io.BytesIO()
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(buf, format="PNG")
    tile = tile_from_upload(buf.getvalue(), "photo.png")
    assert tile.georef is None and tile.resolution is None
    tile.pixel_size = 0.5
    ws = Workspace.create(tmp_path, "pic", tile, DEMO_CLASSES)
    assert ws.settings["source"]["resolution"] == 0.5 and ws.settings["source"]["resolution_stated"]
    assert ws.tile().resolution == 0.5 and ws.georef is None  # nothing fake written to the file
    ws.set_pixel_size(2.0)
    assert ws.tile().pixel_size == 2.0
    with pytest.raises(ValueError, match="out of range"):
        ws.set_pixel_size(0)


def test_an_import_that_labels_nothing_keeps_the_painted_labels(ws):
    """An empty GeoJSON (or one elsewhere, or an all-255 mask) is refused; it used to replace the
    painted labels with all-background and say "Imported"."""
    painted = ws.labels().copy()
    painted[:8, :8] = 1
    ws.write_labels(painted)
    h, w = ws.shape
    empty = b'{"type": "FeatureCollection", "features": []}'
    elsewhere = (b'{"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {"class": "road"}, '
                 b'"geometry": {"type": "LineString", "coordinates": [[10, 10], [10.001, 10]]}}]}')  # fmt: skip
    for data, name, needle in [
        (empty, "mine.geojson", "mine.geojson has no polygon or line features"),
        (elsewhere, "far.geojson", "no feature of far.geojson"),
        (_png(np.full((h, w), 255, np.uint8)), "blank.png", "blank.png labels no pixel"),
    ]:
        with pytest.raises(ValueError, match=needle) as err:
            ws.import_labels(data, name)
        assert "/tmp" not in str(err.value)  # the upload's name, not the server's temporary file
        assert np.array_equal(ws.labels(), painted)


def test_probabilities_from_another_place_are_refused(tmp_path, ws):
    from affine import Affine

    from refiner.data.tile import Georef

    h, w = ws.shape
    moved = Georef(ws.georef.crs, ws.georef.transform * Affine.translation(5, 0))
    write_probs(tmp_path / "p.tif", np.full((3, h, w), 1 / 3, np.float32), moved, DEMO_CLASSES)
    with pytest.raises(ValueError, match="the probability map mine.tif is not where the tile is"):
        ws.import_probs((tmp_path / "p.tif").read_bytes(), "mine.tif")
    assert not ws.has_coarse()


def test_damaged_uploads_are_named_by_the_upload_not_the_server_temp_file(tmp_path, ws):
    h, w = ws.shape
    p = tmp_path / "x.tif"
    write_raster(p, np.random.default_rng(0).integers(0, 255, (3, 512, 512), dtype=np.uint8), None)
    half = p.read_bytes()[: p.stat().st_size // 2]
    with pytest.raises(ValueError) as err:
        tile_from_upload(half, "half.tif")
    assert "half.tif" in str(err.value) and "tmp" not in str(err.value).replace("half.tif", "")
    write_probs(p, np.full((3, h, w), 1 / 3, np.float32), ws.georef, DEMO_CLASSES)
    with pytest.raises(ValueError) as err:
        ws.import_probs(p.read_bytes()[: p.stat().st_size // 2], "mine.tif")
    assert "mine.tif" in str(err.value) and "/tmp" not in str(err.value)


def test_a_road_class_valued_255_leaves_unpainted_pixels_unlabelled(tmp_path, scene):
    """Upload with background,road = 0,255: the whole tile read back as road (2,250,000 px), none unlabelled."""
    roads = ClassSpec(("background", "road"), (0, 255))
    ws = Workspace.create(tmp_path, "roads", scene.tile(), roads)
    assert ws.label_counts()["road"] == 0 and ws.label_counts()["unlabelled"] == ws.shape[0] * ws.shape[1]
    labels = ws.labels()
    labels[5:10] = 1
    labels[10:12] = 0
    ws.write_labels(labels)
    assert np.array_equal(Workspace.open(tmp_path, "roads").labels(), labels)
    ws.write_holdout(labels)
    assert np.array_equal(ws.holdout(), labels)
    with rasterio.open(ws.path / "labels.tif") as ds:  # a GIS sees road as 255 and unlabelled as nodata
        raw = ds.read(1)
        assert ds.nodata == 254 and (raw[5:10] == 255).all() and (raw[20:] == 254).all()
    mask = np.zeros(ws.shape, np.uint8)  # a 0/255 road mask imported with these values
    mask[30:34] = 255
    imported = ws.import_labels(_png(mask), "roads.png")
    assert (imported[30:34] == 1).all() and (imported == 1).sum() == 4 * ws.shape[1] and (imported == 0).any()
