"""Windowed resampling to and from the working grid equals resampling the whole scene."""

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS

from refiner.core.windows import iter_windows
from refiner.data.read import read_image, read_probs
from refiner.data.resample import (
    Grid,
    probs_back_on,
    probs_to_grid,
    read_image_on,
    read_probs_on,
    source_window,
    to_working,
    working_grid_of,
)
from refiner.data.tile import Georef

CRS_UTM = CRS.from_epsg(32619)


def _scene(tmp_path, pixel: float, h: int = 97, w: int = 131, nodata_corner: bool = True):
    rng = np.random.default_rng(0)
    img = rng.integers(1, 255, (3, h, w), dtype=np.uint8)
    if nodata_corner:
        img[:, :7, -9:] = 0
    probs = rng.random((2, h, w)).astype(np.float32)
    probs /= probs.sum(0, keepdims=True)
    geo = {"crs": CRS_UTM, "transform": Affine(pixel, 0, 300000.0, 0, -pixel, 4700000.0)}
    with rasterio.open(tmp_path / "img.tif", "w", driver="GTiff", height=h, width=w, count=3, dtype="uint8",
                       nodata=0, **geo) as ds:  # fmt: skip
        ds.write(img)
    with rasterio.open(tmp_path / "p.tif", "w", driver="GTiff", height=h, width=w, count=2, dtype="float32",
                       **geo) as ds:  # fmt: skip
        ds.write(probs)
    return Grid(Georef(CRS_UTM, geo["transform"]), (h, w))


@pytest.mark.parametrize("pixel", [0.3, 0.5, 2.0, 1.7])  # coarser working grid (average), finer (bilinear)
def test_working_grid_windows_equal_the_whole_scene_resampled(tmp_path, pixel):
    scene = _scene(tmp_path, pixel)
    whole = read_image(tmp_path / "img.tif")
    probs, _, _ = read_probs(tmp_path / "p.tif")
    ref = to_working(whole, 1.0, probs)
    work = working_grid_of(scene, 1.0)
    assert work.shape == ref.tile.shape and work.georef == ref.tile.georef
    image = np.zeros_like(ref.tile.image)
    valid = np.zeros_like(ref.tile.valid)
    got_probs = np.zeros_like(ref.probs)
    for win in iter_windows(*work.shape, 16, 3):
        dst = work.window(win.read_row, win.read_col, win.read_height, win.read_width)
        tile = read_image_on(tmp_path / "img.tif", scene, dst)
        core = (slice(None), *win.core_in_read)
        image[(slice(None), *win.core)] = tile.image[core]
        valid[win.core] = tile.valid[win.core_in_read]
        got_probs[(slice(None), *win.core)] = read_probs_on(tmp_path / "p.tif", scene, dst)[core]
    np.testing.assert_allclose(image, ref.tile.image, atol=1e-6)
    np.testing.assert_array_equal(valid, ref.tile.valid)
    np.testing.assert_allclose(got_probs, ref.probs, atol=1e-6)


@pytest.mark.parametrize("pixel", [0.3, 2.0])
def test_probabilities_come_back_to_the_scene_grid_window_by_window(tmp_path, pixel):
    scene = _scene(tmp_path, pixel)
    work = working_grid_of(scene, 1.0)
    rng = np.random.default_rng(1)
    maps = rng.random((4, *work.shape)).astype(np.float32)  # two iterations of two classes
    with rasterio.open(tmp_path / "w.tif", "w", driver="GTiff", height=work.shape[0], width=work.shape[1], count=4,
                       dtype="float32", crs=CRS_UTM, transform=work.georef.transform) as ds:  # fmt: skip
        ds.write(maps)
    ref = np.concatenate([probs_to_grid(m, work.georef, scene.georef, scene.shape) for m in (maps[:2], maps[2:])])
    got = np.zeros_like(ref)
    for win in iter_windows(*scene.shape, 23, 0):
        dst = scene.window(win.row, win.col, win.height, win.width)
        got[(slice(None), *win.core)] = probs_back_on(tmp_path / "w.tif", work, dst, bands_per_map=2)
    np.testing.assert_allclose(got, ref, atol=1e-6)


def test_source_windows_cover_the_footprint_and_stay_inside_the_source():
    src = Grid(Georef(CRS_UTM, Affine(0.3, 0, 0, 0, -0.3, 0)), (1000, 800))
    work = working_grid_of(src, 1.0)
    r, c, h, w = source_window(src, work.window(10, 20, 30, 40))
    assert r <= 10 / 0.3 - 3 and c <= 20 / 0.3 - 3  # a working pixel and a margin beyond the footprint
    assert r + h >= 40 / 0.3 + 3 and c + w >= 60 / 0.3 + 3
    assert source_window(src, work) == (0, 0, 1000, 800)
