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
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning, RasterioError, RasterioIOError
from rasterio.io import DatasetReader
from rasterio.windows import Window

from refiner.core.classes import IGNORE, ClassSpec
from refiner.data.tile import Georef, RasterError, Tile
from refiner.data.vector import LINE_WIDTH, VECTOR_SUFFIXES, rasterize_vectors

#: Largest raster read whole (pixels), checked against the size a file *declares* before any
#: pixel is read: a 186-byte TIFF declaring 10^6 x 10^6 px otherwise ran ``predict`` for 59 s to
#: 1.9 GB. 256 Mpx of RGB float32 is 3 GB; bigger scenes go window by window (``refiner scene``).
MAX_READ_PIXELS_ENV = "REFINER_MAX_READ_PIXELS"
DEFAULT_MAX_READ_PIXELS = 256 * 2**20


def max_read_pixels() -> int:
    """The whole-read limit: ``$REFINER_MAX_READ_PIXELS`` or :data:`DEFAULT_MAX_READ_PIXELS`."""
    raw = os.environ.get(MAX_READ_PIXELS_ENV, "").strip()
    return int(raw) if raw.isdigit() and int(raw) > 0 else DEFAULT_MAX_READ_PIXELS


def check_declared_size(ds: DatasetReader, win: Window | None, path: str | Path, limit: int | None = None) -> None:
    """Refuse, before reading, a read larger than ``limit`` (default :func:`max_read_pixels`; it is in the message)."""
    h, w = (int(win.height), int(win.width)) if win is not None else (ds.height, ds.width)
    limit = max_read_pixels() if limit is None else min(limit, max_read_pixels())
    if h * w > limit:
        raise RasterError(
            f"{Path(str(path)).name} declares {h} x {w} pixels, above the limit of {limit / 2**20:.4g} megapixels "
            "read at once — read a window of it, refine it window by window with `python -m refiner scene`, "
            f"or raise {MAX_READ_PIXELS_ENV}"
        )


def _open(path: str | Path, name: str | None = None) -> DatasetReader:
    """Open a raster's header (no pixel is read); ``name`` is what messages call it (an upload's name)."""
    path = str(path)
    label = name or path
    if "://" not in path and not Path(path).exists():
        raise FileNotFoundError(f"no such file: {label}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path)
    except RasterioIOError as exc:
        why = str(exc).splitlines()[0][:200].replace(path, label) if str(exc) else type(exc).__name__
        raise RasterError(f"cannot read {label} as a raster (GeoTIFF, PNG or JPEG): {why}") from exc


@contextlib.contextmanager
def open_raster(
    path: str | Path,
    *,
    name: str | None = None,
    window: Sequence[int] | None = None,
    max_pixels: int | None = None,
) -> Iterator[DatasetReader]:
    """The one checked opener for rasters a person hands in (CLI inputs, browser uploads).

    Opens the header and refuses, before any pixel is read, a read (the ``window``, else the whole
    raster) larger than ``max_pixels`` (capped by :func:`max_read_pixels`): a 300 KB sparse TIFF
    declaring 100000 x 100000 px otherwise asked numpy for 74.5 GiB. ``name`` is what messages
    call the file (an upload's own name, never the server's temporary path).
    ``tests/test_reliability.py`` checks that every upload widget and CLI raster input comes here.
    """
    with _open(path, name) as ds:
        check_declared_size(ds, _to_window(window), name or path, max_pixels)
        yield ds


def _read(ds: DatasetReader, path: str | Path, *args: Any, **kwargs: Any) -> np.ndarray:
    """``ds.read`` with a damaged or truncated file named in one line.

    Rasterio's own message is "Read failed. See previous exception for details.".
    """
    try:
        return ds.read(*args, **kwargs)
    except (RasterioIOError, RasterioError) as exc:
        cause = str(exc.__cause__ or exc).splitlines()[0][:200]
        raise RasterError(
            f"{Path(str(path)).name} is damaged or truncated: its pixels cannot be read ({cause}) — "
            "export or download it again"
        ) from exc


def _georef(ds: DatasetReader) -> Georef | None:
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
_FLOAT_PEAKS: dict[tuple[str, int, tuple[int, ...]], float] = {}  # (path, mtime, bands) -> peak


def _float_divisor(ds: DatasetReader, bands: Sequence[int], path: str | Path) -> float:
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


def default_bands(count: int, ds: DatasetReader | None = None) -> tuple[int, ...]:
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

    ``uint8`` is divided by 255, ``uint16`` by ``2**NBITS - 1`` (or 65535), floats are taken as
    [0, 1]; the file's nodata becomes ``valid == False``.

    Args:
        path: a file or an ``http(s)://`` URL of a (cloud-optimised) GeoTIFF.
        bands: 1-based band indices to use as RGB (default: declared R, G, B or bands 1-3).
        window: ``(row, col, height, width)`` to read only part of the raster.
        scale: divide the pixel values by this instead of the rule above.

    Returns:
        The image (3, H, W) in [0, 1] with its validity mask and georeferencing.

    Raises:
        FileNotFoundError: there is no such file.
        RasterError: the file is no raster Refiner can read, has an unsupported data type, the
            bands do not exist or are not three, or the raster is larger than the read limit
            (a ``ValueError``; the message says what to do).

    Example:
        ```python
        tile = refiner.read_image("scene.tif", bands=(3, 2, 1), window=(0, 0, 1024, 1024))
        ```
    """
    with open_raster(path, window=window) as ds:
        count = ds.count
        bands = tuple(bands) if bands else default_bands(count, ds)
        if len(bands) != 3:
            raise RasterError(f"--bands {list(bands)} is not three bands — give three for RGB, e.g. --bands 1,2,3")
        bad = [b for b in bands if not 1 <= b <= count]
        if bad:
            raise RasterError(f"band(s) {bad} do not exist: {path} has {count} band(s) — pick bands 1 to {count}")
        win = _to_window(window)
        data = _read(ds, path, list(bands), window=win, boundless=False)
        valid = _valid(ds, bands, win)
        if data.dtype.kind == "f":  # NaN / inf pixels are nodata, whether or not the file declares any
            valid &= np.isfinite(data).all(axis=0)
        nbits = ds.tags(bands[0], ns="IMAGE_STRUCTURE").get("NBITS")
        divisor = scale_factor(ds.dtypes[bands[0] - 1], int(nbits) if nbits else None, scale)
        if scale is None and ds.dtypes[bands[0] - 1].startswith("float"):
            divisor = _float_divisor(ds, bands, path)
        georef = _georef(ds)
        if georef is not None and win is not None:
            georef = Georef(georef.crs, ds.window_transform(win))
        dtype = ds.dtypes[0]
    with np.errstate(invalid="ignore"):
        image = np.clip(data.astype(np.float32) / divisor, 0.0, 1.0)
    image[:, ~valid] = 0.0
    return Tile(image=image, valid=valid, georef=georef, source=str(path), dtype=dtype, band_count=count)


def _valid(ds: DatasetReader, bands: Sequence[int], win: Window | None) -> np.ndarray:
    """Where every one of ``bands`` has data (GDAL masks: nodata, alpha or mask band)."""
    return (ds.read_masks(list(bands), window=win) > 0).all(axis=0)


def read_valid(
    path: str | Path, *, bands: Sequence[int] | None = None, window: Sequence[int] | None = None
) -> np.ndarray:
    """Just :func:`read_image`'s validity mask (H, W), without decoding the pixels into a tile."""
    with _open(path) as ds:
        return _valid(ds, tuple(bands) if bands else default_bands(ds.count, ds), _to_window(window))


def raster_info(path: str | Path) -> dict[str, Any]:
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
    line_width: float = LINE_WIDTH,
    strict: bool = True,
) -> np.ndarray:
    """Read a label mask (raster or GeoJSON) as class indices (H, W) uint8, 255 = unlabelled.

    Raster masks map pixel values to classes with ``classes.values``; vector labels are
    rasterised onto ``like`` (required then). With ``like``, sizes must match and the tile's
    nodata pixels become unlabelled.

    Args:
        path: a mask raster (GeoTIFF, PNG) or GeoJSON (``.geojson``, ``.json``).
        classes: the classes, whose ``values`` say how the mask encodes them.
        like: the tile the labels are for (required for GeoJSON).
        window: ``(row, col, height, width)`` to read only part of a raster mask.
        line_width: the width in metres that vector lines (roads) are buffered to.
        strict: refuse pixel values that are neither a class value nor 255 (else: unlabelled).

    Returns:
        Class indices (H, W) uint8, 255 where unlabelled.

    Raises:
        FileNotFoundError: there is no such file.
        RasterError: GeoJSON without ``like``, a mask of another size than ``like``, or (with
            ``strict``) pixel values the classes do not name (a ``ValueError``).

    Example:
        ```python
        classes = refiner.ClassSpec(("background", "building", "road"))
        labels = refiner.read_labels("osm_roads.geojson", classes, like=tile, line_width=7.0)
        ```
    """
    if str(path).lower().endswith(VECTOR_SUFFIXES):
        if like is None:
            raise RasterError("vector labels need the image they label (its grid and georeferencing)")
        labels = rasterize_vectors(path, like, classes, line_width=line_width)
    else:
        with open_raster(path, window=window) as ds:
            win = _to_window(window)
            if like is not None and win is None and (ds.height, ds.width) != like.shape:
                raise RasterError(  # from the header: a mask of another size is never read
                    f"labels {Path(str(path)).name} are {ds.height}x{ds.width} pixels but the image is "
                    f"{like.shape[0]}x{like.shape[1]}: they must cover the same grid"
                )
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


def read_mask_band(
    path: str | Path, *, name: str | None = None, shape: tuple[int, int] | None = None
) -> tuple[np.ndarray, float | None, Georef | None]:
    """Band 1 of a mask file as stored (its raw values), its declared nodata and georeferencing.

    Through :func:`open_raster`; with ``shape`` (a mask of the tile's grid), a file declaring
    another size is refused from its header, before any pixel is read.
    """
    label = name or Path(str(path)).name
    with open_raster(path, name=label) as ds:
        if shape is not None and (ds.height, ds.width) != tuple(shape):
            raise RasterError(
                f"{label} is {ds.height}x{ds.width} pixels but the tile is {shape[0]}x{shape[1]}: they must "
                "cover the same grid (export a mask of this tile, or crop it to the tile)"
            )
        band = _read(ds, label, 1)
        return band, ds.nodata, _georef(ds)


#: What to do about probabilities that do not fit their image.
PREDICT_ON_IT = "predict the probabilities on this image (`python -m refiner predict`)"


def check_same_place(
    georef: Georef | None,
    image: Georef | None,
    what: str,
    image_name: str = "the image",
    todo: str = "give the file made on this image's grid",
) -> None:
    """Refuse ``what`` (probabilities, labels) lying in another CRS or place than its image.

    Checked before any work, and only when both are georeferenced: a plain PNG mask is taken to
    be on the image's grid, as its size is checked. The grids must share the CRS, the pixel size
    (to 0.1 %) and the origin (to 1 % of a pixel).
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


def read_probs(
    path: str | Path, *, window: Sequence[int] | None = None, check_sums: bool = False
) -> tuple[np.ndarray, ClassSpec | None, Georef | None]:
    """Read a probability GeoTIFF (K bands) -> (probs float32 (K, H, W), classes or None, georef).

    Accepts float probabilities or uint8 scaled to 0-255; checks they look like probabilities.

    Args:
        path: a GeoTIFF with one band per class (as :func:`write_probs` or any model writes).
        window: ``(row, col, height, width)`` to read only part of it.
        check_sums: also check that each pixel's bands sum to 1 (for files a user gives; internal
            stacks such as per-iteration outputs hold several maps and skip it).

    Returns:
        The probabilities float32 (K, H, W), the classes named in the file's tags (or None), and
        its georeferencing (or None).

    Raises:
        FileNotFoundError: there is no such file.
        RasterError: fewer than two bands, values outside [0, 1], only zeros, or (with
            ``check_sums``) bands that do not sum to 1 (a ``ValueError``).

    Example:
        ```python
        probs, classes, georef = refiner.read_probs("coarse_probs.tif", check_sums=True)
        ```
    """
    name = Path(str(path)).name  # never a server path in a message (the app's workspace files)
    with open_raster(path, window=window) as ds:
        if ds.count < 2:
            raise RasterError(f"{name} has {ds.count} band; a probability map has one band per class (>= 2)")
        win = _to_window(window)
        data = _read(ds, path, window=win).astype(np.float32)
        tags = ds.tags()
        georef = _georef(ds)
        if georef is not None and win is not None:
            georef = Georef(georef.crs, ds.window_transform(win))
        dtype = ds.dtypes[0]
    if dtype == "uint8":
        data /= 255.0
    check_probs_finite(data, name)
    check_prob_range(data, name)
    if check_sums:
        check_prob_sums(data, name, whole=window is None)
    return data, tagged_classes(tags, path), georef


def check_probs_file(path: str | Path, sample: int = 1024) -> None:
    """The checks of ``read_probs(check_sums=True)`` on a scene too large to read whole.

    On a decimated read of at most ``sample`` x ``sample`` pixels (GDAL's overviews when the file
    has them): no NaN or infinity, values in [0, 1], bands summing to 1, not all zeros. ``refine``
    reads its probabilities window by window and skipped these checks: sums of 2.7 and all-zero
    maps refined without a word.
    """
    name = Path(str(path)).name
    with _open(path) as ds:
        if ds.count < 2:
            raise RasterError(f"{name} has {ds.count} band; a probability map has one band per class (>= 2)")
        shape = (ds.count, min(ds.height, sample), min(ds.width, sample))
        data = _read(ds, path, out_shape=shape).astype(np.float32)
        if ds.dtypes[0] == "uint8":
            data /= 255.0
    check_probs_finite(data, name)
    check_prob_range(data, name)
    check_prob_sums(data, name, whole=True)


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


def check_probs_finite(data: np.ndarray, name: str | Path) -> None:
    """Refuse probabilities holding NaN or infinity (a diverged model's output), naming the file and the count."""
    bad = data.size - int(np.count_nonzero(np.isfinite(data)))
    if bad:
        raise RasterError(
            f"{Path(str(name)).name} holds {bad:,} NaN or infinite values where probabilities must be numbers in "
            "[0, 1] — compute the probabilities again (e.g. with `python -m refiner predict`) from finite imagery"
        )


def check_prob_range(data: np.ndarray, name: str) -> None:
    """Refuse values outside [0, 1]: scores or logits given where probabilities go."""
    if data.min() < -1e-3 or data.max() > 1 + 1e-3:
        raise RasterError(
            f"{name} does not hold probabilities (values must lie in [0, 1]); "
            "write class probabilities, not scores, e.g. with `python -m refiner predict`"
        )


def check_prob_sums(data: np.ndarray, path: str | Path, whole: bool = True) -> None:
    """Refuse (K, H, W) "probabilities" whose bands do not sum to 1 (e.g. 2.7) or that are all zero."""
    path = Path(str(path)).name
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


def streaming_env(cache_mb: int = 256) -> rasterio.Env:
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
                f"{limit / 2**30:.4g} gigapixels — cut it into smaller scenes, or raise REFINER_MAX_SCENE_PIXELS"
            )
        georef = _georef(ds)
        res = georef.resolution if georef is not None and georef.crs.is_projected else None
        return ds.height, ds.width, georef, res
