import json

import numpy as np
import pytest
import rasterio
from affine import Affine
from PIL import Image
from rasterio.crs import CRS

from refiner.core.classes import ClassSpec
from refiner.data.read import read_image, read_labels, read_probs, streaming_env
from refiner.data.resample import labels_to_grid, to_working, to_working_resolution
from refiner.data.tile import Georef, RasterError, Tile
from refiner.data.vector import rasterize_vectors
from refiner.data.write import RasterWriter, write_class_map, write_probs, write_raster

UTM = Georef(CRS.from_epsg(32614), Affine(0.5, 0, 617000, 0, -0.5, 3345000))
CLASSES = ClassSpec(("background", "road"), (0, 255))


def test_geotiff_round_trip_keeps_crs_and_transform(tmp_path):
    img = (np.random.default_rng(0).random((3, 40, 50)) * 255).astype(np.uint8)
    write_raster(tmp_path / "a.tif", img, UTM)
    tile = read_image(tmp_path / "a.tif")
    assert tile.georef == UTM and tile.shape == (40, 50) and tile.resolution == 0.5
    np.testing.assert_allclose(tile.image, img / 255.0, atol=1e-6)
    probs = np.random.default_rng(1).dirichlet([1, 1], size=(40, 50)).transpose(2, 0, 1).astype(np.float32)
    write_probs(tmp_path / "p.tif", probs, tile.georef, CLASSES)
    back, classes, georef = read_probs(tmp_path / "p.tif")
    np.testing.assert_array_equal(back, probs)
    assert classes == CLASSES and georef == UTM
    write_class_map(tmp_path / "m.tif", probs.argmax(0).astype(np.uint8), tile.georef, CLASSES)
    with rasterio.open(tmp_path / "m.tif") as ds:
        assert ds.crs == UTM.crs and ds.transform == UTM.transform and ds.nodata == 254  # road is 255: nodata is not
        assert set(np.unique(ds.read(1))) <= {0, 255}
        assert json.loads(ds.tags()["refiner_classes"])["names"] == ["background", "road"]


def test_window_read_has_window_transform(tmp_path):
    write_raster(tmp_path / "a.tif", np.zeros((3, 40, 50), np.uint8), UTM)
    tile = read_image(tmp_path / "a.tif", window=(10, 20, 5, 6))
    assert tile.shape == (5, 6)
    assert tile.georef.transform == UTM.transform @ Affine.translation(20, 10)


def test_uint16_scaling_and_nodata(tmp_path):
    data = np.full((4, 8, 8), 1000, np.uint16)
    data[:, 0, 0] = 0
    with rasterio.open(
        tmp_path / "u16.tif",
        "w",
        driver="GTiff",
        width=8,
        height=8,
        count=4,
        dtype="uint16",
        nodata=0,
        crs=UTM.crs,
        transform=UTM.transform,
        NBITS=12,
    ) as ds:
        ds.write(data)
    tile = read_image(tmp_path / "u16.tif", bands=(3, 2, 1))
    assert tile.band_count == 4
    np.testing.assert_allclose(tile.image[:, 1, 1], 1000 / 4095, rtol=1e-5)
    assert not tile.valid[0, 0] and tile.valid[1, 1]
    assert read_image(tmp_path / "u16.tif", scale=10000).image[0, 1, 1] == pytest.approx(0.1)


def test_png_and_jpeg_are_read_without_georeferencing(tmp_path):
    rgb = (np.random.default_rng(0).random((20, 30, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    Image.fromarray(rgb).save(tmp_path / "a.jpg")
    png = read_image(tmp_path / "a.png")
    assert png.georef is None and png.shape == (20, 30)
    np.testing.assert_allclose(png.image, rgb.transpose(2, 0, 1) / 255.0, atol=1e-6)
    assert read_image(tmp_path / "a.jpg").shape == (20, 30)


def test_bad_inputs_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_image(tmp_path / "missing.tif")
    (tmp_path / "junk.tif").write_bytes(b"this is not a tiff")
    with pytest.raises(RasterError, match="cannot read"):
        read_image(tmp_path / "junk.tif")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "grey.png")
    with pytest.raises(RasterError, match="1 band.*--bands"):
        read_image(tmp_path / "grey.png")
    assert read_image(tmp_path / "grey.png", bands=(1, 1, 1)).shape == (10, 10)
    with pytest.raises(RasterError, match="do not exist"):
        read_image(tmp_path / "grey.png", bands=(1, 2, 3))


def test_label_masks_map_values_to_classes(tmp_path):
    mask = np.array([[0, 255, 0], [255, 0, 0]], np.uint8)
    Image.fromarray(mask).save(tmp_path / "m.png")
    np.testing.assert_array_equal(read_labels(tmp_path / "m.png", CLASSES), [[0, 1, 0], [1, 0, 0]])
    Image.fromarray(np.array([[0, 7]], np.uint8)).save(tmp_path / "bad.png")
    with pytest.raises(ValueError, match=r"pixel values \[7\]"):
        read_labels(tmp_path / "bad.png", CLASSES)
    tile = Tile(np.zeros((3, 5, 5), np.float32), np.ones((5, 5), bool))
    with pytest.raises(RasterError, match="2x3 pixels but the image is 5x5"):
        read_labels(tmp_path / "m.png", CLASSES, like=tile)


def _road_geojson(coords_lonlat):
    return {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "properties": {"class": "road"},
                "geometry": {"type": "LineString", "coordinates": coords_lonlat},
            }
        ],
    }


@pytest.mark.parametrize("res,width_m", [(1.0, 7.0), (0.5, 7.0), (1.0, 12.0)])
def test_vector_lines_are_buffered_to_a_width_in_metres(res, width_m):
    georef = Georef(CRS.from_epsg(32614), Affine(res, 0, 617000, 0, -res, 3345000))
    n = int(100 / res)
    tile = Tile(np.zeros((3, n, n), np.float32), np.ones((n, n), bool), georef)
    # a north-south line through the middle of the tile, given in UTM via the GeoJSON crs member
    gj = _road_geojson([[617050, 3344990], [617050, 3344910]])
    gj["crs"] = {"type": "name", "properties": {"name": "EPSG:32614"}}
    lab = rasterize_vectors(gj, tile, CLASSES, line_width=width_m)
    row = lab[n // 2]
    assert int(row.sum()) * res == pytest.approx(width_m, abs=res * 1.01)


def test_vector_labels_from_wgs84_geojson_file(tmp_path):
    from rasterio.warp import transform

    tile = Tile(
        np.zeros((3, 100, 100), np.float32),
        np.ones((100, 100), bool),
        Georef(CRS.from_epsg(32614), Affine(1, 0, 617000, 0, -1, 3345000)),
    )
    lon, lat = transform("EPSG:32614", "EPSG:4326", [617000, 617100], [3344950, 3344950])
    path = tmp_path / "roads.geojson"
    path.write_text(json.dumps(_road_geojson([[lon[0], lat[0]], [lon[1], lat[1]]])))
    lab = read_labels(path, CLASSES, like=tile)
    cols = lab[:, 50]
    assert int(cols.sum()) == pytest.approx(7, abs=1) and cols[50] == 1 and lab[10, 10] == 0
    path.write_text("{oops")
    with pytest.raises(RasterError, match="not valid GeoJSON"):
        read_labels(path, CLASSES, like=tile)


def test_working_resolution_resampling_round_trip():
    georef = Georef(CRS.from_epsg(32614), Affine(0.3, 0, 617000, 0, -0.3, 3345000))
    img = np.zeros((3, 300, 300), np.float32)
    img[:, :, :150] = 1.0  # left half bright
    tile = Tile(img, np.ones((300, 300), bool), georef)
    work = to_working_resolution(tile, 1.0)
    assert work.shape == (90, 90) and work.resolution == pytest.approx(1.0)
    assert work.image[0, 10, 10] == pytest.approx(1.0) and work.image[0, 10, 80] == pytest.approx(0.0)
    labels = (img[0] > 0.5).astype(np.uint8)
    coarse = labels_to_grid(labels, georef, work.georef, work.shape)
    assert coarse[5, 5] == 1 and coarse[5, 85] == 0
    same = Tile(img, np.ones((300, 300), bool), None)
    assert to_working_resolution(same, 1.0) is same  # not georeferenced: taken as already there


def test_to_working_moves_probabilities_and_labels_with_the_tile():
    img = np.zeros((3, 300, 300), np.float32)
    img[:, :, :150] = 1.0
    tile = Tile(img, np.ones((300, 300), bool), Georef(CRS.from_epsg(32614), Affine(0.3, 0, 617000, 0, -0.3, 3345000)))
    probs = np.stack([img[0], 1 - img[0]])
    labels = (img[0] > 0.5).astype(np.uint8)
    held = np.full_like(labels, 255)
    held[:30, :30] = 1
    w = to_working(tile, 1.0, probs, [labels, held])
    assert w.tile.shape == (90, 90) and w.probs.shape == (2, 90, 90) and [x.shape for x in w.labels] == [(90, 90)] * 2
    assert w.probs[0, 10, 10] == pytest.approx(1.0) and w.probs[1, 10, 80] == pytest.approx(1.0)
    assert w.labels[0][5, 5] == 1 and w.labels[0][5, 85] == 0
    assert w.labels[1][2, 2] == 1 and w.labels[1][50, 50] == 255  # unlabelled stays unlabelled
    same = to_working(w.tile, 1.0, w.probs, w.labels)  # already there: the same objects back
    assert same.tile is w.tile and same.probs is w.probs and same.labels[0] is w.labels[0]


def test_window_by_window_writing_keeps_tiles_in_the_cache_until_they_are_whole(tmp_path):
    """64-px windows into 256-px compressed tiles, another raster opened between writes (as the
    scene loop reads its inputs): the file must be as compact as one written whole. A too-small
    GDAL cache (rasterio reads an integer GDAL_CACHEMAX as bytes) rewrote each partial tile."""
    rng = np.random.default_rng(0)
    data = rng.integers(0, 3, (1, 512, 512), dtype=np.uint8)
    probs = write_probs(tmp_path / "p.tif", np.full((2, 8, 8), 0.5, np.float32), UTM, CLASSES)
    writer = {"height": 512, "width": 512, "count": 1, "dtype": "uint8", "georef": UTM}
    with streaming_env(), RasterWriter(tmp_path / "whole.tif", **writer) as out:
        out.write(data, 0, 0)
    with streaming_env(), RasterWriter(tmp_path / "windows.tif", **writer) as out:
        for r in range(0, 512, 64):
            for c in range(0, 512, 64):
                out.write(data[:, r : r + 64, c : c + 64], r, c)
                read_probs(probs)  # another dataset opened and closed between writes
    with rasterio.open(tmp_path / "windows.tif") as ds:
        assert np.array_equal(ds.read(), data)
    assert (tmp_path / "windows.tif").read_bytes() == (tmp_path / "whole.tif").read_bytes()


def test_a_picture_with_a_stated_pixel_size_resamples_to_the_working_grid_at_any_size():
    """A local grid cornered at the projection origin came back all zeros from GDAL for 650^2 at 0.3 m."""
    from refiner.data.resample import to_working_resolution
    from refiner.data.tile import Tile

    for n in (256, 650):
        image = np.random.default_rng(n).random((3, n, n), dtype=np.float32)
        work = to_working_resolution(Tile(image=image, valid=np.ones((n, n), bool), pixel_size=0.3), 1.0)
        assert work.image.shape == (3, round(n * 0.3), round(n * 0.3)) and work.valid.all()
        assert abs(float(work.image.mean()) - float(image.mean())) < 0.01


def test_quantised_probabilities_are_rounded_and_read_back(tmp_path):
    from refiner.data.read import read_probs
    from refiner.data.synthetic import DEMO_CLASSES
    from refiner.data.write import quantise_probs, write_probs

    p = np.random.default_rng(0).dirichlet((1, 1, 1), (64, 64)).transpose(2, 0, 1).astype(np.float32)
    q = quantise_probs(p)
    assert q.dtype == np.uint8 and np.abs(q / 255 - p).max() <= 0.5 / 255 + 1e-7
    write_probs(tmp_path / "q.tif", p, None, DEMO_CLASSES, quantise=True)
    back, classes, _ = read_probs(tmp_path / "q.tif", check_sums=True)
    assert np.abs(back - p).max() <= 0.5 / 255 + 1e-6 and classes.names == DEMO_CLASSES.names


def test_a_class_map_with_road_valued_255_keeps_road_apart_from_nodata(tmp_path):
    """`--values 0,255` (what the CLI suggests): road pixels were written as 255 = the file's nodata."""
    roads = ClassSpec(("background", "road"), (0, 255))
    cls_map = np.array([[0, 1], [1, 255]], np.uint8)  # 255 = no class (off the image)
    write_class_map(tmp_path / "m.tif", cls_map, None, roads)
    with rasterio.open(tmp_path / "m.tif") as ds:
        raw, nodata = ds.read(1), ds.nodata
    assert nodata == 254 and raw.tolist() == [[0, 255], [255, 254]]
    np.testing.assert_array_equal(read_labels(tmp_path / "m.tif", roads), cls_map)  # and reads back the same
