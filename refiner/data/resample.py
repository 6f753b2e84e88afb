"""Moving rasters between grids: a tile to the networks' working resolution and results back.

Networks run at their training resolution; :func:`to_working` resamples a whole tile to it and
:func:`probs_to_grid` brings results back. For scenes larger than memory the same two
resamplings run window by window (:class:`Grid`, :func:`read_image_on`, :func:`probs_back_on`):
a working-grid window is computed from just the source pixels under it plus a margin wider than
the resampling kernel, with the same GDAL calls as the whole-tile path, so the stitched result
equals resampling the whole scene (``tests/data/test_resample.py``). Same CRS only: the working
grid is the scene's own at another pixel size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from affine import Affine
from rasterio.enums import Resampling
from rasterio.warp import reproject

from refiner.core.classes import IGNORE
from refiner.data.read import read_image, read_probs
from refiner.data.tile import Georef, Tile, grid_of


def resample(
    array: np.ndarray,
    src: Georef,
    dst_shape: tuple[int, int],
    dst: Georef,
    *,
    method: str = "bilinear",
) -> np.ndarray:
    """Resample (B, H, W) from one grid to another (same or different CRS) with rasterio."""
    arr = array[None] if array.ndim == 2 else array
    out = np.zeros((arr.shape[0], *dst_shape), dtype=arr.dtype)
    reproject(
        arr,
        out,
        src_transform=src.transform,
        src_crs=src.crs,
        dst_transform=dst.transform,
        dst_crs=dst.crs,
        resampling=Resampling[method],
    )
    return out[0] if array.ndim == 2 else out


def working_grid(georef: Georef, shape: tuple[int, int], resolution: float) -> tuple[Georef, tuple[int, int]]:
    """The grid covering the same ground at ``resolution`` metres per pixel."""
    sx = abs(georef.transform.a) / resolution
    sy = abs(georef.transform.e) / resolution
    h, w = max(1, round(shape[0] * sy)), max(1, round(shape[1] * sx))
    t = georef.transform @ Affine.scale(shape[1] / w, shape[0] / h)
    return Georef(georef.crs, t), (h, w)


def resolution_differs(res: float | None, resolution: float | None, tolerance: float = 0.01) -> bool:
    """True when both resolutions are known and differ by more than ``tolerance`` (relative)."""
    return bool(resolution and res and abs(res - resolution) / resolution > tolerance)


def needs_resampling(tile: Tile, resolution: float | None) -> bool:
    """True when the tile is georeferenced (or has a stated pixel size) at another resolution than the networks'."""
    return resolution_differs(tile.resolution, resolution)


def to_working_resolution(tile: Tile, resolution: float | None) -> Tile:
    """The tile resampled to the networks' resolution (area average when downsampling).

    Non-georeferenced tiles without a stated ``pixel_size`` are taken to be at the working
    resolution already.
    """
    if not needs_resampling(tile, resolution):
        return tile
    src = grid_of(tile)
    assert src is not None and resolution is not None
    dst, shape = working_grid(src, tile.shape, resolution)
    return resample_tile(replace(tile, georef=src), dst, shape)


def resample_tile(tile: Tile, dst: Georef, shape: tuple[int, int]) -> Tile:
    """The tile on grid ``dst`` of ``shape``.

    The image by area average when ``dst`` is coarser, else bilinear; the validity mask by
    nearest neighbour.
    """
    assert tile.georef is not None
    method = "average" if dst.resolution > tile.georef.resolution else "bilinear"
    image = resample(tile.image, tile.georef, shape, dst, method=method)
    valid = resample(tile.valid.astype(np.uint8), tile.georef, shape, dst, method="nearest").astype(bool)
    return replace(tile, image=image, valid=valid, georef=dst)


@dataclass
class Working:
    """A tile with its probabilities and label masks on the networks' grid (see :func:`to_working`)."""

    tile: Tile
    probs: np.ndarray | None
    labels: list[np.ndarray]


def to_working(
    tile: Tile, resolution: float | None, probs: np.ndarray | None = None, labels: Sequence[np.ndarray] = ()
) -> Working:
    """The tile, its class probabilities and label masks at the working resolution.

    Probabilities bilinear, labels by majority vote when coarsening; the same objects when the
    tile is already there.
    """
    work = to_working_resolution(tile, resolution)
    if work is tile:
        return Working(tile, probs, list(labels))
    src = grid_of(tile)
    assert src is not None and work.georef is not None
    return Working(
        work,
        None if probs is None else resample(probs, src, work.shape, work.georef),
        [labels_to_grid(lab, src, work.georef, work.shape) for lab in labels],
    )


def labels_to_grid(labels: np.ndarray, src: Georef, dst: Georef, dst_shape: tuple[int, int]) -> np.ndarray:
    """Resample a label map to another grid: majority vote when coarsening, else nearest."""
    coarser = abs(dst.transform.a) > abs(src.transform.a) * 1.01
    if not coarser:
        return resample(labels, src, dst_shape, dst, method="nearest")
    # mode over the labelled pixels only: resample one-hot counts, then take the argmax
    values = [v for v in np.unique(labels) if v != IGNORE]
    if not values:
        return np.full(dst_shape, IGNORE, dtype=np.uint8)
    stack = np.stack([(labels == v).astype(np.float32) for v in values])
    frac = resample(stack, src, dst_shape, dst, method="average")
    out = np.asarray(values, dtype=np.uint8)[frac.argmax(0)]
    out[frac.sum(0) < 0.5] = IGNORE
    return out


def probs_to_grid(probs: np.ndarray, src: Georef, dst: Georef, dst_shape: tuple[int, int]) -> np.ndarray:
    """Upsample probabilities back to the source grid bilinearly (the paper's rule), renormalised."""
    out = resample(probs.astype(np.float32), src, dst_shape, dst, method="bilinear")
    s = out.sum(0, keepdims=True)
    return np.where(s > 0, out / np.maximum(s, 1e-12), 1.0 / probs.shape[0]).astype(np.float32)


#: Extra source pixels read around a window, beyond its footprint: more than any GDAL kernel
#: used here (average, bilinear, nearest) reaches, so windows see what the whole scene would.
MARGIN = 2


@dataclass(frozen=True)
class Grid:
    """A raster grid: georeferencing of its top-left pixel and its (height, width)."""

    georef: Georef
    shape: tuple[int, int]

    def window(self, row: int, col: int, height: int, width: int) -> Grid:
        """The sub-grid of ``height`` x ``width`` pixels whose top-left pixel is (``row``, ``col``)."""
        return Grid(self.georef.window(row, col), (height, width))

    @property
    def resolution(self) -> float:
        """Ground size of a pixel in CRS units (metres for projected CRSs)."""
        return self.georef.resolution


def working_grid_of(scene: Grid, resolution: float) -> Grid:
    """The grid covering ``scene``'s ground at ``resolution`` (as :func:`to_working_resolution`)."""
    georef, shape = working_grid(scene.georef, scene.shape, resolution)
    return Grid(georef, shape)


def source_window(src: Grid, dst: Grid) -> tuple[int, int, int, int]:
    """``(row, col, height, width)`` of ``src`` pixels that resampling onto ``dst`` can touch.

    The footprint of ``dst`` in ``src`` pixels, widened by a pixel of ``dst`` and
    :data:`MARGIN` source pixels on every side, clipped to ``src``.
    """
    to_src = ~src.georef.transform * dst.georef.transform  # dst pixel -> src pixel coordinates
    h, w = dst.shape
    pad = [(-1, -1), (w + 1, -1), (-1, h + 1), (w + 1, h + 1)]  # one dst pixel beyond each corner
    xs, ys = zip(*(to_src * p for p in pad), strict=True)
    r0 = max(0, math.floor(min(ys)) - MARGIN)
    c0 = max(0, math.floor(min(xs)) - MARGIN)
    r1 = min(src.shape[0], math.ceil(max(ys)) + MARGIN)
    c1 = min(src.shape[1], math.ceil(max(xs)) + MARGIN)
    return r0, c0, max(0, r1 - r0), max(0, c1 - c0)


def read_image_on(path: str | Path, scene: Grid, dst: Grid, *, bands: Sequence[int] | None = None) -> Tile:
    """The image of ``path`` (on grid ``scene``) resampled onto the window ``dst`` of the working grid.

    A picture without georeferencing lies on ``scene``'s grid as stated (its pixel size).
    """
    read = source_window(scene, dst)
    tile = read_image(path, bands=bands, window=read)
    if tile.georef is None:
        tile = replace(tile, georef=scene.georef.window(read[0], read[1]))
    return resample_tile(tile, dst.georef, dst.shape)


def read_probs_on(path: str | Path, scene: Grid, dst: Grid) -> np.ndarray:
    """Class probabilities on grid ``scene`` resampled bilinearly onto the window ``dst`` (as :func:`to_working`)."""
    read = source_window(scene, dst)
    probs, _, georef = read_probs(path, window=read)
    return resample(probs, georef or scene.georef.window(read[0], read[1]), dst.shape, dst.georef)


def probs_back_on(path: str | Path, work: Grid, dst: Grid, bands_per_map: int) -> np.ndarray:
    """Working-grid probability maps of ``path`` brought onto the scene window ``dst``.

    The file may hold several maps of ``bands_per_map`` bands (every iteration); each is
    upsampled and renormalised on its own by :func:`refiner.data.resample.probs_to_grid`.
    """
    probs, _, georef = read_probs(path, window=source_window(work, dst))
    assert georef is not None
    maps = np.split(probs, probs.shape[0] // bands_per_map)
    return np.concatenate([probs_to_grid(m, georef, dst.georef, dst.shape) for m in maps])
