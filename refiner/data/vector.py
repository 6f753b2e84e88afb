"""Vector labels (GeoJSON) burnt into a tile's grid: polygons filled, roads buffered to a width."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.warp import transform_geom

from refiner.core.classes import ClassSpec
from refiner.data.tile import RasterError, Tile

VECTOR_SUFFIXES = (".geojson", ".json")
#: Vector lines (roads) are buffered to this width in metres in all: the paper's OSM road width.
LINE_WIDTH = 7.0


def _load_geojson(path: str | Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RasterError(f"{path} is not valid GeoJSON: {exc}") from exc
    if data.get("type") == "Feature":
        data = {"type": "FeatureCollection", "features": [data]}
    if data.get("type") != "FeatureCollection":
        raise RasterError(f"{path}: expected a GeoJSON FeatureCollection or Feature")
    return data


def _feature_class(props: Mapping[str, Any] | None, classes: ClassSpec, class_property: str) -> int:
    """Class index of a feature: its ``class`` property (a name or mask value), else class 1."""
    value = (props or {}).get(class_property)
    if value is None:
        return 1  # single-class files (e.g. an OSM road extract): the first foreground class
    if isinstance(value, str) and value in classes.names:
        return classes.names.index(value)
    try:
        v = int(value)
    except (TypeError, ValueError):
        raise RasterError(
            f"feature {class_property}={value!r} is not one of the classes {list(classes.names)}"
        ) from None
    if v in classes.values:
        return classes.values.index(v)
    raise RasterError(f"feature {class_property}={value!r} is not one of the classes {list(classes.names)}")


def rasterize_vectors(
    path_or_geojson: str | Path | dict[str, Any],
    like: Tile,
    classes: ClassSpec,
    *,
    line_width: float = LINE_WIDTH,
    class_property: str = "class",
    fill: int = 0,
) -> np.ndarray:
    """Burn GeoJSON polygons and lines into a label raster on ``like``'s grid.

    Lines (roads) are buffered to ``line_width`` metres in total (:data:`LINE_WIDTH`, 7 m as in the paper), points
    are ignored. GeoJSON is in WGS84 (RFC 7946) unless it names another CRS; geometries are
    reprojected to the tile's CRS. On a non-georeferenced tile, coordinates are pixel
    (column, row) and widths are in pixels. Pixels no feature covers get ``fill`` (background;
    pass 255 to leave them unlabelled). Later classes are drawn over earlier ones.
    """
    from rasterio.features import rasterize
    from shapely.geometry import mapping, shape

    data = path_or_geojson if isinstance(path_or_geojson, dict) else _load_geojson(path_or_geojson)
    name = "the GeoJSON" if isinstance(path_or_geojson, dict) else Path(path_or_geojson).name
    src_crs = CRS.from_epsg(4326)
    named = (data.get("crs") or {}).get("properties", {}).get("name")
    if named:
        try:
            src_crs = CRS.from_user_input(named)
        except Exception as exc:  # rasterio's CRSError
            raise RasterError(f"{name} names an unknown CRS {named!r} — use an EPSG code, e.g. EPSG:32619") from exc
    features = [f for f in data.get("features") or [] if isinstance(f, dict) and f.get("geometry")]
    if not any(f["geometry"].get("type") not in ("Point", "MultiPoint") for f in features):
        raise RasterError(
            f"{name} has no polygon or line features, so there is nothing to label — "
            "check that it is the right file (points are not used)"
        )
    h, w = like.shape
    if like.georef is not None:
        transform, dst_crs = like.georef.transform, like.georef.crs
        if not dst_crs.is_projected:
            raise RasterError(
                "the image's CRS is geographic (degrees): reproject it to a metric CRS (e.g. UTM) "
                "so road widths in metres make sense"
            )
        width_units = line_width  # metres in a projected CRS
    else:
        transform, dst_crs, width_units = Affine.identity(), None, line_width
    shapes: list[tuple[dict[str, Any], int]] = []
    for feat in features:
        geom = feat["geometry"]
        cls = _feature_class(feat.get("properties"), classes, class_property)
        if dst_crs is not None:
            geom = _reproject_geometry(geom, src_crs, dst_crs, name)
        g = shape(geom)
        if g.geom_type in ("LineString", "MultiLineString"):
            g = g.buffer(width_units / 2)
        elif g.geom_type in ("Point", "MultiPoint"):
            continue
        if not g.is_empty:
            shapes.append((mapping(g), cls))
    shapes.sort(key=lambda s: s[1])
    from rasterio.transform import array_bounds
    from shapely.geometry import box

    west, south, east, north = array_bounds(h, w, transform)
    footprint = box(min(west, east), min(south, north), max(west, east), max(south, north))
    if not any(shape(geom).intersects(footprint) for geom, _ in shapes):
        where = f"{like.georef.crs.to_string()} bounds {footprint.bounds}" if like.georef else f"{h}x{w} pixels"
        raise RasterError(
            f"no feature of {name} ({len(features)} in all) lies on the image ({where}) — check that the "
            "GeoJSON covers this image and that its coordinates are in its CRS (longitude, latitude unless it "
            "names another)"
        )
    return rasterize(shapes, out_shape=(h, w), transform=transform, fill=fill, dtype="uint8")


def _coordinates(geom: Mapping[str, Any]) -> np.ndarray:
    """All (x, y) positions of a GeoJSON geometry, as an (N, 2) array (N = 0 for an empty one)."""
    flat: list[float] = []

    def walk(c: object) -> None:
        if isinstance(c, (list, tuple)) and c and isinstance(c[0], (int, float)):
            flat.extend(float(v) for v in c[:2])
        elif isinstance(c, (list, tuple)):
            for x in c:
                walk(x)

    walk(geom.get("coordinates", []))
    for g in geom.get("geometries", []) or []:
        walk(g.get("coordinates", []))
    return np.asarray(flat, dtype=np.float64).reshape(-1, 2)


def _reproject_geometry(geom: dict[str, Any], src: CRS, dst: CRS, name: str) -> dict[str, Any]:
    """``geom`` from ``src`` to ``dst``, refusing coordinates outside ``src``'s range in one line.

    Out of range: longitude/latitude beyond +-180/+-90, projected coordinates PROJ cannot invert.
    """
    xy = _coordinates(geom)
    if src.is_geographic and xy.size and (np.abs(xy[:, 0]).max() > 180 or np.abs(xy[:, 1]).max() > 90):
        bad = xy[(np.abs(xy[:, 0]) > 180) | (np.abs(xy[:, 1]) > 90)][0]
        raise RasterError(
            f"{name} has coordinates ({bad[0]:g}, {bad[1]:g}) outside {src.to_string()}'s range (longitude "
            "-180..180, latitude -90..90) — if they are projected metres, name their CRS in the GeoJSON's "
            '"crs" member, e.g. {"type": "name", "properties": {"name": "EPSG:32619"}}'
        )
    outside = RasterError(
        f"{name} has coordinates outside the range of its CRS {src.to_string()} (they cannot be placed in the "
        f"image's {dst.to_string()}) — check the GeoJSON's coordinates and its \"crs\" member"
    )
    try:
        out = transform_geom(src, dst, geom)
    except Exception as exc:  # GDAL/PROJ errors (CPLE_AppDefinedError: "Full reprojection failed")
        raise outside from exc
    moved = _coordinates(out)
    if moved.size and not np.isfinite(moved).all():
        raise outside
    return out


def is_vector(path: str | Path) -> bool:
    """Whether ``path`` names vector labels (GeoJSON) rather than a raster, by its suffix."""
    return str(path).lower().endswith(VECTOR_SUFFIXES)
