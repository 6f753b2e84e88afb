"""A tile in memory: the image with its georeferencing (or a local pixel grid for plain pictures)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from affine import Affine
from rasterio.crs import CRS


@dataclass(frozen=True)
class Georef:
    """Where a raster lies on Earth: coordinate reference system and pixel-to-map transform.

    Attributes:
        crs: the coordinate reference system (a ``rasterio.crs.CRS``).
        transform: the affine transform from (column, row) to map coordinates.

    Example:
        ```python
        from affine import Affine
        from rasterio.crs import CRS

        georef = refiner.Georef(CRS.from_epsg(32619), Affine(1.0, 0, 300000.0, 0, -1.0, 4700000.0))
        refiner.write_class_map("map.tif", class_map, georef, classes)  # 1 m pixels, UTM 19N
        ```
    """

    crs: CRS
    transform: Affine

    @property
    def resolution(self) -> float:
        """Ground size of a pixel (mean of x and y) in CRS units, metres for projected CRSs."""
        return float((abs(self.transform.a) + abs(self.transform.e)) / 2)

    def window(self, row: int, col: int) -> Georef:
        """Georeferencing of a sub-window starting at ``(row, col)``."""
        return Georef(self.crs, self.transform @ Affine.translation(col, row))


@dataclass
class Tile:
    """An image in the engine's conventions, with its georeferencing (None for plain pictures).

    Attributes:
        image: float32 (C, H, W) in [0, 1].
        valid: bool (H, W): False where the source has nodata.
        georef: where the image lies (None for a picture without georeferencing).
        source: where it was read from, for messages.
        dtype: the source's data type, for display.
        band_count: bands in the source file (before picking the RGB ones).
        pixel_size: metres per pixel a user stated for a picture without georeferencing.

    Example:
        ```python
        tile = refiner.read_image("tile.tif")
        print(tile.shape, tile.resolution)  # (H, W), metres per pixel (None when unknown)
        probs = refiner.predict_coarse(coarse, tile)
        ```
    """

    image: np.ndarray  # float32 (C, H, W) in [0, 1]
    valid: np.ndarray  # bool (H, W): False where the source has nodata
    georef: Georef | None = None
    source: str = ""
    dtype: str = "uint8"  # the source's data type, for display
    band_count: int = 3  # bands in the source file (before picking the RGB ones)
    #: Metres per pixel a user stated for a picture without georeferencing (PNG, JPEG, plain TIFF).
    pixel_size: float | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        return int(self.image.shape[1]), int(self.image.shape[2])

    @property
    def resolution(self) -> float | None:
        """Metres per pixel when georeferenced in a projected CRS (or stated, see ``pixel_size``), else None."""
        if self.georef is None:
            return self.pixel_size
        if not self.georef.crs.is_projected:
            return None
        return self.georef.resolution


#: Stand-in CRS for resampling a picture with a stated pixel size: any projected CRS will do, as
#: source and target grids share it (nothing with this CRS is ever written to a file).
_PIXEL_CRS = CRS.from_epsg(3857)
_PIXEL_ORIGIN = 1e6  # metres; larger than any picture's extent, so the grid never crosses 0


def grid_of(tile: Tile) -> Georef | None:
    """The tile's georeferencing, or a local pixel grid for a picture with a stated ``pixel_size``.

    The local grid has that pixel size, so the picture resamples like a georeferenced tile;
    None otherwise.
    """
    if tile.georef is not None:
        return tile.georef
    return pixel_grid(tile.pixel_size) if tile.pixel_size else None


def pixel_grid(pixel_size: float) -> Georef:
    """The local grid a picture of ``pixel_size`` m pixels is resampled on (never written to a file)."""
    # origin far from (0, 0): GDAL's warper returned all zeros for grids whose corner sits
    # exactly at the projection origin (a 650^2 picture at 0.3 m; 256^2 worked)
    return Georef(_PIXEL_CRS, Affine(pixel_size, 0, _PIXEL_ORIGIN, 0, -pixel_size, _PIXEL_ORIGIN))


#: The CRS of files exported from a picture with a stated pixel size: a local engineering grid in
#: metres (the name says so to whoever opens the file), so GIS areas and lengths come out in m²
#: and m. A GeoTIFF from a 0.3 m PNG had an identity transform and no CRS: areas in px².
LOCAL_GRID_NAME = "Refiner local grid"
LOCAL_GRID_CRS = CRS.from_wkt(
    "LOCAL_CS[\"Refiner local grid: metres from the picture's lower-left corner at its stated pixel size, "
    'not a place on Earth",LOCAL_DATUM["picture",32767],UNIT["metre",1],AXIS["Easting",EAST],AXIS["Northing",NORTH]]'
)


def local_grid(pixel_size: float, height: int) -> Georef:
    """A picture's local metric grid for export: ``pixel_size`` m pixels, (0, 0) at its lower-left corner."""
    return Georef(LOCAL_GRID_CRS, Affine(pixel_size, 0, 0, 0, -pixel_size, height * pixel_size))


def is_local_grid(georef: Georef | None) -> bool:
    """Whether ``georef`` is a picture's :func:`local_grid` (metres, but no place on Earth)."""
    return georef is not None and LOCAL_GRID_NAME in georef.crs.to_wkt()  # as a file reads it back too


class RasterError(ValueError):
    """A raster could not be used; the message says what is wrong and what to do."""
