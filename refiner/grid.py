"""Windowed resampling between a scene's own grid and the networks' working grid.

Networks run at their training resolution; :func:`refiner.raster.to_working` resamples a whole
tile to it and :func:`refiner.raster.probs_to_grid` brings results back. For scenes larger than
memory the same two resamplings run window by window: a working-grid window is computed from
just the source pixels under it plus a margin wider than the resampling kernel, with the same
GDAL calls as the whole-tile path, so the stitched result equals resampling the whole scene
(``tests/test_grid.py``). Same CRS only: the working grid is the scene's own at another pixel size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from refiner.raster import Georef, Tile, probs_to_grid, read_image, read_probs, resample, resample_tile, working_grid

#: Extra source pixels read around a window, beyond its footprint: more than any GDAL kernel
#: used here (average, bilinear, nearest) reaches, so windows see what the whole scene would.
MARGIN = 2


@dataclass(frozen=True)
class Grid:
    """A raster grid: georeferencing of its top-left pixel and its (height, width)."""

    georef: Georef
    shape: tuple[int, int]

    def window(self, row: int, col: int, height: int, width: int) -> Grid:
        return Grid(self.georef.window(row, col), (height, width))

    @property
    def resolution(self) -> float:
        return self.georef.resolution


def working_grid_of(scene: Grid, resolution: float) -> Grid:
    """The grid covering ``scene``'s ground at ``resolution`` (as :func:`refiner.raster.to_working_resolution`)."""
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
    """The image of ``path`` (on grid ``scene``) resampled onto the window ``dst`` of the working grid."""
    return resample_tile(read_image(path, bands=bands, window=source_window(scene, dst)), dst.georef, dst.shape)


def read_probs_on(path: str | Path, scene: Grid, dst: Grid) -> np.ndarray:
    """Class probabilities on grid ``scene`` resampled bilinearly onto the window ``dst`` (as :func:`to_working`)."""
    probs, _, georef = read_probs(path, window=source_window(scene, dst))
    assert georef is not None
    return resample(probs, georef, dst.shape, dst.georef)


def probs_back_on(path: str | Path, work: Grid, dst: Grid, bands_per_map: int) -> np.ndarray:
    """Working-grid probability maps of ``path`` brought onto the scene window ``dst``.

    The file may hold several maps of ``bands_per_map`` bands (every iteration); each is
    upsampled and renormalised on its own by :func:`refiner.raster.probs_to_grid`.
    """
    probs, _, georef = read_probs(path, window=source_window(work, dst))
    assert georef is not None
    maps = np.split(probs, probs.shape[0] // bands_per_map)
    return np.concatenate([probs_to_grid(m, georef, dst.georef, dst.shape) for m in maps])
