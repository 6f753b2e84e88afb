"""Checking what a browser uploads or names before it becomes a tile.

Image files are sniffed by content, large ones must be read by window, pixel sizes are checked;
every refusal is a :class:`ValueError` whose message says what is wrong and what to do.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from rasterio.errors import RasterioError

from refiner.data.read import raster_info, read_image
from refiner.data.tile import RasterError, Tile

#: Largest tile the app loads whole (pixels): beyond this, read a window of the raster.
MAX_PIXELS = 4096 * 4096
IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+", b"\x89PNG", b"\xff\xd8\xff")


# --------------------------------------------------------------------------- upload checks


def sniff_image(data: bytes, name: str) -> None:
    """Raise ``ValueError`` unless ``data`` starts like a TIFF, PNG or JPEG file."""
    if not data:
        raise ValueError(f"{name} is empty")
    if not data.startswith(_MAGIC):
        raise ValueError(f"{name} is not an image Refiner can read: upload a GeoTIFF, PNG or JPEG file")


def _staged(data: bytes, name: str) -> Path:
    """A temporary copy of uploaded bytes with the upload's suffix (GDAL picks drivers by it)."""
    suffix = Path(name).suffix.lower() or ".tif"
    fd, tmp = tempfile.mkstemp(suffix=suffix)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return Path(tmp)


def load_tile(source: str | Path, *, window: tuple[int, int, int, int] | None = None, name: str = "") -> Tile:
    """Read imagery for a workspace with app-friendly errors.

    One- or two-band images are shown as grey (band 1 three times); tiles above
    :data:`MAX_PIXELS` must be read by window.
    """
    label = name or str(source)
    try:
        info = raster_info(source)
    except (RasterError, RasterioError, FileNotFoundError) as exc:
        raise ValueError(f"{label} could not be opened as an image: {_short(exc)}") from exc
    h, w = (window[2], window[3]) if window else (info["height"], info["width"])
    if window:
        r, c = window[0], window[1]
        if r < 0 or c < 0 or h <= 0 or w <= 0 or r + h > info["height"] or c + w > info["width"]:
            raise ValueError(
                f"the window (row {r}, col {c}, {h}x{w}) does not fit in {label}, "
                f"which is {info['height']}x{info['width']} pixels"
            )
    if h * w > MAX_PIXELS:
        raise ValueError(
            f"{label} is {info['height']}x{info['width']} pixels; the app works on tiles up to "
            f"{MAX_PIXELS // 1_000_000} megapixels: read a window of it — give its row, column, height and "
            "width in the window fields (under the upload, or with the URL), or cut the image smaller first"
        )
    bands = (1, 1, 1) if info["bands"] < 3 else None
    try:
        return read_image(source, bands=bands, window=window)
    except RasterError as exc:  # the upload's name, never the server's temporary file
        raise ValueError(str(exc).replace(str(source), label).replace(Path(str(source)).name, label)) from exc
    except (RasterioError, OSError) as exc:
        raise ValueError(f"{label} is damaged or truncated and its pixels cannot be read: {_short(exc)}") from exc


def _short(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__


def check_pixel_size(metres: float) -> float:
    """A stated ground resolution in metres per pixel, checked (0.05 m to 100 m)."""
    metres = float(metres)
    if not 0.05 <= metres <= 100:
        raise ValueError(f"a ground resolution of {metres:g} m/px is out of range: give 0.05 to 100 metres per pixel")
    return metres


def tile_from_upload(data: bytes, name: str, *, window: tuple[int, int, int, int] | None = None) -> Tile:
    """Check and read an uploaded image (GeoTIFF, PNG, JPEG), or a ``window`` (row, col, height,
    width) of it (one above :data:`MAX_PIXELS` needs one)."""
    if not name.lower().endswith(IMAGE_SUFFIXES):
        raise ValueError(f"{name}: upload a GeoTIFF (.tif), PNG or JPEG image")
    sniff_image(data, name)
    tmp = _staged(data, name)
    try:
        tile = load_tile(tmp, window=window, name=name)
    finally:
        tmp.unlink(missing_ok=True)
    tile.source = name
    return tile


def upload_shape(data: bytes, name: str) -> tuple[int, int]:
    """(height, width) of an uploaded image, from its header (to offer a window of a large one)."""
    if not name.lower().endswith(IMAGE_SUFFIXES):
        raise ValueError(f"{name}: upload a GeoTIFF (.tif), PNG or JPEG image")
    sniff_image(data, name)
    tmp = _staged(data, name)
    try:
        info = raster_info(tmp)
    except (RasterError, RasterioError) as exc:
        raise ValueError(f"{name} could not be opened as an image: {_short(exc).replace(str(tmp), name)}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return int(info["height"]), int(info["width"])
