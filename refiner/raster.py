"""Reading and writing rasters: imagery, label masks, probability maps, vector labels.

Conventions inside the engine (see ``docs/architecture.md``):

* imagery is ``float32`` (C, H, W) in [0, 1];
* probabilities are ``float32`` (K, H, W);
* labels are ``uint8`` (H, W) class indices with 255 = unlabelled.

**Scaling rule** for imagery: ``uint8`` is divided by 255; ``uint16`` by ``2**NBITS - 1`` when
the file declares ``NBITS`` (e.g. 11- or 12-bit sensors) and by 65535 otherwise; floating-point
data is taken as already in [0, 1], or as 0-255 (divided by 255, with a :class:`ScaleNote`) when
its values pass 1.5, and refused beyond 255. Pass ``scale=`` to override (e.g. ``scale=10000``
for reflectance x 10000). Models standardise the scaled values with the mean and standard
deviation of their training imagery, so the rule only has to be the same at training and use.

**Nodata** (a declared nodata value, an alpha band or an internal mask) marks invalid pixels:
their image values are set to 0, they become unlabelled in labels, and outputs mark them as
nodata (255 in class maps).
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError, RasterioIOError
from rasterio.warp import reproject, transform_geom
from rasterio.windows import Window

from refiner.atomic import atomic_file, commit, temp_beside
from refiner.classes import IGNORE, ClassSpec

VECTOR_SUFFIXES = (".geojson", ".json")


@dataclass(frozen=True)
class Georef:
    """Where a raster lies on Earth: coordinate reference system and pixel-to-map transform."""

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
    """An image in the engine's conventions, with its georeferencing (None for plain pictures)."""

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
    """The tile's georeferencing, or for a picture with a stated ``pixel_size`` a local pixel grid
    of that size (so it resamples like a georeferenced tile); None otherwise."""
    if tile.georef is not None:
        return tile.georef
    if tile.pixel_size:
        # origin far from (0, 0): GDAL's warper returned all zeros for grids whose corner sits
        # exactly at the projection origin (a 650^2 picture at 0.3 m; 256^2 worked)
        return Georef(_PIXEL_CRS, Affine(tile.pixel_size, 0, _PIXEL_ORIGIN, 0, -tile.pixel_size, _PIXEL_ORIGIN))
    return None


class RasterError(ValueError):
    """A raster could not be used; the message says what is wrong and what to do."""


#: Largest raster read whole (pixels), checked against the size a file *declares* before any
#: pixel is read: a 186-byte TIFF declaring 10^6 x 10^6 px otherwise ran ``predict`` for 59 s to
#: 1.9 GB. 256 Mpx of RGB float32 is 3 GB; bigger scenes go window by window (``refiner scene``).
MAX_READ_PIXELS_ENV = "REFINER_MAX_READ_PIXELS"
DEFAULT_MAX_READ_PIXELS = 256 * 2**20


def max_read_pixels() -> int:
    """The whole-read limit: ``$REFINER_MAX_READ_PIXELS`` or :data:`DEFAULT_MAX_READ_PIXELS`."""
    raw = os.environ.get(MAX_READ_PIXELS_ENV, "").strip()
    return int(raw) if raw.isdigit() and int(raw) > 0 else DEFAULT_MAX_READ_PIXELS


def check_declared_size(ds, win: Window | None, path: str | Path) -> None:
    """Refuse, before reading, a read larger than :func:`max_read_pixels` (the limit is in the message)."""
    h, w = (int(win.height), int(win.width)) if win is not None else (ds.height, ds.width)
    limit = max_read_pixels()
    if h * w > limit:
        raise RasterError(
            f"{Path(str(path)).name} declares {h} x {w} pixels, above the limit of {limit // 2**20} megapixels "
            "read at once — read a window of it, refine it window by window with `python -m refiner scene`, "
            f"or raise {MAX_READ_PIXELS_ENV}"
        )


def _open(path: str | Path):
    path = str(path)
    if "://" not in path and not Path(path).exists():
        raise FileNotFoundError(f"no such file: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path)
    except RasterioIOError as exc:
        raise RasterError(f"cannot read {path} as a raster (GeoTIFF, PNG or JPEG): {exc}") from exc


def _read(ds, path: str | Path, *args, **kwargs) -> np.ndarray:
    """``ds.read`` with a damaged or truncated file named in one line (rasterio's own message is
    "Read failed. See previous exception for details.")."""
    try:
        return ds.read(*args, **kwargs)
    except (RasterioIOError, RasterioError) as exc:
        cause = str(exc.__cause__ or exc).splitlines()[0][:200]
        raise RasterError(
            f"{Path(str(path)).name} is damaged or truncated: its pixels cannot be read ({cause}) — "
            "export or download it again"
        ) from exc


def _georef(ds) -> Georef | None:
    if ds.crs is None or ds.transform == Affine.identity():
        return None
    return Georef(ds.crs, ds.transform)


def scale_factor(dtype: str, nbits: int | None = None, scale: float | None = None) -> float:
    """The divisor of the scaling rule (module docstring)."""
    if scale is not None:
        if scale <= 0:
            raise RasterError("scale must be positive")
        return float(scale)
    if dtype == "uint8":
        return 255.0
    if dtype == "uint16":
        return float(2 ** int(nbits) - 1) if nbits else 65535.0
    if dtype.startswith("float"):
        return 1.0
    raise RasterError(f"unsupported image data type {dtype}: use uint8, uint16 or float imagery")


class ScaleNote(UserWarning):
    """How imagery was scaled where its file did not say (the CLI prints it as a ``note:`` line)."""


#: Float imagery is taken as 0-1 (scaling rule); one whose values pass this is taken as 0-255
#: (an 8-bit image saved as float: clipping it to 1 made 99.998 % of a scene white).
FLOAT_AS_255_ABOVE = 1.5
_FLOAT_PEAKS: dict[tuple, float] = {}


def _float_divisor(ds, bands: Sequence[int], path: str | Path) -> float:
    """1 for float imagery in 0-1, 255 (with a :class:`ScaleNote`) for 0-255; other ranges are refused.

    Decided from the whole file (a sample of at most 512 x 512 pixels, cached per file), so every
    window of a scene is scaled alike.
    """
    p = Path(str(path))
    stamp = p.stat().st_mtime_ns if "://" not in str(path) and p.exists() else 0
    key = (str(path), stamp, tuple(bands))
    if key not in _FLOAT_PEAKS:
        shape = (len(bands), min(ds.height, 512), min(ds.width, 512))
        sample = _read(ds, path, list(bands), out_shape=shape, masked=True)
        values = sample.compressed() if np.ma.isMaskedArray(sample) else sample.ravel()
        values = values[np.isfinite(values)]
        if len(_FLOAT_PEAKS) > 1024:  # a long-running server sees many files
            _FLOAT_PEAKS.clear()
        _FLOAT_PEAKS[key] = float(values.max()) if values.size else 0.0
    peak = _FLOAT_PEAKS[key]
    if peak <= FLOAT_AS_255_ABOVE:
        return 1.0
    if peak <= 255 * 1.001:
        warnings.warn(
            ScaleNote(f"{p.name} is float imagery with values up to {peak:.4g}: taken as 0-255 and divided by 255"),
            stacklevel=3,
        )
        return 255.0
    raise RasterError(
        f"{p.name} is float imagery with values up to {peak:.6g}, neither 0-1 nor 0-255 — convert it to 8- or "
        "16-bit integers or to floats in 0-1 (e.g. gdal_translate -ot Byte -scale)"
    )


def _to_window(window: Sequence[int] | None) -> Window | None:
    if window is None:
        return None
    row, col, height, width = (int(v) for v in window)
    return Window(col, row, width, height)


def default_bands(count: int, ds=None) -> tuple[int, ...]:
    """Bands to use as RGB: colour-interpreted ones when declared, else 1-3."""
    if ds is not None:
        from rasterio.enums import ColorInterp

        ci = list(ds.colorinterp)
        want = [ColorInterp.red, ColorInterp.green, ColorInterp.blue]
        if all(c in ci for c in want):
            return tuple(ci.index(c) + 1 for c in want)
    if count >= 3:
        return (1, 2, 3)
    raise RasterError(
        f"the image has {count} band(s); Refiner needs 3 (RGB). "
        "Pick three bands with --bands (e.g. --bands 1,1,1 for a grey image)"
    )


def read_image(
    path: str | Path,
    *,
    bands: Sequence[int] | None = None,
    window: Sequence[int] | None = None,
    scale: float | None = None,
) -> Tile:
    """Read imagery (GeoTIFF, COG URL, PNG, JPEG) as a :class:`Tile`.

    ``bands`` are 1-based band indices to use as RGB (default: declared R, G, B or bands 1-3);
    ``window`` is ``(row, col, height, width)`` to read only part of the raster.
    """
    with _open(path) as ds:
        count = ds.count
        bands = tuple(bands) if bands else default_bands(count, ds)
        if len(bands) != 3:
            raise RasterError(f"--bands {list(bands)} is not three bands — give three for RGB, e.g. --bands 1,2,3")
        bad = [b for b in bands if not 1 <= b <= count]
        if bad:
            raise RasterError(f"band(s) {bad} do not exist: {path} has {count} band(s) — pick bands 1 to {count}")
        win = _to_window(window)
        check_declared_size(ds, win, path)
        data = _read(ds, path, list(bands), window=win, boundless=False)
        valid = _valid(ds, bands, win)
        nbits = ds.tags(bands[0], ns="IMAGE_STRUCTURE").get("NBITS")
        divisor = scale_factor(ds.dtypes[bands[0] - 1], int(nbits) if nbits else None, scale)
        if scale is None and ds.dtypes[bands[0] - 1].startswith("float"):
            divisor = _float_divisor(ds, bands, path)
        georef = _georef(ds)
        if georef is not None and win is not None:
            georef = Georef(georef.crs, ds.window_transform(win))
        dtype = ds.dtypes[0]
    image = np.clip(data.astype(np.float32) / divisor, 0.0, 1.0)
    image[:, ~valid] = 0.0
    return Tile(image=image, valid=valid, georef=georef, source=str(path), dtype=dtype, band_count=count)


def _valid(ds, bands: Sequence[int], win: Window | None) -> np.ndarray:
    """Where every one of ``bands`` has data (GDAL masks: nodata, alpha or mask band)."""
    return (ds.read_masks(list(bands), window=win) > 0).all(axis=0)


def read_valid(
    path: str | Path, *, bands: Sequence[int] | None = None, window: Sequence[int] | None = None
) -> np.ndarray:
    """Just :func:`read_image`'s validity mask (H, W), without decoding the pixels into a tile."""
    with _open(path) as ds:
        return _valid(ds, tuple(bands) if bands else default_bands(ds.count, ds), _to_window(window))


def raster_info(path: str | Path) -> dict:
    """Size, bands, data type, CRS and resolution of a raster, without reading its pixels."""
    with _open(path) as ds:
        georef = _georef(ds)
        return {
            "width": ds.width,
            "height": ds.height,
            "bands": ds.count,
            "dtype": ds.dtypes[0],
            "crs": georef.crs.to_string() if georef else None,
            "resolution": georef.resolution if georef else None,
            "nodata": ds.nodata,
            "tiled": bool(ds.profile.get("tiled", False)),
            "descriptions": list(ds.descriptions),
        }


def read_labels(
    path: str | Path,
    classes: ClassSpec,
    *,
    like: Tile | None = None,
    window: Sequence[int] | None = None,
    line_width: float = 7.0,
    strict: bool = True,
) -> np.ndarray:
    """Read a label mask (raster or GeoJSON) as class indices (H, W) uint8, 255 = unlabelled.

    Raster masks map pixel values to classes with ``classes.values``; vector labels are
    rasterised onto ``like`` (required then). With ``like``, sizes must match and the tile's
    nodata pixels become unlabelled.
    """
    if str(path).lower().endswith(VECTOR_SUFFIXES):
        if like is None:
            raise RasterError("vector labels need the image they label (its grid and georeferencing)")
        labels = rasterize_vectors(path, like, classes, line_width=line_width)
    else:
        with _open(path) as ds:
            win = _to_window(window)
            raw = _read(ds, path, 1, window=win)
            georef = _georef(ds)
            if georef is not None and win is not None:
                georef = Georef(georef.crs, ds.window_transform(win))
        labels = classes.encode_mask(raw, strict=strict)
        if like is not None:
            check_same_place(georef, like.georef, f"the label mask {Path(str(path)).name}", Path(like.source).name)
    if like is not None:
        if labels.shape != like.shape:
            raise RasterError(
                f"labels {Path(path).name} are {labels.shape[0]}x{labels.shape[1]} pixels but the "
                f"image is {like.shape[0]}x{like.shape[1]}: they must cover the same grid"
            )
        labels = labels.copy()
        labels[~like.valid] = IGNORE
    return labels


#: What to do about probabilities that do not fit their image.
PREDICT_ON_IT = "predict the probabilities on this image (`python -m refiner predict`)"


def check_same_place(
    georef: Georef | None,
    image: Georef | None,
    what: str,
    image_name: str = "the image",
    todo: str = "give the file made on this image's grid",
) -> None:
    """Refuse ``what`` (probabilities, labels) lying in another CRS or place than the image it is
    given with, before any work. Only when both are georeferenced: a plain PNG mask is taken to
    be on the image's grid, as its size is checked.

    The grids must share the CRS, the pixel size (to 0.1 %) and the origin (to 1 % of a pixel).
    """
    if georef is None or image is None:
        return
    image_name = image_name or "the image"
    if georef.crs != image.crs:
        raise RasterError(
            f"{what} is in {georef.crs.to_string()} but {image_name} is in {image.crs.to_string()} — {todo}"
        )
    a, b = georef.transform, image.transform
    px = max(abs(b.a), abs(b.e), 1e-12)
    scale_off = max(abs(a.a - b.a), abs(a.e - b.e), abs(a.b - b.b), abs(a.d - b.d)) > 1e-3 * px
    if scale_off:
        raise RasterError(
            f"{what} has {abs(a.a):g} x {abs(a.e):g} pixels but {image_name} has {abs(b.a):g} x {abs(b.e):g} — {todo}"
        )
    dx, dy = a.c - b.c, a.f - b.f
    if max(abs(dx), abs(dy)) > 0.01 * px:
        raise RasterError(
            f"{what} is not where {image_name} is: its top-left corner is off by ({dx:+.6g}, {dy:+.6g}) "
            f"{georef.crs.linear_units or 'CRS units'} — {todo}"
        )


def _load_geojson(path: str | Path) -> dict:
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


def _feature_class(props: dict, classes: ClassSpec, class_property: str) -> int:
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
    path_or_geojson: str | Path | dict,
    like: Tile,
    classes: ClassSpec,
    *,
    line_width: float = 7.0,
    class_property: str = "class",
    fill: int = 0,
) -> np.ndarray:
    """Burn GeoJSON polygons and lines into a label raster on ``like``'s grid.

    Lines (roads) are buffered to ``line_width`` metres in total (7 m as in the paper), points
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
    shapes: list[tuple[dict, int]] = []
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


def _coordinates(geom: dict) -> np.ndarray:
    """All (x, y) positions of a GeoJSON geometry, as an (N, 2) array (N = 0 for an empty one)."""
    flat: list[float] = []

    def walk(c) -> None:
        if isinstance(c, (list, tuple)) and c and isinstance(c[0], (int, float)):
            flat.extend(float(v) for v in c[:2])
        elif isinstance(c, (list, tuple)):
            for x in c:
                walk(x)

    walk(geom.get("coordinates", []))
    for g in geom.get("geometries", []) or []:
        walk(g.get("coordinates", []))
    return np.asarray(flat, dtype=np.float64).reshape(-1, 2)


def _reproject_geometry(geom: dict, src: CRS, dst: CRS, name: str) -> dict:
    """``geom`` from ``src`` to ``dst``, refusing coordinates outside ``src``'s range in one line
    (longitude/latitude beyond +-180/+-90, projected coordinates PROJ cannot invert)."""
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


def read_probs(
    path: str | Path, *, window: Sequence[int] | None = None, check_sums: bool = False
) -> tuple[np.ndarray, ClassSpec | None, Georef | None]:
    """Read a probability GeoTIFF (K bands) -> (probs float32 (K, H, W), classes or None, georef).

    Accepts float probabilities or uint8 scaled to 0-255; checks they look like probabilities
    (``check_sums``: also that a pixel's bands sum to 1, for files a user gives; internal stacks
    such as per-iteration outputs hold several maps and skip it).
    """
    with _open(path) as ds:
        if ds.count < 2:
            raise RasterError(f"{path} has {ds.count} band; a probability map has one band per class (>= 2)")
        win = _to_window(window)
        check_declared_size(ds, win, path)
        data = _read(ds, path, window=win).astype(np.float32)
        tags = ds.tags()
        georef = _georef(ds)
        if georef is not None and win is not None:
            georef = Georef(georef.crs, ds.window_transform(win))
        dtype = ds.dtypes[0]
    if dtype == "uint8":
        data /= 255.0
    if not np.isfinite(data).all() or data.min() < -1e-3 or data.max() > 1 + 1e-3:
        raise RasterError(
            f"{path} does not hold probabilities (values must lie in [0, 1]); "
            "write class probabilities, not scores, e.g. with `python -m refiner predict`"
        )
    if check_sums:
        check_prob_sums(data, path, whole=window is None)
    return data, tagged_classes(tags, path), georef


def tagged_classes(tags: dict[str, str], path: str | Path) -> ClassSpec | None:
    """The class list a Refiner output carries in its ``refiner_classes`` tag (None when untagged)."""
    if "refiner_classes" not in tags:
        return None
    try:
        return ClassSpec.from_dict(json.loads(tags["refiner_classes"]))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise RasterError(
            f"{Path(str(path)).name} has a damaged refiner_classes tag ({exc}) — write the file again"
        ) from exc


def check_prob_sums(data: np.ndarray, path: str | Path, whole: bool = True) -> None:
    """Refuse (K, H, W) "probabilities" whose bands do not sum to 1 (e.g. 2.7) or that are all zero."""
    sums = data.sum(axis=0)
    covered = sums > 1e-6  # pixels with all zeros are nodata (outside a scene's footprint)
    if whole and not covered.any():
        raise RasterError(f"{path} holds only zeros: no pixel has class probabilities — write them again")
    # The typical pixel's sum: uint8 rounding moves it by at most K * 0.5/255 (0.01 for K = 5), and
    # resampled scene edges blend with nodata, so single pixels may sum below 1; the median may not.
    typical = float(np.median(sums[covered])) if covered.any() else 1.0
    if abs(typical - 1.0) > 0.05:
        raise RasterError(
            f"{path} does not hold probabilities: a pixel's bands must sum to 1, they sum to {typical:.2f} "
            "— write softmax probabilities, e.g. with `python -m refiner predict`"
        )


def write_raster(
    path: str | Path,
    array: np.ndarray,
    georef: Georef | None,
    *,
    nodata: float | None = None,
    descriptions: Sequence[str] | None = None,
    tags: dict[str, str] | None = None,
    colormap: dict[int, tuple[int, int, int]] | None = None,
    scales: Sequence[float] | None = None,
) -> Path:
    """Write (H, W) or (B, H, W) as a tiled, deflate-compressed GeoTIFF with the given georef.

    ``scales``: per-band scale factors a GIS applies on reading (8-bit probabilities: 1/255).
    Written to a temporary file and renamed, so a crash never leaves a half-written output.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = array[None] if array.ndim == 2 else array
    b, h, w = arr.shape
    profile = {
        "driver": "GTiff",
        "height": h,
        "width": w,
        "count": b,
        "dtype": arr.dtype.name,
        "compress": "deflate",
        "predictor": 3 if arr.dtype.kind == "f" else 2,  # deflate on differences: float32 probabilities 1.5-2x smaller
        "tiled": h >= 256 and w >= 256,
        "nodata": nodata,
    }
    if profile["tiled"]:
        profile.update(blockxsize=256, blockysize=256)
    if georef is not None:
        profile.update(crs=georef.crs, transform=georef.transform)
    # A unique temp name per writer (refiner.atomic): with one fixed name, two sessions writing the
    # same file at once renamed each other's half-written file away ("No such file" on one of them).
    with atomic_file(path, suffix=".part") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(arr)
            for i, d in enumerate(descriptions or []):
                dst.set_band_description(i + 1, d)
            if tags:
                dst.update_tags(**tags)
            if colormap and b == 1:
                dst.write_colormap(1, colormap)
            if scales:
                dst.scales = tuple(scales)
    return path


def write_probs(
    path: str | Path, probs: np.ndarray, georef: Georef | None, classes: ClassSpec, *, quantise: bool = False
) -> Path:
    """Probabilities (K, H, W) as a GeoTIFF, one band per class, class list in the tags.

    float32, or with ``quantise`` uint8 steps of 1/255 (a quarter of the size; the file's scale
    factor says so to a GIS, and :func:`read_probs` reads it back to [0, 1]).
    """
    q = quantise_probs(probs) if quantise else probs.astype(np.float32)
    return write_raster(
        path, q, georef, descriptions=classes.names, tags={"refiner_classes": json.dumps(classes.to_dict())},
        scales=[1 / 255] * len(classes) if quantise else None,
    )  # fmt: skip


def quantise_probs(probs: np.ndarray) -> np.ndarray:
    """Probabilities in [0, 1] as uint8 steps of 1/255 (rounded: at most 0.002 off)."""
    return (np.clip(probs, 0, 1) * 255 + 0.5).astype(np.uint8)


def write_class_map(path: str | Path, classes_map: np.ndarray, georef: Georef | None, classes: ClassSpec) -> Path:
    """A class map (H, W) written with the classes' mask values (255 = nodata) and a colour table."""
    values = classes.decode(classes_map)
    cmap = {v: tuple(c) for v, c in zip(classes.values, classes.colors, strict=True)}
    return write_raster(
        path, values, georef, nodata=IGNORE, colormap=cmap, tags={"refiner_classes": json.dumps(classes.to_dict())}
    )


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
    """True when the tile is georeferenced (or has a stated pixel size) at a resolution other
    than the networks' one."""
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
    """The tile on grid ``dst`` of ``shape``: image by area average when ``dst`` is coarser, else
    bilinear; the validity mask by nearest neighbour."""
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
    """The tile, its class probabilities (bilinear) and label masks (majority vote when coarsening)
    at the working resolution; the same objects when the tile is already there."""
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


def is_vector(path: str | Path) -> bool:
    return str(path).lower().endswith(VECTOR_SUFFIXES)


class RasterWriter:
    """A tiled, compressed GeoTIFF written window by window, for outputs larger than memory.

    Opened on a temporary ``.part`` file and renamed on a clean :meth:`close` (use it as a
    context manager), so a crash never leaves a half-written output under the final name.
    GDAL's block cache is what holds data between writes; :func:`streaming_env` bounds it.
    BigTIFF is used when the file could pass 4 GiB.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        height: int,
        width: int,
        count: int,
        dtype: str,
        georef: Georef | None,
        nodata: float | None = None,
        descriptions: Sequence[str] | None = None,
        tags: dict[str, str] | None = None,
        colormap: dict[int, tuple[int, int, int]] | None = None,
        block: int = 256,
        quantise: bool = False,
    ) -> None:
        self.path = Path(path)
        self.tmp = temp_beside(self.path, ".part")  # unique: two writers of one path never collide
        profile = {
            "driver": "GTiff",
            "height": height,
            "width": width,
            "count": count,
            "dtype": dtype,
            "compress": "deflate",
            "predictor": 3 if dtype.startswith("float") else 2,
            "tiled": True,
            "blockxsize": block,
            "blockysize": block,
            "nodata": nodata,
            "BIGTIFF": "IF_SAFER",
            "interleave": "pixel" if count <= 4 else "band",
        }
        if georef is not None:
            profile.update(crs=georef.crs, transform=georef.transform)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                self.ds = rasterio.open(self.tmp, "w", **profile)
            for i, d in enumerate(descriptions or []):
                self.ds.set_band_description(i + 1, d)
            if tags:
                self.ds.update_tags(**tags)
            if colormap and count == 1:
                self.ds.write_colormap(1, colormap)
            self.quantise = quantise  # probabilities written as uint8 steps of 1/255 (see quantise_probs)
            if quantise:
                self.ds.scales = (1 / 255,) * count
        except BaseException:
            self.close(keep=False)
            raise

    def write(self, array: np.ndarray, row: int, col: int) -> None:
        """Write (B, h, w) or (h, w) with its top-left corner at ``(row, col)``."""
        arr = array[None] if array.ndim == 2 else array
        if self.quantise:
            arr = quantise_probs(arr)
        self.ds.write(arr.astype(self.ds.dtypes[0], copy=False), window=Window(col, row, arr.shape[2], arr.shape[1]))

    def close(self, *, keep: bool = True) -> Path:
        """Finish the file under its final name (``keep``), or remove it; a failed finish removes it too."""
        ds = getattr(self, "ds", None)
        if not keep:
            with contextlib.suppress(Exception):  # e.g. a full disk failing the last flush again
                if ds is not None:
                    ds.close()
            self.tmp.unlink(missing_ok=True)
            return self.path
        try:
            ds.close()
            commit(self.tmp, self.path)
        except BaseException:
            self.tmp.unlink(missing_ok=True)
            raise
        return self.path

    def __enter__(self) -> RasterWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(keep=exc_type is None)


def streaming_env(cache_mb: int = 256):
    """A rasterio environment whose GDAL block cache is ``cache_mb`` MiB, so memory does not grow with the scene.

    rasterio takes an integer ``GDAL_CACHEMAX`` in bytes (GDAL's own "< 100000 means MB" rule
    applies to strings only): a bare 256 gave a 256-byte cache, which compressed and rewrote
    every partly written output tile at each window write, bloating files 1.5-3.5x.
    """
    return rasterio.Env(GDAL_CACHEMAX=cache_mb * 2**20)


def raster_shape(path: str | Path) -> tuple[int, int, Georef | None, float | None]:
    """Height, width, georeferencing and resolution of a raster (projected CRS), without reading pixels.

    Refuses scenes above ``$REFINER_MAX_SCENE_PIXELS`` (default 2^36, 262144² px): a 123-byte file
    declaring 10^6 x 10^6 px otherwise spent 100 s planning its windows before failing.
    """
    with _open(path) as ds:
        raw = os.environ.get("REFINER_MAX_SCENE_PIXELS", "").strip()
        limit = int(raw) if raw.isdigit() and int(raw) > 0 else 2**36
        if ds.height * ds.width > limit:
            raise RasterError(
                f"{Path(str(path)).name} declares {ds.height} x {ds.width} pixels, above the scene limit of "
                f"{limit // 2**30} gigapixels — cut it into smaller scenes, or raise REFINER_MAX_SCENE_PIXELS"
            )
        georef = _georef(ds)
        res = georef.resolution if georef is not None and georef.crs.is_projected else None
        return ds.height, ds.width, georef, res
