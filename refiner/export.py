"""Exporting results: class maps as polygons in a GeoPackage (rasters go through :mod:`refiner.raster`).

Polygons come from :func:`rasterio.features.shapes` (connected regions of equal class, traced
along pixel edges, in the tile's CRS) and are written with ``pyogrio``; no GeoPandas needed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyogrio.raw
import shapely
from affine import Affine
from rasterio.features import shapes

from refiner.classes import IGNORE, ClassSpec
from refiner.raster import Georef


def class_polygons(
    class_map: np.ndarray,
    georef: Georef | None,
    classes: ClassSpec,
    *,
    skip: tuple[int, ...] = (0,),
    min_pixels: int = 0,
    simplify: float = 0.0,
) -> tuple[list, list[int]]:
    """Regions of ``class_map`` as shapely polygons in map units (pixels when not georeferenced).

    ``skip`` lists class indices not to export (background by default); regions smaller than
    ``min_pixels`` are dropped; ``simplify`` is a tolerance in map units (0 keeps pixel edges).
    """
    transform = georef.transform if georef is not None else Affine.identity()
    mask = np.isin(class_map, [i for i in range(len(classes)) if i not in skip])
    geoms, values = [], []
    pixel_area = abs(transform.a * transform.e - transform.b * transform.d)
    for geom, value in shapes(class_map.astype(np.uint8), mask=mask & (class_map != IGNORE), transform=transform):
        poly = shapely.geometry.shape(geom)
        if min_pixels and poly.area < min_pixels * pixel_area:
            continue
        if simplify:
            poly = poly.simplify(simplify, preserve_topology=True)
        geoms.append(poly)
        values.append(int(value))
    return geoms, values


def write_geopackage(
    path: str | Path,
    class_map: np.ndarray,
    georef: Georef | None,
    classes: ClassSpec,
    *,
    skip: tuple[int, ...] = (0,),
    min_pixels: int = 0,
    simplify: float = 0.0,
    layer: str = "classes",
) -> int:
    """Write the class map's regions to a GeoPackage layer (fields: class, value, area); returns
    the number of polygons."""
    geoms, values = class_polygons(class_map, georef, classes, skip=skip, min_pixels=min_pixels, simplify=simplify)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".part.gpkg")
    tmp.unlink(missing_ok=True)
    names = np.array([classes.names[v] for v in values], dtype=object)
    mask_values = np.array([classes.values[v] for v in values], dtype=np.int32)
    areas = np.array([g.area for g in geoms], dtype=np.float64)
    multi = [shapely.MultiPolygon([g]) if g.geom_type == "Polygon" else g for g in geoms]
    pyogrio.raw.write(
        str(tmp),
        geometry=np.array(shapely.to_wkb(multi), dtype=object) if multi else np.array([], dtype=object),
        field_data=[names, mask_values, areas],
        fields=["class", "value", "area"],
        layer=layer,
        driver="GPKG",
        geometry_type="MultiPolygon",
        crs=georef.crs.to_wkt() if georef is not None else None,
    )
    tmp.replace(path)
    return len(geoms)
