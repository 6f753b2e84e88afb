"""Exporting results as vectors a GIS user expects: simplified class polygons and road centre-lines.

Both go into one GeoPackage (rasters go through :mod:`refiner.data`). Polygons come from
:func:`rasterio.features.shapes` (connected regions of equal class, traced along pixel edges, in
the tile's CRS); raw, they are pixel staircases, so they are simplified
with shapely's coverage simplification, which moves the edge two neighbouring regions share
once, for both (no gaps or overlaps between them, unlike simplifying each polygon on its own).
Roads are lines to a GIS user, not areas: the road mask is thinned to a one-pixel skeleton
(:func:`thin`, Zhang-Suen; scikit-image is not a dependency here and 30 lines of numpy do it)
and traced into centre-lines. Written with ``pyogrio``; no GeoPandas needed.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pyogrio.raw
import rasterio
import shapely
from affine import Affine
from rasterio.features import shapes
from rasterio.windows import Window
from shapely.geometry.base import BaseGeometry

from refiner.core.atomic import atomic_file
from refiner.core.classes import IGNORE, ClassSpec
from refiner.data.tile import Georef

POLYGONS, LINES = "classes", "road_centrelines"


def simplify_polygons(geoms: list[BaseGeometry], tolerance: float) -> list[BaseGeometry]:
    """Simplify polygons that tile the plane together, keeping their shared edges shared."""
    if not tolerance or not geoms:
        return geoms
    out = shapely.coverage_simplify(np.asarray(geoms, dtype=object), tolerance)
    return [g if g.is_valid else shapely.make_valid(g) for g in out]


def class_polygons(
    class_map: np.ndarray,
    georef: Georef | None,
    classes: ClassSpec,
    *,
    skip: tuple[int, ...] = (0,),
    min_pixels: int = 0,
    simplify: float = 0.0,
) -> tuple[list[BaseGeometry], list[int]]:
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
        geoms.append(poly)
        values.append(int(value))
    geoms = simplify_polygons(geoms, simplify)
    keep = [i for i, g in enumerate(geoms) if not g.is_empty]
    return [geoms[i] for i in keep], [values[i] for i in keep]


def thin(mask: np.ndarray) -> np.ndarray:
    """The one-pixel-wide skeleton of a boolean mask (Zhang & Suen 1984, both sub-iterations)."""
    img = np.pad(mask.astype(bool), 1)
    while True:
        changed = False
        for step in (0, 1):
            p = img
            # neighbours P2..P9 clockwise from north, each as a view of the padded image
            n = [p[:-2, 1:-1], p[:-2, 2:], p[1:-1, 2:], p[2:, 2:], p[2:, 1:-1], p[2:, :-2], p[1:-1, :-2], p[:-2, :-2]]
            nb = [x.astype(np.uint8) for x in n]
            b = sum(nb)
            a = sum(((nb[i] == 0) & (nb[(i + 1) % 8] == 1)).astype(np.uint8) for i in range(8))
            p2, p4, p6, p8 = n[0], n[2], n[4], n[6]
            if step == 0:
                side = ~(p2 & p4 & p6) & ~(p4 & p6 & p8)
            else:
                side = ~(p2 & p4 & p8) & ~(p2 & p6 & p8)
            drop = p[1:-1, 1:-1] & (b >= 2) & (b <= 6) & (a == 1) & side
            if drop.any():
                img[1:-1, 1:-1] &= ~drop
                changed = True
        if not changed:
            return img[1:-1, 1:-1]


def centre_lines(
    mask: np.ndarray, georef: Georef | None, *, simplify: float = 0.0, min_length: float = 0.0
) -> list[BaseGeometry]:
    """Centre-lines of a (road) mask as shapely LineStrings in map units.

    The skeleton's pixels are joined to their 8-neighbours (a diagonal only where no two
    orthogonal steps join the same pixels, so no little triangles), merged into lines between
    junctions and ends, simplified by ``simplify`` and dropped when shorter than ``min_length``
    (map units: this also prunes the short spurs thinning leaves at a road's corners).
    """
    transform = georef.transform if georef is not None else Affine.identity()
    sk = thin(mask)
    p = np.pad(sk, 1)
    c = p[1:-1, 1:-1]
    e, s, se, sw = p[1:-1, 2:], p[2:, 1:-1], p[2:, 2:], p[2:, :-2]
    w = p[1:-1, :-2]
    steps = [(c & e, (0, 1)), (c & s, (1, 0)), (c & se & ~e & ~s, (1, 1)), (c & sw & ~w & ~s, (1, -1))]
    segs = []
    for hit, (dr, dc) in steps:
        r, col = np.nonzero(hit)
        segs.append(np.stack([np.stack([col, r], -1), np.stack([col + dc, r + dr], -1)], 1))
    seg = np.concatenate(segs).astype(np.float64) + 0.5  # pixel centres
    if not len(seg):
        return []
    xy = seg.reshape(-1, 2)
    x, y = transform * (xy[:, 0], xy[:, 1])  # type: ignore[operator]  # affine types one point; it maps arrays too
    merged = shapely.line_merge(shapely.MultiLineString(list(np.stack([x, y], -1).reshape(-1, 2, 2))))
    lines = list(merged.geoms) if hasattr(merged, "geoms") else [merged]
    if simplify:
        lines = [ln.simplify(simplify) for ln in lines]
    return [ln for ln in lines if not ln.is_empty and ln.length >= min_length]


def road_class(classes: ClassSpec) -> int | None:
    """The index of the class called "road" (or "roads"), if there is one."""
    for i, n in enumerate(classes.names):
        if n.lower() in ("road", "roads"):
            return i
    return None


def _write_layer(
    path: Path,
    layer: str,
    geoms: list[BaseGeometry],
    fields: dict[str, np.ndarray],
    kind: str,
    crs: str | None,
    append: bool,
) -> None:
    multi = [shapely.MultiPolygon([g]) if isinstance(g, shapely.Polygon) else g for g in geoms]
    if kind == "MultiLineString":
        multi = [shapely.MultiLineString([g]) if isinstance(g, shapely.LineString) else g for g in geoms]
    pyogrio.raw.write(
        str(path),
        geometry=np.array(shapely.to_wkb(multi), dtype=object) if multi else np.array([], dtype=object),
        field_data=list(fields.values()),
        fields=list(fields),
        layer=layer,
        driver="GPKG",
        geometry_type=kind,
        crs=crs,
        append=append,
    )


def _polygon_fields(geoms: list[BaseGeometry], values: list[int], classes: ClassSpec) -> dict[str, np.ndarray]:
    return {
        "class": np.array([classes.names[v] for v in values], dtype=object),
        "value": np.array([classes.values[v] for v in values], dtype=np.int32),
        "area": np.array([g.area for g in geoms], dtype=np.float64),
    }


def write_geopackage(
    path: str | Path,
    class_map: np.ndarray,
    georef: Georef | None,
    classes: ClassSpec,
    *,
    skip: tuple[int, ...] = (0,),
    min_pixels: int = 0,
    simplify: float = 0.0,
    lines: bool = False,
    min_length: float = 0.0,
    layer: str = POLYGONS,
) -> dict[str, int]:
    """Write the class map's regions (and roads' centre-lines) to a GeoPackage; features per layer.

    Regions go to a layer with fields class, value, area; with ``lines`` and a road class, the
    roads' centre-lines to a ``road_centrelines`` layer (field: length). Returns the number of
    features per layer.
    """
    return write_geopackage_windows(
        path, [(class_map, georef)], classes, crs=georef.crs.to_wkt() if georef else None, skip=skip,
        min_pixels=min_pixels, simplify=simplify, lines=lines, min_length=min_length, layer=layer,
    )  # fmt: skip


def write_geopackage_windows(
    path: str | Path,
    windows: Iterable[tuple[np.ndarray, Georef | None]],
    classes: ClassSpec,
    *,
    crs: str | None,
    skip: tuple[int, ...] = (0,),
    min_pixels: int = 0,
    simplify: float = 0.0,
    lines: bool = False,
    min_length: float = 0.0,
    layer: str = POLYGONS,
) -> dict[str, int]:
    """:func:`write_geopackage` for a class map given as windows, each with its own georef.

    The features of each window are appended, so a scene of any size is written at bounded memory;
    the file appears whole or not at all (:func:`~refiner.core.atomic.atomic_file`).
    """
    road = road_class(classes) if lines else None
    counts = {layer: 0} | ({LINES: 0} if road is not None else {})
    with atomic_file(path, suffix=".gpkg") as tmp:  # GDAL picks the GeoPackage driver by the suffix
        i = -1
        for i, (class_map, georef) in enumerate(windows):
            geoms, values = class_polygons(
                class_map, georef, classes, skip=skip, min_pixels=min_pixels, simplify=simplify
            )
            _write_layer(tmp, layer, geoms, _polygon_fields(geoms, values, classes), "MultiPolygon", crs, i > 0)
            counts[layer] += len(geoms)
            if road is not None:
                ln = centre_lines(class_map == road, georef, simplify=simplify, min_length=min_length)
                fields = {"length": np.array([g.length for g in ln], dtype=np.float64)}
                _write_layer(tmp, LINES, ln, fields, "MultiLineString", crs, i > 0)
                counts[LINES] += len(ln)
        if i < 0:
            raise ValueError(f"no class map to write to {path}: give at least one window")
    return counts


def class_map_windows(path: str | Path, size: int = 4096) -> Iterator[tuple[np.ndarray, Georef | None]]:
    """A class-map GeoTIFF (mask values) read as (class indices, georef) windows of ``size`` px."""
    with rasterio.open(path) as ds:
        import json

        classes = ClassSpec.from_dict(json.loads(ds.tags()["refiner_classes"]))
        for r in range(0, ds.height, size):
            for c in range(0, ds.width, size):
                win = Window(c, r, min(size, ds.width - c), min(size, ds.height - r))
                georef = Georef(ds.crs, ds.window_transform(win)) if ds.crs is not None else None
                yield classes.encode_mask(ds.read(1, window=win), strict=False), georef
